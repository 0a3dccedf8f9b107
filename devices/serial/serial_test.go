package serial

import (
	"bytes"
	"sync/atomic"
	"testing"
)

type counter struct{ n atomic.Int32 }

func (c *counter) Trigger() error { c.n.Add(1); return nil }

func rd(s *Serial, off uint64) byte {
	b := []byte{0}
	s.Read(off, b)
	return b[0]
}

func TestOutputAndInterrupts(t *testing.T) {
	var out bytes.Buffer
	irq := &counter{}
	s := New(&out, irq)
	for _, c := range []byte("hi") {
		s.Write(regData, []byte{c})
	}
	if out.String() != "hi" {
		t.Fatalf("output %q", out.String())
	}
	if irq.n.Load() != 0 {
		t.Fatal("interrupt without IER")
	}
	s.Write(regIER, []byte{ierTHRE})
	if irq.n.Load() != 1 || rd(s, regIIR)&0xf != iirTHRE {
		t.Fatal("enabling THRE must raise THRE interrupt")
	}
	if rd(s, regIIR)&0xf != iirNone {
		t.Fatal("reading IIR must clear THRE")
	}
	s.Write(regIER, []byte{ierTHRE | ierRDA})
	s.Enqueue([]byte("ab"))
	if irq.n.Load() != 2 {
		t.Fatalf("input must raise an interrupt, got %d", irq.n.Load())
	}
	if rd(s, regLSR)&lsrDR == 0 || rd(s, regIIR)&0xf != iirRDA {
		t.Fatal("data ready not reported")
	}
	if rd(s, regData) != 'a' || rd(s, regData) != 'b' || rd(s, regLSR)&lsrDR != 0 {
		t.Fatal("input bytes wrong")
	}
}

func TestLoopbackProbe(t *testing.T) {
	s := New(nil, nil)
	s.Write(regMCR, []byte{mcrLoop | 0x0a})
	if got := rd(s, regMSR) & 0xf0; got != 0x90 {
		t.Fatalf("loopback MSR %#x, want 0x90 (Linux 8250 probe)", got)
	}
	s.Write(regData, []byte{'x'})
	if rd(s, regData) != 'x' {
		t.Fatal("loopback data not returned")
	}
	s.Write(regLCR, []byte{lcrDLAB})
	s.Write(regData, []byte{1})
	s.Write(regIER, []byte{2})
	if rd(s, regData) != 1 || rd(s, regIER) != 2 {
		t.Fatal("divisor latch")
	}
}

func TestInputBound(t *testing.T) {
	s := New(nil, nil)
	if n := s.Enqueue(make([]byte, InputBufferSize+10)); n != InputBufferSize {
		t.Fatalf("accepted %d", n)
	}
}

func FuzzSerial(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 0x80, 0x10})
	f.Fuzz(func(t *testing.T, ops []byte) {
		s := New(nil, &counter{})
		for i := 0; i+1 < len(ops); i += 2 {
			off := uint64(ops[i] & 0x0f)
			n := 1 << (ops[i] >> 6)
			d := make([]byte, n)
			d[0] = ops[i+1]
			if ops[i]&0x10 != 0 {
				s.Read(off, d)
			} else {
				s.Write(off, d)
			}
			if ops[i]&0x20 != 0 {
				s.Enqueue(ops[i:])
			}
		}
	})
}
