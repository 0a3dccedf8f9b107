package vmm

import (
	"encoding/binary"
	"testing"

	"github.com/kvirt/kvirt/vmm/layout"
)

func TestMPTable(t *testing.T) {
	b, err := MPTable([]uint8{0, 1, 2, 3})
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
	if _, err := MPTable(make([]uint8, 64)); err == nil {
		t.Fatal("MP table larger than the EBDA slot accepted")
	}
	if _, err := MPTable([]uint8{0, 0xfe}); err == nil {
		t.Fatal("APIC ID 0xfe accepted (no ID left for the IOAPIC)")
	}
}

// TestMPTableTopology: processor entries carry the topology's APIC IDs and the IOAPIC's ID is above them.
func TestMPTableTopology(t *testing.T) {
	ids := []uint8{0, 1, 2, 4, 5, 6} // 2 sockets × 3 cores
	b, err := MPTable(ids)
	if err != nil {
		t.Fatal(err)
	}
	cfg := b[16:]
	off := 44
	for i, id := range ids {
		if cfg[off] != 0 || cfg[off+1] != id || cfg[off+3]&1 == 0 || (cfg[off+3]&2 != 0) != (i == 0) {
			t.Fatalf("processor entry %d = % x, want APIC ID %d", i, cfg[off:off+20], id)
		}
		off += 20
	}
	off += 8 // the ISA bus
	if cfg[off] != 2 || cfg[off+1] != 7 {
		t.Fatalf("IOAPIC entry % x, want ID 7", cfg[off:off+8])
	}
}

// TestMPTableWithACPI: the MP floating pointer is in the top KiB of base RAM with ACPI on as well, so Linux
// finds it at the second step of its scan instead of remapping through the whole BIOS area (1.4 s on PVM).
func TestMPTableWithACPI(t *testing.T) {
	t.Parallel()
	for _, noACPI := range []bool{false, true} {
		m, _ := startTestGuest(t, "hang", func(c *Config) { c.NoACPI = noACPI; c.CPUs = 2 })
		b := make([]byte, 16)
		if _, err := m.Memory().ReadAt(b, layout.MPTableAddr); err != nil {
			t.Fatal(err)
		}
		if string(b[:4]) != "_MP_" || binary.LittleEndian.Uint32(b[4:]) != layout.MPTableAddr+16 {
			t.Errorf("NoACPI=%v: no MP floating pointer at %#x: % x", noACPI, layout.MPTableAddr, b)
		}
	}
}
