package controller

import (
	"strings"
	"testing"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/containerdisk"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func containerDiskVMI(vols ...v1.Volume) *v1.VirtualMachineInstance {
	return &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "v", Namespace: "ns", UID: "vmi-uid"},
		Spec: v1.VirtualMachineInstanceSpec{
			Domain: v1.DomainSpec{Resources: v1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
			}},
			Volumes: vols,
		},
	}
}

func mountOf(c corev1.Container, volume string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == volume {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

// Each containerDisk is pulled by the kubelet as an init container's image; the helper comes from the
// launcher image through an emptyDir; the disks reach the compute container read-only.
func TestLauncherPodContainerDisks(t *testing.T) {
	vmi := containerDiskVMI(
		v1.Volume{Name: "root", ContainerDisk: &v1.ContainerDiskSource{Image: "kvirt.io/demo-disk:dev"}},
		v1.Volume{Name: "ci", CloudInitNoCloud: &v1.CloudInitNoCloudSource{UserData: "x"}},
		v1.Volume{Name: "data", ContainerDisk: &v1.ContainerDiskSource{
			Image: "registry.example/disks/fedora", Path: "/custom/f.qcow2", ImagePullSecret: "regcred"}},
		v1.Volume{Name: "pinned", ContainerDisk: &v1.ContainerDiskSource{
			Image: "registry.example:5000/d@sha256:0123", ImagePullPolicy: corev1.PullNever, ImagePullSecret: "regcred"}},
		v1.Volume{Name: "local", ContainerDisk: &v1.ContainerDiskSource{Image: "docker-archive:/usr/share/kvirt/e2e/demo-disk.tar"}},
	)
	pod, err := renderLauncherPod(vmi, PodConfig{Image: "kvirt.io/virt-launcher:1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ic := pod.Spec.InitContainers
	if len(ic) != 4 {
		t.Fatalf("init containers %d, want helper + 3 (the docker-archive: volume stays with the launcher): %+v", len(ic), ic)
	}
	inst := ic[0]
	if inst.Name != ContainerDiskBinaryContainer || inst.Image != "kvirt.io/virt-launcher:1" || len(inst.Command) != 0 ||
		strings.Join(inst.Args, " ") != "container-disk install --to "+containerdisk.BinDir {
		t.Errorf("helper installer %+v", inst)
	}
	if m := mountOf(inst, containerDiskBinVolume); m == nil || m.MountPath != containerdisk.BinDir || m.ReadOnly {
		t.Errorf("installer mount %+v", m)
	}
	want := []struct {
		name, image string
		policy      corev1.PullPolicy
		args        string
	}{
		{"volumeroot", "kvirt.io/demo-disk:dev", corev1.PullIfNotPresent, "container-disk copy --to " + containerdisk.DisksDir + "/root"},
		{"volumedata", "registry.example/disks/fedora", corev1.PullAlways, "container-disk copy --to " + containerdisk.DisksDir + "/data --path /custom/f.qcow2"},
		{"volumepinned", "registry.example:5000/d@sha256:0123", corev1.PullNever, "container-disk copy --to " + containerdisk.DisksDir + "/pinned"},
	}
	for i, w := range want {
		c := ic[i+1]
		if c.Name != w.name || c.Image != w.image || c.ImagePullPolicy != w.policy || strings.Join(c.Args, " ") != w.args {
			t.Errorf("init container %d: %s %s %s %q; want %+v", i+1, c.Name, c.Image, c.ImagePullPolicy, strings.Join(c.Args, " "), w)
		}
		if len(c.Command) != 1 || c.Command[0] != containerdisk.BinDir+"/"+containerdisk.Helper {
			t.Errorf("%s runs %v, not the helper from the emptyDir", c.Name, c.Command)
		}
		if m := mountOf(c, containerDiskBinVolume); m == nil || !m.ReadOnly {
			t.Errorf("%s helper mount %+v", c.Name, m)
		}
		if m := mountOf(c, containerDiskDisksVolume); m == nil || m.ReadOnly || m.MountPath != containerdisk.DisksDir {
			t.Errorf("%s disks mount %+v", c.Name, m)
		}
		if c.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
			t.Errorf("%s termination message policy %q", c.Name, c.TerminationMessagePolicy)
		}
	}
	if len(pod.Spec.ImagePullSecrets) != 1 || pod.Spec.ImagePullSecrets[0].Name != "regcred" {
		t.Errorf("image pull secrets %+v, want regcred once", pod.Spec.ImagePullSecrets)
	}
	compute := pod.Spec.Containers[0]
	if m := mountOf(compute, containerDiskDisksVolume); m == nil || !m.ReadOnly || m.MountPath != containerdisk.DisksDir {
		t.Errorf("compute mounts the disks %+v, want read-only at %s", m, containerdisk.DisksDir)
	}
	if mountOf(compute, containerDiskBinVolume) != nil {
		t.Error("compute mounts the helper directory")
	}
	empty := 0
	for _, v := range pod.Spec.Volumes {
		if (v.Name == containerDiskBinVolume || v.Name == containerDiskDisksVolume) && v.EmptyDir != nil {
			empty++
		}
	}
	if empty != 2 {
		t.Errorf("pod volumes %+v: want the two emptyDirs", pod.Spec.Volumes)
	}
	for _, c := range ic {
		if c.Resources.Requests.Memory().IsZero() || len(c.Resources.Limits) != 0 {
			t.Errorf("%s resources %+v: want small requests and no limits in a Burstable pod", c.Name, c.Resources)
		}
	}
}

// A pod without containerDisks (or with only local references) has no init containers or extra volumes.
func TestLauncherPodWithoutContainerDisks(t *testing.T) {
	vmi := containerDiskVMI(
		v1.Volume{Name: "local", ContainerDisk: &v1.ContainerDiskSource{Image: "oci:/layouts/disk"}},
		v1.Volume{Name: "scratch", EmptyDisk: &v1.EmptyDiskSource{Capacity: resource.MustParse("1Mi")}},
	)
	pod, err := renderLauncherPod(vmi, PodConfig{Image: "img"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(pod.Spec.InitContainers) != 0 || len(pod.Spec.Volumes) != 2 || mountOf(pod.Spec.Containers[0], containerDiskDisksVolume) != nil {
		t.Fatalf("init %+v volumes %+v", pod.Spec.InitContainers, pod.Spec.Volumes)
	}
}

// With CPU and memory limits on the compute container, the helpers get equal requests and limits so the pod
// stays Guaranteed; a volume name that is no valid container name falls back to its index.
func TestLauncherPodContainerDiskGuaranteedAndLongName(t *testing.T) {
	long := strings.Repeat("d", 60)
	vmi := containerDiskVMI(v1.Volume{Name: long, ContainerDisk: &v1.ContainerDiskSource{Image: "img/disk:1"}})
	vmi.Spec.Domain.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("2")
	vmi.Spec.Domain.Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("128Mi")}
	pod, err := renderLauncherPod(vmi, PodConfig{Image: "img"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ic := pod.Spec.InitContainers
	if len(ic) != 2 || ic[1].Name != "volume0" {
		t.Fatalf("init containers %+v", ic)
	}
	for _, c := range ic {
		r := c.Resources
		if r.Limits.Cpu().Cmp(resource.MustParse("2")) != 0 || r.Limits.Memory().Cmp(*r.Requests.Memory()) != 0 || r.Requests.Cpu().Cmp(*r.Limits.Cpu()) != 0 {
			t.Errorf("%s resources %+v: want requests == limits with the compute CPU", c.Name, r)
		}
	}
	if !strings.HasSuffix(strings.Join(ic[1].Args, " "), "/"+long) {
		t.Errorf("args %v", ic[1].Args)
	}
}

func TestDefaultPullPolicy(t *testing.T) {
	for img, want := range map[string]corev1.PullPolicy{
		"disk": corev1.PullAlways, "disk:latest": corev1.PullAlways, "reg:5000/disk": corev1.PullAlways,
		"reg:5000/disk:1": corev1.PullIfNotPresent, "disk@sha256:ab": corev1.PullIfNotPresent, "kvirt.io/demo-disk:dev": corev1.PullIfNotPresent,
	} {
		if got := defaultPullPolicy(img); got != want {
			t.Errorf("defaultPullPolicy(%q) = %s, want %s", img, got, want)
		}
	}
}

// firmware.kernelBoot.container is pulled by the kubelet too: a kernel-boot init container copies the
// kernel and initrd into the disks emptyDir (a docker-archive: reference stays with the launcher).
func TestLauncherPodKernelBoot(t *testing.T) {
	vmi := containerDiskVMI()
	vmi.Spec.Domain.Firmware = &v1.Firmware{KernelBoot: &v1.KernelBoot{Container: &v1.KernelBootContainer{
		Image: "kvirt.io/kernels:1", KernelPath: "/boot/vmlinuz", InitrdPath: "/boot/initrd", ImagePullSecret: "kcred"}}}
	pod, err := renderLauncherPod(vmi, PodConfig{Image: "img"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ic := pod.Spec.InitContainers
	if len(ic) != 2 || ic[0].Name != ContainerDiskBinaryContainer || ic[1].Name != KernelBootContainer || ic[1].Image != "kvirt.io/kernels:1" {
		t.Fatalf("init containers %+v", ic)
	}
	want := "container-disk copy-kernel --to " + containerdisk.DisksDir + "/.kernel-boot --kernel /boot/vmlinuz --initrd /boot/initrd"
	if got := strings.Join(ic[1].Args, " "); got != want {
		t.Errorf("args %q, want %q", got, want)
	}
	if len(pod.Spec.ImagePullSecrets) != 1 || pod.Spec.ImagePullSecrets[0].Name != "kcred" {
		t.Errorf("pull secrets %+v", pod.Spec.ImagePullSecrets)
	}
	if mountOf(pod.Spec.Containers[0], containerDiskDisksVolume) == nil {
		t.Error("compute does not mount the disks emptyDir")
	}
	vmi.Spec.Domain.Firmware.KernelBoot.Container.Image = "docker-archive:/usr/share/kvirt/e2e/testguest-kernel.tar"
	pod, _ = renderLauncherPod(vmi, PodConfig{Image: "img"}, nil)
	if len(pod.Spec.InitContainers) != 0 {
		t.Errorf("a local kernel image got init containers %+v", pod.Spec.InitContainers)
	}
}
