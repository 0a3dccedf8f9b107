package memory

import (
	"bytes"
	"errors"
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
