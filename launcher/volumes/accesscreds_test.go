package volumes

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"sigs.k8s.io/yaml"
)

// mountSecret lays out a Secret as the kubelet's secret volume does: the values in a ..<timestamp>
// directory, ..data pointing at it, and one symlink per key.
func mountSecret(t *testing.T, root, name string, data map[string]string) {
	t.Helper()
	dir := AccessCredentialDir(root, name)
	ts := filepath.Join(dir, "..2026_12_07_18_00_00.123")
	if err := os.MkdirAll(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(ts, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", k), filepath.Join(dir, k)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAccessCredentialKeysInMetaData(t *testing.T) {
	root := t.TempDir()
	mountSecret(t, root, "my-keys", map[string]string{
		"key1": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0 alice@laptop\n",
		"key2": "# team keys\nssh-rsa AAAAB3NzaC1yc2E bob\n\necdsa-sha2-nistp256 AAAAE2VjZHNh carol \"quoted\"\n",
	})
	keys, err := ReadSSHPublicKeys("spec.accessCredentials[0].sshPublicKey.source.secret.secretName", root, "my-keys")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0 alice@laptop", "ssh-rsa AAAAB3NzaC1yc2E bob", `ecdsa-sha2-nistp256 AAAAE2VjZHNh carol "quoted"`}
	if !reflect.DeepEqual(keys, want) {
		t.Fatalf("keys = %q", keys)
	}
	dir := t.TempDir()
	b, err := PrepareCloudInit("spec.volumes[1].cloudInitNoCloud", dir, "cloudinit", NoCloud{
		UserData: "#!/bin/sh\necho 'printed from cloud-init userdata'\n", InstanceID: "6f1c2a1e-uid", Hostname: "deb", PublicKeys: keys})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, files := readISO(t, filepath.Join(dir, "cloudinit.iso"))
	var md struct {
		InstanceID string            `json:"instance-id"`
		Hostname   string            `json:"local-hostname"`
		Keys       map[string]string `json:"public-keys"`
	}
	if err := yaml.UnmarshalStrict([]byte(files["meta-data"]), &md); err != nil {
		t.Fatalf("meta-data is not YAML: %v\n%s", err, files["meta-data"])
	}
	if md.InstanceID != "6f1c2a1e-uid" || md.Hostname != "deb" || md.Keys["0"] != want[0] || md.Keys["2"] != want[2] || len(md.Keys) != 3 {
		t.Fatalf("meta-data = %+v\n%s", md, files["meta-data"])
	}
	if !strings.HasPrefix(files["meta-data"], "instance-id: \"6f1c2a1e-uid\"\nlocal-hostname: \"deb\"\n") {
		t.Errorf("meta-data's first lines changed (kvirt-init reads them flat):\n%s", files["meta-data"])
	}

	for name, tc := range map[string]struct{ data, err string }{
		"empty":  {"# nothing\n\n", "holds no SSH public key"},
		"binary": {"ssh-rsa \xff\xfe", "key k, line 1 is not text"},
	} {
		mountSecret(t, root, name, map[string]string{"k": tc.data})
		if _, err := ReadSSHPublicKeys("f", root, name); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", name, err, tc.err)
		}
	}
	if _, err := ReadSSHPublicKeys("spec.accessCredentials[1].sshPublicKey.source.secret.secretName", root, "absent"); err == nil ||
		!strings.Contains(err.Error(), `spec.accessCredentials[1].sshPublicKey.source.secret.secretName: Secret "absent" is not mounted`) {
		t.Errorf("missing secret: %v", err)
	}
}

// FuzzMetaData: whatever the host name and keys, meta-data stays YAML that gives them back unchanged.
func FuzzMetaData(f *testing.F) {
	f.Add("deb", "ssh-ed25519 AAAA x@y", "ssh-rsa B \"q\" 'a: b' #c")
	f.Add("a: b", "\x00\xff\u2028", "- [x]")
	f.Fuzz(func(t *testing.T, host, k1, k2 string) {
		if strings.ContainsAny(host+k1+k2, "\r\n") || !utf8.ValidString(host) || !utf8.ValidString(k1) || !utf8.ValidString(k2) {
			return // keys come split at line ends and checked for UTF-8 (ReadSSHPublicKeys)
		}
		var md struct {
			Hostname string            `json:"local-hostname"`
			Keys     map[string]string `json:"public-keys"`
		}
		doc := metaData(NoCloud{InstanceID: "id", Hostname: host, PublicKeys: []string{k1, k2}})
		if err := yaml.Unmarshal(doc, &md); err != nil {
			t.Fatalf("meta-data does not parse: %v\n%s", err, doc)
		}
		if md.Hostname != host || md.Keys["0"] != k1 || md.Keys["1"] != k2 {
			t.Fatalf("round trip: %+v\n%s", md, doc)
		}
	})
}
