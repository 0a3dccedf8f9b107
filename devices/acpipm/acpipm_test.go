package acpipm

import "testing"

type line struct{ high bool }

func (l *line) SetLevel(h bool) error { l.high = h; return nil }

func TestPowerButtonAndS5(t *testing.T) {
	sci := &line{}
	off := 0
	p := New(sci, func() { off++ })
	ev, cnt := p.Event(), p.Control()
	p.PressPowerButton()
	if sci.high {
		t.Fatal("SCI raised while PWRBTN_EN is clear")
	}
	ev.Write(2, []byte{0x00, 0x01}) // enable PWRBTN_EN
	if !sci.high {
		t.Fatal("SCI not raised for a pending enabled event")
	}
	b := make([]byte, 2)
	ev.Read(0, b)
	if b[1]&1 == 0 {
		t.Fatal("PWRBTN_STS not visible")
	}
	ev.Write(0, []byte{0, 1}) // write-one-to-clear
	if sci.high {
		t.Fatal("SCI still high after clearing status")
	}
	cnt.Write(0, []byte{0x00, byte((S5Type<<10 | SlpEn) >> 8)})
	if off != 1 {
		t.Fatal("S5 did not power off")
	}
	cnt.Write(0, []byte{0x00, byte((1<<10 | SlpEn) >> 8)}) // S1: ignored
	if off != 1 {
		t.Fatal("S1 powered off")
	}
	cnt.Read(0, b)
	if b[0]&SCIEn == 0 {
		t.Fatal("SCI_EN must read set (ACPI mode)")
	}
}

func FuzzPM(f *testing.F) {
	f.Add([]byte{0x00, 0x01, 0x12, 0x34, 0x80, 0x34})
	f.Fuzz(func(t *testing.T, ops []byte) {
		p := New(&line{}, func() {})
		for i := 0; i+1 < len(ops); i += 2 {
			d := make([]byte, 1<<(ops[i]>>6))
			d[0] = ops[i+1]
			off := uint64(ops[i] & 7)
			switch ops[i] >> 4 & 3 {
			case 0:
				p.Event().Write(off, d)
			case 1:
				p.Event().Read(off, d)
			case 2:
				p.Control().Write(off, d)
			case 3:
				p.Control().Read(off, d)
				p.PressPowerButton()
			}
		}
	})
}
