package volumes

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// sparseDir returns a temporary directory on a filesystem that holds huge sparse files: tmpfs
// (/dev/shm) where there is one (ext4 refuses files over 16 TiB, XFS and tmpfs take 64 PiB and more).
func sparseDir(t testing.TB) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "kvirt-volumes-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// hugeQCOW2 is a valid qcow2 image claiming size bytes, every cluster unallocated: the header cluster and
// the L1 table. With 2 MiB clusters (8 bytes of L1 per 512 GiB) that is 3 MiB for 64 PiB.
func hugeQCOW2(size int64, clusterBits uint) []byte {
	perL1 := int64(1) << (clusterBits + clusterBits - 3)
	l1 := (size + perL1 - 1) / perL1
	img := make([]byte, 1<<clusterBits+l1*8)
	be := binary.BigEndian
	be.PutUint32(img[0:], qcow2Magic)
	be.PutUint32(img[4:], 3)
	be.PutUint32(img[20:], uint32(clusterBits))
	be.PutUint64(img[24:], uint64(size))
	be.PutUint32(img[36:], uint32(l1))
	be.PutUint64(img[40:], 1<<clusterBits)
	be.PutUint32(img[96:], 4)
	be.PutUint32(img[100:], 104)
	return img
}

// Review finding F9: a 3 MiB qcow2 claiming a 64 PiB virtual size killed the launcher with a fatal
// out-of-memory, as the overlay allocated its block bitmap (2 TiB) up front. The overlay's memory now
// follows what is written, and the guest gets its 64 PiB disk.
func TestContainerDiskHugeVirtualSize(t *testing.T) {
	const size = qcow2MaxSize // 64 PiB
	dir := sparseDir(t)
	img := hugeQCOW2(size, 21)
	if len(img) != 3<<20 {
		t.Fatalf("image of %d bytes, want 3 MiB", len(img))
	}
	base := filepath.Join(dir, "disk.base")
	if err := os.WriteFile(base, img, 0o444); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	cd, err := OpenContainerDisk("spec.volumes[0].containerDisk.image", base, filepath.Join(dir, "work"))
	if errors.Is(err, syscall.EFBIG) {
		t.Skipf("the filesystem of %s cannot hold a 64 PiB sparse overlay: %v", dir, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer cd.Backend.Close()
	if cd.Format != "qcow2" || cd.Backend.Size() != size {
		t.Fatalf("format %s size %d", cd.Format, cd.Backend.Size())
	}
	data := bytes.Repeat([]byte{0x5a}, 4096)
	got := make([]byte, 4096)
	for _, off := range []int64{0, size / 3 &^ 4095, size - 4096} {
		if _, err := cd.Backend.WriteAt(data, off); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
		if _, err := cd.Backend.ReadAt(got, off); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back at %d: %v", off, err)
		}
	}
	if _, err := cd.Backend.ReadAt(got, size/2); err != nil || !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatalf("unwritten block: %v", err)
	}
	// The guest discards the whole disk (mkfs does): the set collapses instead of growing.
	if err := cd.Backend.(interface{ PunchHole(off, n int64) error }).PunchHole(0, size); err != nil {
		t.Fatal(err)
	}
	if _, err := cd.Backend.ReadAt(got, 0); err != nil || !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatalf("discarded block: %v", err)
	}
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 64<<20 {
		t.Fatalf("the heap grew by %d MiB for a 3 MiB image", grew>>20)
	}
}
