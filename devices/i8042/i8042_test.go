package i8042

import "testing"

func TestReset(t *testing.T) {
	n := 0
	c := New(func() { n++ })
	b := []byte{0}
	c.Read(OffStatus, b)
	if b[0]&0x02 != 0 {
		t.Fatal("input buffer must read empty so kb_wait() proceeds")
	}
	c.Write(OffStatus, []byte{cmdWriteCmdByte})
	c.Write(OffData, []byte{0x11})
	c.Write(OffStatus, []byte{cmdReadCmdByte})
	c.Read(OffData, b)
	if b[0] != 0x11 {
		t.Fatalf("command byte %#x", b[0])
	}
	c.Write(OffStatus, []byte{0xfe})
	if n != 1 {
		t.Fatal("0xFE did not reset")
	}
}

func FuzzI8042(f *testing.F) {
	f.Add([]byte{4, 0xfe, 0, 1, 4, 0x20})
	f.Fuzz(func(t *testing.T, ops []byte) {
		c := New(func() {})
		for i := 0; i+1 < len(ops); i += 2 {
			d := make([]byte, 1<<(ops[i]>>6))
			d[0] = ops[i+1]
			if ops[i]&0x10 != 0 {
				c.Read(uint64(ops[i]&7), d)
			} else {
				c.Write(uint64(ops[i]&7), d)
			}
		}
	})
}
