package vmm

import (
	"encoding/binary"
	"testing"

	"github.com/kvirt/kvirt/vmm/layout"
)

func TestMPTable(t *testing.T) {
	b, err := MPTable(4)
	if err != nil {
		t.Fatal(err)
	}
	var s byte
	for _, c := range b[:16] {
		s += c
	}
	if string(b[:4]) != "_MP_" || s != 0 || binary.LittleEndian.Uint32(b[4:]) != layout.MPTableAddr+16 {
		t.Fatal("floating pointer bad")
	}
	cfg := b[16:]
	n := binary.LittleEndian.Uint16(cfg[4:])
	s = 0
	for _, c := range cfg[:n] {
		s += c
	}
	if string(cfg[:4]) != "PCMP" || s != 0 || int(n) != len(cfg) {
		t.Fatal("config table bad")
	}
	if cnt := binary.LittleEndian.Uint16(cfg[34:]); cnt != 4+2+16+2 {
		t.Fatalf("entry count %d", cnt)
	}
	if cfg[44] != 0 || cfg[44+3] != 3 { // first processor entry: enabled BSP
		t.Fatal("BSP entry")
	}
	if _, err := MPTable(64); err == nil {
		t.Fatal("MP table larger than the EBDA slot accepted")
	}
}
