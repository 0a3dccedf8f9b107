package volumes

import (
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
