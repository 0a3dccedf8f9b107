package volumes

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

func TestEmptyDisk(t *testing.T) {
	dir := t.TempDir()
	b, err := PrepareEmptyDisk("spec.volumes[2].emptyDisk", dir, "scratch", resource.MustParse("2Gi"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Size() != 2<<30 {
		t.Fatalf("size %d", b.Size())
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "scratch.img"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > 1<<20 {
		t.Fatalf("empty disk uses %d bytes on disk: not sparse", st.Blocks*512)
	}
	if _, err := b.WriteAt([]byte("data"), 1<<30); err != nil {
		t.Fatal(err)
	}
	if err := b.PunchHole(1<<30, 4096); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4)
	if _, err := b.ReadAt(p, 1<<30); err != nil || string(p) != "\x00\x00\x00\x00" {
		t.Fatalf("after discard: %q %v", p, err)
	}
	for _, tc := range []struct{ cap, want string }{
		{"1000", "not a multiple of 512"},
		{"0", "not a positive"},
		{"1Ei", "larger than the filesystem"},
	} {
		_, err := PrepareEmptyDisk("spec.volumes[2].emptyDisk", dir, "bad", resource.MustParse(tc.cap))
		if err == nil || !strings.Contains(err.Error(), "spec.volumes[2].emptyDisk.capacity: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("capacity %s: error %v, want %q", tc.cap, err, tc.want)
		}
	}
}

func TestPVCAndHostDisk(t *testing.T) {
	root := t.TempDir()
	p := PVCDiskPath(root, "data")
	if !strings.HasSuffix(p, "/var/run/kubevirt-private/vmi-disks/data/disk.img") {
		t.Fatalf("PVC path %s", p)
	}
	if _, err := PreparePVC("spec.volumes[3].persistentVolumeClaim", root, "data", false); err == nil || !strings.Contains(err.Error(), "spec.volumes[3].persistentVolumeClaim: neither") {
		t.Fatalf("missing PVC: %v", err)
	}
	os.MkdirAll(filepath.Dir(p), 0o755)
	os.WriteFile(p, make([]byte, 8192), 0o644)
	b, err := PreparePVC("f", root, "data", true)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != 8192 || !b.ReadOnly() {
		t.Fatalf("size %d ro %v", b.Size(), b.ReadOnly())
	}
	b.Close()

	const f = "spec.volumes[4].hostDisk"
	c := resource.MustParse("10Mi")
	if _, err := PrepareHostDisk(f, root, "hd", "/mnt/disks/hd.img", HostDiskExists, nil, false); err == nil || !strings.Contains(err.Error(), f+".path") {
		t.Fatalf("missing Disk: %v", err)
	}
	if _, err := PrepareHostDisk(f, root, "hd", "/mnt/disks/hd.img", HostDiskOrCreate, nil, false); err == nil || !strings.Contains(err.Error(), f+".capacity: required") {
		t.Fatalf("DiskOrCreate without capacity: %v", err)
	}
	hb, err := PrepareHostDisk(f, root, "hd", "/mnt/disks/hd.img", HostDiskOrCreate, &c, false)
	if err != nil {
		t.Fatal(err)
	}
	if hb.Size() != 10<<20 {
		t.Fatalf("created %d bytes", hb.Size())
	}
	hb.WriteAt([]byte("keep"), 0)
	hb.Close()
	if _, err := os.Stat(filepath.Join(root, VMIDisksDir, "hd", "hd.img")); err != nil {
		t.Fatalf("hostDisk not at KubeVirt's path: %v", err)
	}
	// Opening again keeps the data; a larger capacity than the existing disk is refused.
	hb, err = PrepareHostDisk(f, root, "hd", "/mnt/disks/hd.img", HostDiskExists, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	hb.ReadAt(got, 0)
	hb.Close()
	if string(got) != "keep" {
		t.Fatalf("hostDisk lost its data: %q", got)
	}
	big := resource.MustParse("20Mi")
	if _, err := PrepareHostDisk(f, root, "hd", "/mnt/disks/hd.img", HostDiskOrCreate, &big, false); err == nil || !strings.Contains(err.Error(), "larger than the existing disk") {
		t.Fatalf("capacity larger than the disk: %v", err)
	}
	if _, err := PrepareHostDisk(f, root, "hd", "/x", "Directory", nil, false); err == nil || !strings.Contains(err.Error(), f+".type") {
		t.Fatalf("bad type: %v", err)
	}
}
