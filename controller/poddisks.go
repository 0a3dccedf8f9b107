package controller

import (
	"fmt"
	"strings"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/containerdisk"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// containerDisk volumes in the launcher pod (KubeVirt's approach, launcher/containerdisk explains the
// layout): the kubelet pulls each containerDisk image as an init container's image, so imagePullPolicy,
// imagePullSecret and the node's image cache apply; the launcher reads no registry.
const (
	// ContainerDiskBinaryContainer installs the copy helper from the launcher image (KubeVirt's name).
	ContainerDiskBinaryContainer = "container-disk-binary"
	// KernelBootContainer copies firmware.kernelBoot.container's kernel and initrd (KubeVirt's name).
	KernelBootContainer = "kernel-boot"
	// containerDiskBinVolume and containerDiskDisksVolume are the pod's emptyDirs for the helper and the disks.
	containerDiskBinVolume   = "container-disk-binary"
	containerDiskDisksVolume = "container-disks"
)

// ContainerDiskContainerName is the init container of the containerDisk volume at index i of the VMI's
// volumes: KubeVirt's "volume<name>", or "volume<i>" when that is no valid container name.
func ContainerDiskContainerName(volume string, i int) string {
	n := "volume" + volume
	if len(validation.IsDNS1123Label(n)) > 0 {
		return fmt.Sprintf("volume%d", i)
	}
	return n
}

// addContainerDisks adds to pod (whose first container is the compute container) the init containers and
// emptyDirs that bring the VMI's containerDisk volumes and its kernelBoot container image into the pod
// through the kubelet, and mounts the disks
// read-only into the compute container at containerdisk.DisksDir. Images naming a local file
// (oci:, docker-archive:, an absolute path) are left to the launcher. launcherImage runs the helper installer.
func addContainerDisks(pod *corev1.Pod, vmi *v1.VirtualMachineInstance, launcherImage string) {
	var disks []corev1.Container
	compute := &pod.Spec.Containers[0]
	res := helperResources(compute.Resources)
	mounts := []corev1.VolumeMount{
		{Name: containerDiskBinVolume, MountPath: containerdisk.BinDir, ReadOnly: true},
		{Name: containerDiskDisksVolume, MountPath: containerdisk.DisksDir},
	}
	for i, vol := range vmi.Spec.Volumes {
		cd := vol.ContainerDisk
		if cd == nil || cd.Image == "" || containerdisk.IsLocalReference(cd.Image) {
			continue
		}
		args := []string{"container-disk", "copy", "--to", containerdisk.VolumeDir(containerdisk.DisksDir, vol.Name)}
		if cd.Path != "" {
			args = append(args, "--path", cd.Path)
		}
		policy := cd.ImagePullPolicy
		if policy == "" {
			policy = defaultPullPolicy(cd.Image)
		}
		disks = append(disks, corev1.Container{
			Name:                     ContainerDiskContainerName(vol.Name, i),
			Image:                    cd.Image,
			ImagePullPolicy:          policy,
			Command:                  []string{containerdisk.BinDir + "/" + containerdisk.Helper},
			Args:                     args,
			VolumeMounts:             mounts,
			Resources:                res,
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		})
		if cd.ImagePullSecret != "" && !hasPullSecret(pod.Spec.ImagePullSecrets, cd.ImagePullSecret) {
			pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: cd.ImagePullSecret})
		}
	}
	if kb := vmi.Spec.Domain.Firmware; kb != nil && kb.KernelBoot != nil && kb.KernelBoot.Container != nil {
		c := kb.KernelBoot.Container
		if c.Image != "" && c.KernelPath != "" && !containerdisk.IsLocalReference(c.Image) {
			args := []string{"container-disk", "copy-kernel", "--to", containerdisk.VolumeDir(containerdisk.DisksDir, containerdisk.KernelBootDir), "--kernel", c.KernelPath}
			if c.InitrdPath != "" {
				args = append(args, "--initrd", c.InitrdPath)
			}
			policy := c.ImagePullPolicy
			if policy == "" {
				policy = defaultPullPolicy(c.Image)
			}
			disks = append(disks, corev1.Container{
				Name: KernelBootContainer, Image: c.Image, ImagePullPolicy: policy,
				Command: []string{containerdisk.BinDir + "/" + containerdisk.Helper}, Args: args,
				VolumeMounts: mounts, Resources: res, TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			})
			if c.ImagePullSecret != "" && !hasPullSecret(pod.Spec.ImagePullSecrets, c.ImagePullSecret) {
				pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: c.ImagePullSecret})
			}
		}
	}
	if len(disks) == 0 {
		return
	}
	install := corev1.Container{
		Name:                     ContainerDiskBinaryContainer,
		Image:                    launcherImage,
		ImagePullPolicy:          compute.ImagePullPolicy,
		Args:                     []string{"container-disk", "install", "--to", containerdisk.BinDir},
		VolumeMounts:             []corev1.VolumeMount{{Name: containerDiskBinVolume, MountPath: containerdisk.BinDir}},
		Resources:                res,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	pod.Spec.InitContainers = append(append(pod.Spec.InitContainers, install), disks...)
	pod.Spec.Volumes = append(pod.Spec.Volumes,
		corev1.Volume{Name: containerDiskBinVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: containerDiskDisksVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	compute.VolumeMounts = append(compute.VolumeMounts,
		corev1.VolumeMount{Name: containerDiskDisksVolume, MountPath: containerdisk.DisksDir, ReadOnly: true})
}

// helperResources are the init containers' resources: small requests; when the compute container has CPU
// and memory limits (a Guaranteed pod), limits equal to the requests with the compute container's CPU, so
// the pod keeps its QoS class and the copy is not throttled below what the VM gets anyway.
func helperResources(compute corev1.ResourceRequirements) corev1.ResourceRequirements {
	cpu, hasCPU := compute.Limits[corev1.ResourceCPU]
	_, hasMem := compute.Limits[corev1.ResourceMemory]
	if hasCPU && hasMem {
		l := corev1.ResourceList{corev1.ResourceCPU: cpu.DeepCopy(), corev1.ResourceMemory: resource.MustParse("64Mi")}
		return corev1.ResourceRequirements{Requests: l, Limits: l.DeepCopy()}
	}
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi"),
	}}
}

// defaultPullPolicy is Kubernetes' default for an image: Always for ":latest" or no tag, else IfNotPresent.
func defaultPullPolicy(image string) corev1.PullPolicy {
	if strings.Contains(image, "@") {
		return corev1.PullIfNotPresent
	}
	last := image[strings.LastIndex(image, "/")+1:]
	if i := strings.LastIndex(last, ":"); i < 0 || last[i+1:] == "latest" {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

func hasPullSecret(refs []corev1.LocalObjectReference, name string) bool {
	for _, r := range refs {
		if r.Name == name {
			return true
		}
	}
	return false
}
