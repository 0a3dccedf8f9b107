package volumes

import (
	"encoding/base64"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"

	"github.com/kvirt/kvirt/devices/virtio/blk"
)

func readISO(t *testing.T, p string) (label string, files map[string]string) {
	t.Helper()
	d, err := diskfs.Open(p, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(0)
	if err != nil {
		t.Fatalf("read filesystem of %s: %v", p, err)
	}
	entries, err := fs.ReadDir(".")
	if err != nil {
		t.Fatalf("read root directory of %s: %v", p, err)
	}
	files = map[string]string{}
	for _, e := range entries {
		f, err := fs.OpenFile(e.Name(), os.O_RDONLY)
		if err != nil {
			t.Fatalf("open %s in %s: %v", e.Name(), p, err)
		}
		b, err := io.ReadAll(f)
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	return strings.TrimSpace(fs.Label()), files
}

func TestCloudInitNoCloud(t *testing.T) {
	dir := t.TempDir()
	user := "#cloud-config\npassword: fedora\nchpasswd: { expire: False }\n"
	net := "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n"
	b, err := PrepareCloudInit("spec.volumes[1].cloudInitNoCloud", dir, "cloudinit", NoCloud{
		UserDataBase64: base64.StdEncoding.EncodeToString([]byte(user)),
		NetworkData:    net,
		InstanceID:     "6f1c2a1e-uid", Hostname: "testvmi",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.WriteAt([]byte{0}, 0); !errors.Is(err, blk.ErrReadOnly) {
		t.Fatalf("cidata disk writable: %v", err)
	}
	p := filepath.Join(dir, "cloudinit.iso")
	label, files := readISO(t, p)
	if label != CloudInitLabel {
		t.Errorf("label %q, want %q", label, CloudInitLabel)
	}
	want := map[string]string{
		"user-data":      user,
		"meta-data":      "instance-id: 6f1c2a1e-uid\nlocal-hostname: testvmi\n",
		"network-config": net,
	}
	for k, v := range want {
		if files[k] != v {
			t.Errorf("%s = %q, want %q (files: %v)", k, files[k], v, files)
		}
	}
	if len(files) != len(want) {
		t.Errorf("files %v, want exactly %v", files, want)
	}
	mountWithKernel(t, p, want)
}

// mountWithKernel loop-mounts the image with the host's Linux iso9660 driver (the guest kernel's driver) and
// checks the Rock Ridge names and contents. It skips where loop mounts are not permitted.
func mountWithKernel(t *testing.T, iso string, want map[string]string) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "iso9660", "-o", "loop,ro", iso, mnt).CombinedOutput(); err != nil {
		t.Logf("loop mount unavailable (%v: %s): kernel read-back skipped", err, strings.TrimSpace(string(out)))
		return
	}
	defer exec.Command("umount", mnt).Run()
	for k, v := range want {
		b, err := os.ReadFile(filepath.Join(mnt, k))
		if err != nil || string(b) != v {
			t.Errorf("kernel sees %s = %q, %v; want %q", k, b, err, v)
		}
	}
}

func TestCloudInitErrors(t *testing.T) {
	const f = "spec.volumes[1].cloudInitNoCloud"
	for _, tc := range []struct {
		name string
		nc   NoCloud
		want string
	}{
		{"both", NoCloud{UserData: "a", UserDataBase64: "YQ==", InstanceID: "u"}, f + ": both userData and userDataBase64"},
		{"bad base64", NoCloud{UserDataBase64: "!!", InstanceID: "u"}, f + ".userDataBase64: not valid base64"},
		{"bad network base64", NoCloud{NetworkDataBase64: "%", InstanceID: "u"}, f + ".networkDataBase64: not valid base64"},
		{"no uid", NoCloud{UserData: "x"}, "metadata.uid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := PrepareCloudInit(f, t.TempDir(), "ci", tc.nc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
