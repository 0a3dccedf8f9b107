package bus

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
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

// Review finding F10: past 4,096 distinct unclaimed addresses every access to a new one logged a line, so a
// guest could turn each exit into a log line. Logging stays bounded: the addresses past the limit are
// counted, and the count is logged at most once per SummaryEvery.
func TestUnhandledLoggingIsBounded(t *testing.T) {
	b := New("pio")
	var lines []string
	b.Logf = func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) }
	now := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	b.now = func() time.Time { return now }
	const n = 10000
	buf := make([]byte, 1)
	for addr := uint64(0); addr < n; addr++ {
		b.Read(0x10000+addr, buf)
		b.Write(0x10000+addr, buf) // a second access to the same address
	}
	if len(lines) != MaxLoggedAddrs+1 {
		t.Fatalf("%d distinct unclaimed addresses logged %d lines, want %d (one per address up to %d, one summary)", n, len(lines), MaxLoggedAddrs+1, MaxLoggedAddrs)
	}
	if want := "pio bus: 1 more unhandled accesses"; !strings.HasPrefix(lines[MaxLoggedAddrs], want) {
		t.Fatalf("first summary %q, want it to start %q", lines[MaxLoggedAddrs], want)
	}
	now = now.Add(SummaryEvery)
	b.Write(0x90000, buf)
	if len(lines) != MaxLoggedAddrs+2 {
		t.Fatalf("%d lines after the interval, want one more summary", len(lines))
	}
	// Every access past the limit since the first summary: both accesses to each address, and the last one.
	want := fmt.Sprintf("pio bus: %d more unhandled accesses to addresses past the first %d, latest a write of 1 bytes at 0x90000", 2*(n-MaxLoggedAddrs)-1+1, MaxLoggedAddrs)
	if !strings.HasPrefix(lines[MaxLoggedAddrs+1], want) {
		t.Fatalf("second summary %q, want it to start %q", lines[MaxLoggedAddrs+1], want)
	}
	b.Write(0x10000, buf) // logged already: nothing
	if len(lines) != MaxLoggedAddrs+2 {
		t.Fatalf("an address logged before logged again: %q", lines[len(lines)-1])
	}
}
