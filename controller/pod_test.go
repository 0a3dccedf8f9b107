package controller

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/spec"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
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

// The launcher container's memory, as KubeVirt's resource renderer computes it: the request is the VMI's
// request, else its limit, else the guest memory; request and limit get the overhead of the guest that
// runs (32Mi + guest/512, with a guest below MinGuestMemory raised to it). Expected values by hand.
func TestLauncherPodMemory(t *testing.T) {
	q := resource.MustParse
	for _, tc := range []struct {
		name             string
		guest            string // memory.guest ("": unset)
		requests, limits corev1.ResourceList
		wantReq          string
		wantLimit        string // "": no memory limit
	}{
		{name: "request and limit", requests: mem("256Mi"), limits: mem("512Mi"), wantReq: "295424Ki", wantLimit: "557568Ki"},
		{name: "limit only: request and guest from the limit", limits: mem("512Mi"), wantReq: "545Mi", wantLimit: "545Mi"},
		{name: "guest and limit: request from the limit", guest: "1Gi", limits: mem("2Gi"), wantReq: "2082Mi", wantLimit: "2082Mi"},
		{name: "guest only", guest: "128Mi", wantReq: "164096Ki"},
		{name: "zero request: the limit", requests: mem("0"), limits: mem("64Mi"), wantReq: "98432Ki", wantLimit: "98432Ki"},
		{name: "zero limit is none", requests: mem("64Mi"), limits: mem("0"), wantReq: "98432Ki"},
		{name: "4096Ki: the pod pays for the 16Mi guest", requests: mem("4096Ki"), wantReq: "49184Ki"},
		{name: "4096Ki limit only", limits: mem("4096Ki"), wantReq: "49184Ki", wantLimit: "49184Ki"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "v", Namespace: "ns", UID: "u"}}
			vmi.Spec.Domain.Resources = v1.ResourceRequirements{Requests: tc.requests, Limits: tc.limits}
			if tc.guest != "" {
				g := q(tc.guest)
				vmi.Spec.Domain.Memory = &v1.Memory{Guest: &g}
			}
			pod, err := renderLauncherPod(vmi, PodConfig{Image: "img"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			res := pod.Spec.Containers[0].Resources
			if got := res.Requests[corev1.ResourceMemory]; got.Cmp(q(tc.wantReq)) != 0 {
				t.Errorf("request %s, want %s", got.String(), tc.wantReq)
			}
			got, ok := res.Limits[corev1.ResourceMemory]
			switch {
			case tc.wantLimit == "" && ok:
				t.Errorf("limit %s, want none", got.String())
			case tc.wantLimit != "" && (!ok || got.Cmp(q(tc.wantLimit)) != 0):
				t.Errorf("limit %s (set %v), want %s", got.String(), ok, tc.wantLimit)
			}
		})
	}
}

func mem(s string) corev1.ResourceList {
	return corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(s)}
}

// MinGuestMemory is the launcher's minimum, so the pod is sized for the guest that runs.
func TestMinGuestMemoryIsTheLaunchers(t *testing.T) {
	if MinGuestMemory != spec.MinMemoryBytes {
		t.Fatalf("MinGuestMemory %d, launcher/spec.MinMemoryBytes %d", MinGuestMemory, spec.MinMemoryBytes)
	}
}

// A VM or VMI name of any valid length gives a valid launcher pod and token secret: names shortened
// where they would be too long, label values hashed beyond 63 characters (KubeVirt's VMI ID rule).
func TestLauncherPodLongNames(t *testing.T) {
	for _, n := range []int{5, 63, 64, 70, 253} {
		name := strings.Repeat("n", n)
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: "vm-uid"}}
			vmi := &v1.VirtualMachineInstance{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: "vmi-uid",
					OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm, v1.VirtualMachineGroupVersionKind)}},
			}
			vmi.Spec.Domain.Resources.Requests = mem("64Mi")
			pod, err := renderLauncherPod(vmi, PodConfig{Image: "img"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			// The apiserver appends 5 characters to generateName; the result must be a pod name.
			if errs := validation.IsDNS1123Subdomain(pod.GenerateName + "abcde"); len(errs) > 0 || len(pod.GenerateName) > 58 {
				t.Errorf("generateName %q: %v", pod.GenerateName, errs)
			}
			if want := "virt-launcher-" + name + "-"; n <= 43 && pod.GenerateName != want {
				t.Errorf("generateName %q, want %q", pod.GenerateName, want)
			}
			for k, v := range pod.Labels {
				if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
					t.Errorf("label %s=%q: %v", k, v, errs)
				}
			}
			if pod.Labels[v1.VirtualMachineInstanceIDLabel] != v1.NameLabelValue(name) || pod.Labels[v1.VirtualMachineNameLabel] != v1.NameLabelValue(name) {
				t.Errorf("labels %v", pod.Labels)
			}
			if pod.Annotations[v1.DomainAnnotation] != name {
				t.Errorf("domain annotation %q", pod.Annotations[v1.DomainAnnotation])
			}
			secret := renderTokenSecret(vmi, "t")
			if errs := validation.IsDNS1123Subdomain(secret.Name); len(errs) > 0 {
				t.Errorf("secret name %q: %v", secret.Name, errs)
			}
			if n <= 238 && secret.Name != name+"-launcher-token" {
				t.Errorf("secret name %q", secret.Name)
			}
			var mounted string
			for _, v := range pod.Spec.Volumes {
				if v.Secret != nil && v.Name == "token" {
					mounted = v.Secret.SecretName
				}
			}
			if mounted != secret.Name {
				t.Errorf("pod mounts secret %q, the controller creates %q", mounted, secret.Name)
			}
			// The VM controller's VMI carries the VM name label the pod copies.
			if got := newVMIFromTemplate(vm, false).Labels[v1.VirtualMachineNameLabel]; got != v1.NameLabelValue(name) {
				t.Errorf("VMI label %q", got)
			}
		})
	}
}
