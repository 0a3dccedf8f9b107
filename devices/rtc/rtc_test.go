package rtc

import (
	"testing"
	"time"
)

func read(r *RTC, idx byte) byte {
	r.Write(0, []byte{idx})
	b := []byte{0}
	r.Read(1, b)
	return b[0]
}

func TestTimeAndMemory(t *testing.T) {
	now := time.Date(2026, 11, 22, 13, 45, 59, 0, time.UTC)
	r := New(256<<20, 1<<30, func() time.Time { return now })
	for _, c := range []struct {
		idx  byte
		want byte
	}{{0, 0x59}, {2, 0x45}, {4, 0x13}, {7, 0x22}, {8, 0x11}, {9, 0x26}, {0x32, 0x20}, {0x0d, 0x80}} {
		if got := read(r, c.idx); got != c.want {
			t.Errorf("cmos[%#x]=%#x want %#x", c.idx, got, c.want)
		}
	}
	if b := uint16(read(r, 0x34)) | uint16(read(r, 0x35))<<8; b != (256-16)<<4 {
		t.Errorf("mem above 16M = %d blocks", b)
	}
	if read(r, 0x5c) != 0x40 {
		t.Errorf("high mem blocks wrong")
	}
	r.Write(0, []byte{0x09})
	r.Write(1, []byte{0x30})
	if read(r, 0x09) != 0x30 {
		t.Fatal("year write not kept")
	}
}

func FuzzRTC(f *testing.F) {
	f.Add([]byte{0, 9, 1, 0x99, 0, 0x0b, 1, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		r := New(128<<20, 0, nil)
		for i := 0; i+1 < len(ops); i += 2 {
			d := []byte{ops[i+1]}
			if ops[i]&0x10 != 0 {
				r.Read(uint64(ops[i]&3), d)
			} else {
				r.Write(uint64(ops[i]&3), d)
			}
		}
	})
}
