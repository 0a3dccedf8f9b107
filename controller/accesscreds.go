package controller

import (
	"fmt"
	"path"

	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
)

// AccessCredentialsDir is where the launcher reads spec.accessCredentials' Secrets, one directory per
// Secret named <secretName>-access-cred (KubeVirt's layout); launcher/volumes.AccessCredentialsDir.
const AccessCredentialsDir = "/var/run/kvirt/access-credentials"

// addAccessCredentials mounts, read-only, the Secret of every sshPublicKey access credential propagated
// through NoCloud into the compute container: the launcher has no API credentials, so the kubelet brings the
// keys and the launcher writes them into the cidata disk's meta-data. Credentials the launcher refuses
// (guest-agent propagation, userPassword) are not mounted; the launcher's translation reports them.
func addAccessCredentials(pod *corev1.Pod, vmi *v1.VirtualMachineInstance) {
	compute := &pod.Spec.Containers[0]
	seen := map[string]bool{}
	for _, ac := range vmi.Spec.AccessCredentials {
		k := ac.SSHPublicKey
		if k == nil || k.PropagationMethod.NoCloud == nil || k.Source.Secret == nil || k.Source.Secret.SecretName == "" {
			continue
		}
		name := k.Source.Secret.SecretName
		if seen[name] {
			continue
		}
		seen[name] = true
		vol := fmt.Sprintf("access-cred-%d", len(seen)-1) // a Secret's name may be no valid volume name
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: vol, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: name}}})
		compute.VolumeMounts = append(compute.VolumeMounts, corev1.VolumeMount{
			Name: vol, MountPath: path.Join(AccessCredentialsDir, name+"-access-cred"), ReadOnly: true})
	}
}
