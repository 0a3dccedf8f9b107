package controller

import (
	"testing"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/volumes"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPodMountsAccessCredentials: the Secrets of noCloud SSH key credentials are mounted read-only where the
// launcher reads them; other credentials are not mounted.
func TestPodMountsAccessCredentials(t *testing.T) {
	if AccessCredentialsDir != volumes.AccessCredentialsDir {
		t.Fatalf("controller mounts at %s, the launcher reads %s", AccessCredentialsDir, volumes.AccessCredentialsDir)
	}
	key := func(secret string, pm v1.SSHPublicKeyAccessCredentialPropagationMethod) v1.AccessCredential {
		return v1.AccessCredential{SSHPublicKey: &v1.SSHPublicKeyAccessCredential{
			Source:            v1.SSHPublicKeyAccessCredentialSource{Secret: &v1.AccessCredentialSecretSource{SecretName: secret}},
			PropagationMethod: pm}}
	}
	noCloud := v1.SSHPublicKeyAccessCredentialPropagationMethod{NoCloud: &v1.NoCloudSSHPublicKeyAccessCredentialPropagation{}}
	vmi := &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "deb", Namespace: "ns", UID: "u"},
		Spec: v1.VirtualMachineInstanceSpec{
			Domain: v1.DomainSpec{Resources: v1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}},
			AccessCredentials: []v1.AccessCredential{
				key("team.keys", noCloud),
				key("agent-keys", v1.SSHPublicKeyAccessCredentialPropagationMethod{QemuGuestAgent: &v1.QemuGuestAgentSSHPublicKeyAccessCredentialPropagation{Users: []string{"debian"}}}),
				key("team.keys", noCloud), // the same Secret twice: one mount
				key("mine", noCloud),
			},
		},
	}
	pod, err := renderLauncherPod(vmi, PodConfig{Image: "img:1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mounts := map[string]string{} // mount path → secret
	vols := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil {
			vols[v.Name] = v.Secret.SecretName
		}
	}
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		if s, ok := vols[m.Name]; ok && m.Name != "token" {
			if !m.ReadOnly {
				t.Errorf("%s mounted read-write", m.MountPath)
			}
			mounts[m.MountPath] = s
		}
	}
	want := map[string]string{
		volumes.AccessCredentialDir("", "team.keys"): "team.keys",
		volumes.AccessCredentialDir("", "mine"):      "mine",
	}
	if len(mounts) != len(want) {
		t.Fatalf("secret mounts %v, want %v", mounts, want)
	}
	for p, s := range want {
		if mounts[p] != s {
			t.Errorf("%s: secret %q, want %q (mounts %v)", p, mounts[p], s, mounts)
		}
	}
}
