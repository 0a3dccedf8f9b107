package vmm

import (
	"encoding/binary"
	"fmt"

	"github.com/kvirt/kvirt/vmm/layout"
)

func mpChecksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return -s
}

// MPTable returns an Intel MultiProcessor table (floating pointer at layout.MPTableAddr, config table
// right after it) for guests booted without ACPI: one processor entry per vCPU (with its APIC ID, the
// first is the boot CPU), an ISA bus, the IOAPIC (ID above every APIC ID) with identity-mapped ISA
// interrupts, and LINT0=ExtINT, LINT1=NMI.
func MPTable(apicIDs []uint8) ([]byte, error) {
	cpus := len(apicIDs)
	if cpus < 1 || cpus > 254 {
		return nil, fmt.Errorf("vmm: MP table: %d CPUs out of range", cpus)
	}
	le := binary.LittleEndian
	ioapicID := byte(0)
	for _, id := range apicIDs {
		if id >= 0xfe {
			return nil, fmt.Errorf("vmm: MP table: APIC ID %d leaves no ID for the IOAPIC", id)
		}
		ioapicID = max(ioapicID, id+1)
	}
	var entries []byte
	for i, id := range apicIDs {
		flags := byte(1)
		if i == 0 {
			flags |= 2
		}
		e := []byte{0, id, 0x14, flags}
		e = le.AppendUint32(e, 0x600)
		e = le.AppendUint32(e, 0x201)
		entries = append(entries, append(e, make([]byte, 8)...)...)
	}
	entries = append(entries, 1, 0, 'I', 'S', 'A', ' ', ' ', ' ')
	entries = append(entries, 2, ioapicID, 0x11, 1)
	entries = le.AppendUint32(entries, layout.IOAPICAddr)
	count := cpus + 2
	for irq := 0; irq < 16; irq++ {
		typ := byte(0)
		if irq == 0 {
			typ = 3 // ExtINT
		}
		entries = append(entries, 3, typ, 0, 0, 0, byte(irq), ioapicID, byte(irq))
		count++
	}
	entries = append(entries, 4, 3, 0, 0, 0, 0, 0xff, 0) // LINT0: ExtINT
	entries = append(entries, 4, 1, 0, 0, 0, 0, 0xff, 1) // LINT1: NMI
	count += 2

	hdr := make([]byte, 44)
	copy(hdr, "PCMP")
	le.PutUint16(hdr[4:], uint16(44+len(entries)))
	hdr[6] = 4
	copy(hdr[8:16], "KVIRT   ")
	copy(hdr[16:28], "KVIRT VMM   ")
	le.PutUint16(hdr[34:], uint16(count))
	le.PutUint32(hdr[36:], layout.LAPICAddr)
	cfg := append(hdr, entries...)
	cfg[7] = mpChecksum(cfg)

	fp := make([]byte, 16)
	copy(fp, "_MP_")
	le.PutUint32(fp[4:], layout.MPTableAddr+16)
	fp[8] = 1
	fp[9] = 4
	fp[10] = mpChecksum(fp)
	out := append(fp, cfg...)
	if len(out) > 0xa0000-layout.MPTableAddr {
		return nil, fmt.Errorf("vmm: MP table of %d bytes does not fit below 640 KiB", len(out))
	}
	return out, nil
}
