package spec

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/volumes"
	"sigs.k8s.io/yaml"
)

const vmCirrosLike = `
metadata: {name: deb, namespace: default, uid: 9a8b7c6d-0000-4000-8000-000000000001}
spec:
  domain:
    resources: {requests: {memory: 1Gi}}
    devices:
      disks:
      - {name: containerdisk, disk: {bus: virtio}}
      - {name: cloudinitdisk, disk: {bus: virtio}}
  volumes:
  - {name: containerdisk, containerDisk: {image: kvirt.io/debian-containerdisk:12}}
  - name: cloudinitdisk
    cloudInitNoCloud:
      userDataBase64: IyEvYmluL3NoCgplY2hvICdwcmludGVkIGZyb20gY2xvdWQtaW5pdCB1c2VyZGF0YScK
`

func translateWith(t *testing.T, extra string) (*Machine, error) {
	t.Helper()
	var vmi v1.VirtualMachineInstance
	if err := yaml.UnmarshalStrict([]byte(vmCirrosLike+extra), &vmi); err != nil {
		t.Fatal(err)
	}
	m, _, err := Translate(&vmi)
	return m, err
}

func TestAccessCredentials(t *testing.T) {
	m, err := translateWith(t, `
  accessCredentials:
  - sshPublicKey:
      source: {secret: {secretName: my-keys}}
      propagationMethod: {noCloud: {}}
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.SSHKeySecrets) != 1 || m.SSHKeySecrets[0].Name != "my-keys" ||
		m.SSHKeySecrets[0].Field != "spec.accessCredentials[0].sshPublicKey.source.secret.secretName" {
		t.Fatalf("secrets = %+v", m.SSHKeySecrets)
	}

	// The cidata disk carries the Secret's keys (mounted under Root as the controller mounts it in the pod).
	root := t.TempDir()
	dir := volumes.AccessCredentialDir(root, "my-keys")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte("ssh-ed25519 AAAAC3 user@host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Disks = m.Disks[1:] // only the cidata disk (the containerDisk would be pulled)
	disks, err := PrepareDisks(context.Background(), m, Dirs{Work: t.TempDir(), Root: root})
	if err != nil {
		t.Fatal(err)
	}
	defer CloseDisks(disks)
	iso := make([]byte, disks[0].Backend.Size())
	if _, err := disks[0].Backend.ReadAt(iso, 0); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(iso), `public-keys:`+"\n"+`  "0": "ssh-ed25519 AAAAC3 user@host"`) {
		t.Error("the cidata disk does not carry the key in meta-data")
	}
	// Not mounted: the launcher fails naming the field.
	if _, err := PrepareDisks(context.Background(), m, Dirs{Work: t.TempDir(), Root: t.TempDir()}); err == nil ||
		!strings.Contains(err.Error(), `spec.accessCredentials[0].sshPublicKey.source.secret.secretName: Secret "my-keys" is not mounted`) {
		t.Errorf("unmounted secret: %v", err)
	}

	for _, tc := range []struct{ spec, err string }{
		{`
  accessCredentials:
  - sshPublicKey: {source: {secret: {secretName: k}}, propagationMethod: {qemuGuestAgent: {users: [debian]}}}`,
			"spec.accessCredentials[0].sshPublicKey.propagationMethod.qemuGuestAgent: Forbidden: not supported: kvirt has no QEMU guest agent"},
		{`
  accessCredentials:
  - sshPublicKey: {source: {secret: {secretName: k}}, propagationMethod: {configDrive: {}}}`,
			"propagationMethod.configDrive: Forbidden"},
		{`
  accessCredentials:
  - userPassword: {source: {secret: {secretName: k}}, propagationMethod: {qemuGuestAgent: {}}}`,
			"spec.accessCredentials[0].userPassword: Forbidden"},
		{`
  accessCredentials:
  - sshPublicKey: {source: {}, propagationMethod: {noCloud: {}}}`,
			"spec.accessCredentials[0].sshPublicKey.source.secret.secretName: Required value: the Secret holding the public keys"},
	} {
		if _, err := translateWith(t, tc.spec); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s\nerr = %v, want %q", tc.spec, err, tc.err)
		}
	}
	// noCloud propagation without a cloudInitNoCloud volume.
	var vmi v1.VirtualMachineInstance
	if err := yaml.UnmarshalStrict([]byte(`
metadata: {name: deb, uid: 9a8b7c6d-0000-4000-8000-000000000001}
spec:
  domain:
    resources: {requests: {memory: 1Gi}}
    devices: {disks: [{name: containerdisk, disk: {bus: virtio}}]}
  volumes: [{name: containerdisk, containerDisk: {image: x}}]
  accessCredentials:
  - sshPublicKey: {source: {secret: {secretName: k}}, propagationMethod: {noCloud: {}}}
`), &vmi); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Translate(&vmi); err == nil || !strings.Contains(err.Error(), "spec.volumes: Required value: a cloudInitNoCloud volume: its meta-data carries the keys of spec.accessCredentials[0].sshPublicKey.propagationMethod.noCloud") {
		t.Errorf("no cidata volume: %v", err)
	}
}
