package memory

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestAccess(t *testing.T) {
	m, err := New([][2]uint64{{0, 0x2000}, {0x2000, 0x1000}, {0x10000, 0x1000}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Size() != 0x4000 {
		t.Fatalf("size %#x", m.Size())
	}
	// Spans two contiguous regions.
	if n, err := m.WriteAt([]byte("hello"), 0x1ffe); err != nil || n != 5 {
		t.Fatalf("write across regions: %d %v", n, err)
	}
	buf := make([]byte, 5)
	if _, err := m.ReadAt(buf, 0x1ffe); err != nil || string(buf) != "hello" {
		t.Fatalf("read back %q %v", buf, err)
	}
	if _, err := m.ReadAt(buf, 0x2ffe); err == nil {
		t.Fatal("read past end succeeded")
	}
	if _, err := m.WriteAt(buf, 0x5000); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("write in hole: %v", err)
	}
	if _, err := m.ReadAt(buf, -1); err == nil {
		t.Fatal("negative offset accepted")
	}
	s, err := m.Slice(0x10000, 0x1000)
	if err != nil || len(s) != 0x1000 {
		t.Fatalf("slice %v", err)
	}
	if _, err := m.Slice(0x10001, 0x1000); err == nil {
		t.Fatal("slice past region end accepted")
	}
	if _, err := m.Slice(^uint64(0), ^uint64(0)); err == nil {
		t.Fatal("huge slice accepted")
	}
	s[0] = 9
	if _, err := m.ReadAt(buf[:1], 0x10000); err != nil || !bytes.Equal(buf[:1], []byte{9}) {
		t.Fatal("slice does not alias memory")
	}
}

func TestOverlapRejected(t *testing.T) {
	if _, err := New([][2]uint64{{0, 0x2000}, {0x1000, 0x1000}}, Options{}); err == nil {
		t.Fatal("overlap accepted")
	}
	if _, err := New([][2]uint64{{0, 0x123}}, Options{}); err == nil {
		t.Fatal("unaligned accepted")
	}
}

// TestLoadFile maps a file's whole pages copy-on-write and copies the partial ones: the guest sees the file's
// bytes, bytes around the range keep theirs, writes never reach the file, and Discard brings back zeros.
func TestLoadFile(t *testing.T) {
	data := make([]byte, 5*PageSize+123)
	for i := range data {
		data[i] = byte(i*7 + 1)
	}
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, data, 0o444); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, tc := range []struct {
		name       string
		gpa        uint64
		off        int64
		n          uint64
		wantMapped uint64
	}{
		{"aligned whole file", 0x10000, 0, uint64(len(data)), 5 * PageSize},
		{"unaligned head and tail", 0x10000 + 100, 100, 3*PageSize + 50, 2 * PageSize},
		{"offsets not congruent: copied", 0x10000, 100, 3 * PageSize, 0},
		{"shorter than a page: copied", 0x10000 + 8, 8, 100, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New([][2]uint64{{0, 0x100000}}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			fill := bytes.Repeat([]byte{0xee}, 0x40000)
			if _, err := m.WriteAt(fill, 0); err != nil {
				t.Fatal(err)
			}
			mapped, err := m.LoadFile(tc.gpa, f, tc.off, tc.n)
			if err != nil || mapped != tc.wantMapped {
				t.Fatalf("LoadFile = %#x, %v; want %#x mapped", mapped, err, tc.wantMapped)
			}
			got := make([]byte, tc.n+2)
			if _, err := m.ReadAt(got, int64(tc.gpa-1)); err != nil {
				t.Fatal(err)
			}
			if got[0] != 0xee || got[len(got)-1] != 0xee {
				t.Fatalf("bytes around the range changed: %#x %#x", got[0], got[len(got)-1])
			}
			if !bytes.Equal(got[1:len(got)-1], data[tc.off:tc.off+int64(tc.n)]) {
				t.Fatal("guest memory differs from the file")
			}
			// Writes stay private.
			if _, err := m.WriteAt(bytes.Repeat([]byte{0x55}, int(tc.n)), int64(tc.gpa)); err != nil {
				t.Fatal(err)
			}
			if onDisk, _ := os.ReadFile(path); !bytes.Equal(onDisk, data) {
				t.Fatal("a guest write reached the file")
			}
			if err := m.Discard(); err != nil {
				t.Fatal(err)
			}
			if _, err := m.ReadAt(got, int64(tc.gpa-1)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, make([]byte, len(got))) {
				t.Fatal("memory not zero after Discard")
			}
		})
	}
	m, err := New([][2]uint64{{0, 0x10000}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.LoadFile(0x8000, f, 0, 0x10000); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("load past the end of RAM: %v", err)
	}
	for _, off := range []int64{int64(len(data)) - 10, 4 * PageSize} {
		if _, err := m.LoadFile(0, f, off, 2*PageSize); err == nil {
			t.Fatalf("load of 2 pages at %#x, past the end of the file, succeeded", off)
		}
	}
}
