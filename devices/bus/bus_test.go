package bus

import (
	"bytes"
	"fmt"
	"testing"
)

type rec struct {
	lastOff uint64
	val     byte
}

func (r *rec) Read(off uint64, d []byte) {
	r.lastOff = off
	for i := range d {
		d[i] = r.val
	}
}
func (r *rec) Write(off uint64, d []byte) { r.lastOff = off; r.val = d[0] }

func TestInsertOverlap(t *testing.T) {
	b := New("t")
	if err := b.Insert(0x100, 0x10, &rec{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		base, size uint64
		ok         bool
	}{
		{0x100, 1, false}, {0xf8, 0x9, false}, {0x10f, 1, false}, {0xf0, 0x10, true}, {0x110, 0x10, true},
		{0x0, 0, false}, {^uint64(0), 2, false},
	} {
		err := b.Insert(c.base, c.size, &rec{})
		if (err == nil) != c.ok {
			t.Errorf("Insert(%#x,%#x) err=%v want ok=%v", c.base, c.size, err, c.ok)
		}
	}
}

func TestDispatch(t *testing.T) {
	b := New("t")
	var logs []string
	b.Logf = func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }
	r := &rec{}
	if err := b.Insert(0x3f8, 8, r); err != nil {
		t.Fatal(err)
	}
	if !b.Write(0x3fb, []byte{7}) || r.lastOff != 3 {
		t.Fatalf("write not routed: off=%d", r.lastOff)
	}
	d := make([]byte, 2)
	if !b.Read(0x3f8, d) || !bytes.Equal(d, []byte{7, 7}) {
		t.Fatalf("read got %v", d)
	}
	if b.Read(0x400, d) || !bytes.Equal(d, []byte{0xff, 0xff}) {
		t.Fatalf("unhandled read got %v", d)
	}
	b.Read(0x400, d)
	b.Write(0x3f7, d)
	if len(logs) != 2 {
		t.Fatalf("want 2 one-time logs, got %q", logs)
	}
	if !b.Remove(0x3f8) || b.Read(0x3f8, d) {
		t.Fatal("remove failed")
	}
}
