package controller

import (
	"encoding/json"
	"testing"

	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRenderLauncherPod(t *testing.T) {
	zero := int64(0)
	vmi := &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "v", Namespace: "ns", UID: "vmi-uid", Labels: map[string]string{"app": "x", v1.NodeNameLabel: "old"}},
		Spec: v1.VirtualMachineInstanceSpec{
			TerminationGracePeriodSeconds: &zero,
			NodeSelector:                  map[string]string{"kvm": "yes"},
			Domain: v1.DomainSpec{
				CPU: &v1.CPU{Sockets: 2, Cores: 2},
				Resources: v1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
				},
			},
		},
	}
	pod, err := renderLauncherPod(vmi, PodConfig{Image: "img:1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pod.GenerateName != "virt-launcher-v-" || pod.Namespace != "ns" || *pod.Spec.TerminationGracePeriodSeconds != 15 {
		t.Fatalf("meta %s/%s grace %d", pod.Namespace, pod.GenerateName, *pod.Spec.TerminationGracePeriodSeconds)
	}
	if _, ok := pod.Labels[v1.NodeNameLabel]; ok || pod.Labels["app"] != "x" {
		t.Fatalf("labels %v", pod.Labels)
	}
	c := pod.Spec.Containers[0]
	// guest 256Mi + 32Mi + 256Mi/512; the limit gets the same overhead.
	memReq, memLim := resource.MustParse("295424Ki"), resource.MustParse("557568Ki")
	if c.Resources.Requests.Memory().Cmp(memReq) != 0 || c.Resources.Limits.Memory().Cmp(memLim) != 0 {
		t.Fatalf("memory %v / %v", c.Resources.Requests.Memory(), c.Resources.Limits.Memory())
	}
	if c.Resources.Requests.Cpu().MilliValue() != 400 {
		t.Fatalf("cpu request %v, want 4 vCPUs / 10", c.Resources.Requests.Cpu())
	}
	if c.Image != "img:1" || c.ImagePullPolicy != corev1.PullIfNotPresent || c.Ports[0].ContainerPort != DefaultControlPort {
		t.Fatalf("container %+v", c)
	}
	if pod.Spec.NodeSelector["kvm"] != "yes" || pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Fatalf("spec %+v", pod.Spec)
	}
	var back v1.VirtualMachineInstance
	if err := json.Unmarshal([]byte(pod.Annotations[VMIAnnotation]), &back); err != nil || back.UID != "vmi-uid" || back.Spec.Domain.CPU.Cores != 2 {
		t.Fatalf("VMI annotation: %v %+v", err, back)
	}
	// The downward API volume publishes exactly that annotation at VMIFile.
	vol := pod.Spec.Volumes[0].DownwardAPI.Items[0]
	if vol.FieldRef.FieldPath != "metadata.annotations['"+VMIAnnotation+"']" || c.VolumeMounts[0].MountPath != VMIFile {
		t.Fatalf("vmi volume %+v mount %+v", vol, c.VolumeMounts[0])
	}

	if _, err := renderLauncherPod(&v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "nomem"}}, PodConfig{}, nil); err == nil {
		t.Fatal("a VMI without memory rendered a pod")
	}
}

func TestTerminationMessage(t *testing.T) {
	pod := func(msg string, code int32) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: LauncherContainerName,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Error", Message: msg, ExitCode: code}}}}}}
	}
	r, m, code, ok := terminationMessage(pod(`{"phase":"Failed","reason":"LauncherFailed","message":"pod network: boom"}`+"\n", 2))
	if !ok || r != "LauncherFailed" || m != "pod network: boom" || code != 2 {
		t.Fatalf("outcome: %q %q %d %v", r, m, code, ok)
	}
	r, m, _, _ = terminationMessage(pod("panic: runtime error\ngoroutine 1", 2))
	if r != "Error" || m != "panic: runtime error\ngoroutine 1" {
		t.Fatalf("log tail: %q %q", r, m)
	}
	if _, _, _, ok := terminationMessage(&corev1.Pod{}); ok {
		t.Fatal("a running pod has no termination message")
	}
}

// A masquerade VMI's launcher pod requests IPv4 forwarding (and route_localnet) as pod sysctls: the
// launcher cannot write /proc/sys in its container. Other pods request none, and no container gets
// SYS_ADMIN.
func TestLauncherPodSysctls(t *testing.T) {
	vmi := func(in v1.Interface) *v1.VirtualMachineInstance {
		return &v1.VirtualMachineInstance{
			ObjectMeta: metav1.ObjectMeta{Name: "v", Namespace: "ns"},
			Spec: v1.VirtualMachineInstanceSpec{Domain: v1.DomainSpec{
				Resources: v1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
				Devices:   v1.Devices{Interfaces: []v1.Interface{in}},
			}},
		}
	}
	pod, err := renderLauncherPod(vmi(v1.Interface{Name: "default", Masquerade: &v1.InterfaceMasquerade{}}), PodConfig{Image: "img"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pod.Spec.SecurityContext == nil {
		t.Fatal("masquerade: no pod securityContext")
	}
	got := map[string]string{}
	for _, s := range pod.Spec.SecurityContext.Sysctls {
		got[s.Name] = s.Value
	}
	if got["net.ipv4.ip_forward"] != "1" || got["net.ipv4.conf.default.route_localnet"] != "1" || len(got) != 2 {
		t.Errorf("masquerade sysctls = %v, want net.ipv4.ip_forward=1 and net.ipv4.conf.default.route_localnet=1", got)
	}
	for _, c := range pod.Spec.Containers {
		if c.SecurityContext != nil && c.SecurityContext.Capabilities != nil {
			for _, capability := range c.SecurityContext.Capabilities.Add {
				if capability == "SYS_ADMIN" {
					t.Errorf("container %s adds SYS_ADMIN", c.Name)
				}
			}
		}
	}
	pod, err = renderLauncherPod(vmi(v1.Interface{Name: "default", Bridge: &v1.InterfaceBridge{}}), PodConfig{Image: "img"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pod.Spec.SecurityContext != nil && len(pod.Spec.SecurityContext.Sysctls) > 0 {
		t.Errorf("bridge binding requests sysctls %v", pod.Spec.SecurityContext.Sysctls)
	}
}

// Without a CPU topology the CPU limit sets the vCPU count (rounded up), and the launcher pod asks for a
// tenth of a core per vCPU, as for an explicit topology.
func TestRenderLauncherPodCPUFromLimit(t *testing.T) {
	vmi := &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "v", Namespace: "ns", UID: "u"},
		Spec: v1.VirtualMachineInstanceSpec{Domain: v1.DomainSpec{Resources: v1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("3500m")},
		}}},
	}
	pod, err := renderLauncherPod(vmi, PodConfig{Image: "img:1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := pod.Spec.Containers[0].Resources.Requests.Cpu().MilliValue(); got != 400 {
		t.Fatalf("cpu request %dm, want 400m (limits.cpu 3500m = 4 vCPUs)", got)
	}
}
