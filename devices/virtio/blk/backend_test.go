package blk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// rawFile creates a file of size bytes holding pattern(size, seed) and returns its path.
func rawFile(t *testing.T, size int, seed byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, pattern(size, seed), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func openFile(t *testing.T, path string, o FileOptions) *File {
	t.Helper()
	f, err := OpenFile(path, o)
	if err != nil {
		if o.Direct {
			t.Skipf("open with O_DIRECT (unsupported on this filesystem?): %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// A read-only File refuses every kind of write with ErrReadOnly and leaves the image as it was.
func TestFileReadOnly(t *testing.T) {
	path := rawFile(t, 8192, 1)
	f := openFile(t, path, FileOptions{ReadOnly: true})
	if !f.ReadOnly() || f.Size() != 8192 {
		t.Fatalf("ReadOnly %v, Size %d", f.ReadOnly(), f.Size())
	}
	writes := map[string]func() error{
		"WriteAt":     func() error { _, err := f.WriteAt(make([]byte, 512), 0); return err },
		"WriteVAt":    func() error { _, err := f.WriteVAt([][]byte{make([]byte, 512)}, 512); return err },
		"PunchHole":   func() error { return f.PunchHole(0, 4096) },
		"WriteZeroes": func() error { return f.WriteZeroes(4096, 4096) },
	}
	for name, w := range writes {
		if err := w(); !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s: %v, want ErrReadOnly", name, err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Errorf("Sync of a read-only file: %v", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, pattern(8192, 1)) {
		t.Fatal("the read-only image changed")
	}
}

// Writes past the size the disk was opened with are refused: a regular file would silently grow.
func TestFileWritesInsideTheDisk(t *testing.T) {
	path := rawFile(t, 8192, 1)
	f := openFile(t, path, FileOptions{})
	for name, err := range map[string]error{
		"WriteAt across the end": func() error { _, err := f.WriteAt(make([]byte, 1024), 7680); return err }(),
		"WriteVAt past the end":  func() error { _, err := f.WriteVAt([][]byte{make([]byte, 512)}, 8192); return err }(),
		"PunchHole negative":     f.PunchHole(-512, 512),
		"WriteZeroes too long":   f.WriteZeroes(4096, 8192),
	} {
		if err == nil || !strings.Contains(err.Error(), "beyond the disk size 8192") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if st, err := os.Stat(path); err != nil || st.Size() != 8192 {
		t.Fatalf("image size after refused writes: %v %v", st.Size(), err)
	}
}

// Where fallocate cannot punch holes or zero ranges (some filesystems, block devices without discard),
// DISCARD and WRITE_ZEROES still make the range read as zeroes; a real failure is reported, not papered over.
func TestFileZeroFallback(t *testing.T) {
	for _, direct := range []bool{false, true} {
		name := map[bool]string{false: "buffered", true: "direct"}[direct]
		t.Run(name, func(t *testing.T) {
			path := rawFile(t, 1<<20, 7)
			f := openFile(t, path, FileOptions{Direct: direct})
			var modes []uint32
			f.fallocate = func(mode uint32, off, n int64) error {
				modes = append(modes, mode)
				return syscall.EOPNOTSUPP
			}
			if err := f.PunchHole(4096, 8192); err != nil {
				t.Fatalf("PunchHole: %v", err)
			}
			if err := f.WriteZeroes(64<<10, 4096); err != nil {
				t.Fatalf("WriteZeroes: %v", err)
			}
			if len(modes) != 2 {
				t.Fatalf("fallocate called %d times, want 2 (one per operation, before the fallback)", len(modes))
			}
			want := pattern(1<<20, 7)
			clear(want[4096 : 4096+8192])
			clear(want[64<<10 : 64<<10+4096])
			got := make([]byte, 1<<20)
			if _, err := f.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("the fallback did not zero exactly the ranges")
			}

			f.fallocate = func(uint32, int64, int64) error { return syscall.EIO }
			if err := f.PunchHole(0, 4096); !errors.Is(err, syscall.EIO) {
				t.Fatalf("PunchHole on a failing disk: %v, want EIO", err)
			}
			if _, err := f.ReadAt(got[:4096], 0); err != nil || !bytes.Equal(got[:4096], want[:4096]) {
				t.Fatalf("a failed punch wrote zeroes anyway (%v)", err)
			}
		})
	}
}

// F7 ("fsyncgate"): after a failed flush Linux may have dropped the pages it could not write and reports the
// error only once, so a retried flush would succeed over lost data. The first failure must stick: every later
// FLUSH, WRITE, DISCARD and WRITE_ZEROES fails until the disk is reopened; reads still work.
func TestFlushFailureIsSticky(t *testing.T) {
	path := rawFile(t, 1<<20, 3)
	f := openFile(t, path, FileOptions{})
	// Set before the device's workers start (they call it); the kicks that follow reach them through an
	// eventfd, which the race detector does not see as synchronisation.
	var syncs atomic.Int32
	f.fdatasync = func() error {
		if syncs.Add(1) == 1 {
			return syscall.EIO // the write-back of the 4 KiB below failed; Linux reports it once
		}
		return nil
	}
	r := newRig(t, Config{Backend: f, Size: f.Size()}, allFeatures)
	if st, _ := r.do(TypeOut, 0, [][]byte{pattern(4096, 9)}); st != StatusOK {
		t.Fatalf("write status %d", st)
	}
	for i := range 2 {
		if st, _ := r.do(TypeFlush, 0, nil); st != StatusIOErr {
			t.Fatalf("flush %d after the write-back error: status %d, want IOERR", i+1, st)
		}
	}
	if n := syncs.Load(); n != 1 {
		t.Fatalf("fdatasync called %d times: a failed disk must not be flushed again (a retry would succeed)", n)
	}
	if st, _ := r.do(TypeOut, 8, [][]byte{pattern(512, 1)}); st != StatusIOErr {
		t.Fatalf("write after the failed flush: status %d, want IOERR", st)
	}
	seg := make([]byte, 16)
	binary.LittleEndian.PutUint64(seg, 16)
	binary.LittleEndian.PutUint32(seg[8:], 8)
	for _, typ := range []uint32{TypeDiscard, TypeWriteZeroes} {
		if st, _ := r.do(typ, 0, [][]byte{seg}); st != StatusIOErr {
			t.Fatalf("request type %d after the failed flush: status %d, want IOERR", typ, st)
		}
	}
	rd := [][]byte{make([]byte, 4096)}
	if st, _ := r.do(TypeIn, 0, rd); st != StatusOK || !bytes.Equal(rd[0], pattern(4096, 9)) {
		t.Fatalf("read after the failed flush: status %d", st)
	}
	err := f.Sync()
	if !errors.Is(err, ErrFlushFailed) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync after the failure: %v, want ErrFlushFailed wrapping EIO", err)
	}
	if err := r.dev.Close(); !errors.Is(err, ErrFlushFailed) {
		t.Fatalf("closing the device: %v, want the flush failure (the VMM reports it)", err)
	}

	// Reopening the disk starts afresh.
	f2 := openFile(t, path, FileOptions{})
	r2 := newRig(t, Config{Backend: f2, Size: f2.Size()}, allFeatures)
	if st, _ := r2.do(TypeOut, 8, [][]byte{pattern(512, 1)}); st != StatusOK {
		t.Fatalf("write after reopening: status %d", st)
	}
	if st, _ := r2.do(TypeFlush, 0, nil); st != StatusOK {
		t.Fatalf("flush after reopening: status %d", st)
	}
}

// flakyDisk is a backend whose Sync fails the first time only, as a backend would that forgets the error
// it reported (the launcher's overlay over a file that does not latch, a network store, a test fake).
type flakyDisk struct {
	memDisk
	failed atomic.Bool
}

func (f *flakyDisk) Sync() error {
	if f.failed.CompareAndSwap(false, true) {
		return syscall.EIO
	}
	return f.memDisk.Sync()
}

// F7 for every backend: the device itself keeps the first failed flush, so a backend that forgets it
// cannot make a later FLUSH succeed over lost data, nor take writes, DISCARD or WRITE_ZEROES.
func TestFlushFailureIsStickyWhateverTheBackend(t *testing.T) {
	disk := &flakyDisk{memDisk: memDisk{b: make([]byte, 1<<20)}}
	r := newRig(t, Config{Backend: disk, Size: 1 << 20}, allFeatures)
	if st, _ := r.do(TypeOut, 0, [][]byte{pattern(4096, 9)}); st != StatusOK {
		t.Fatalf("write status %d", st)
	}
	for i := range 3 {
		if st, _ := r.do(TypeFlush, 0, nil); st != StatusIOErr {
			t.Fatalf("flush %d after the failed one: status %d, want IOERR", i+1, st)
		}
	}
	if syncs, _ := disk.state(); syncs != 0 {
		t.Fatalf("the backend was synced again %d times after its failure", syncs)
	}
	if st, _ := r.do(TypeOut, 8, [][]byte{pattern(512, 1)}); st != StatusIOErr {
		t.Fatalf("write after the failed flush: status %d, want IOERR", st)
	}
	rd := [][]byte{make([]byte, 4096)}
	if st, _ := r.do(TypeIn, 0, rd); st != StatusOK || !bytes.Equal(rd[0], pattern(4096, 9)) {
		t.Fatalf("read after the failed flush: status %d", st)
	}
	if err := r.dev.Close(); !errors.Is(err, ErrFlushFailed) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("closing the device: %v, want the flush failure", err)
	}
}
