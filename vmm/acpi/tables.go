package acpi

import (
	"encoding/binary"
	"fmt"
)

// VirtioMMIO is one virtio-mmio transport to declare in the DSDT.
type VirtioMMIO struct {
	Base uint64
	Size uint32 // register window the guest sees (0x200)
	GSI  uint32
}

// Config describes the platform to put in the tables.
type Config struct {
	Addr uint64 // guest-physical address of the RSDP (tables follow it)
	CPUs int
	// APICIDs are the vCPUs' local APIC IDs by index (the CPU topology's layout); nil means 0..CPUs-1.
	APICIDs    []uint8
	LAPICAddr  uint32
	IOAPICAddr uint32
	IOAPICID   uint8
	SCI        uint16
	PM1aEvt    uint16
	PM1aCnt    uint16
	PM1EvtLen  uint8
	PM1CntLen  uint8
	S5Type     uint8
	COM1       bool // declare COM1 at 0x3f8/IRQ4
	Virtio     []VirtioMMIO
}

const (
	oemID      = "KVIRT "
	oemTableID = "KVIRTVMM"
	creatorID  = "KVRT"
)

func header(sig string, length int, rev uint8) []byte {
	h := make([]byte, 36, max(length, 36))
	copy(h[0:4], sig)
	binary.LittleEndian.PutUint32(h[4:], uint32(length))
	h[8] = rev
	copy(h[10:16], oemID)
	copy(h[16:24], oemTableID)
	binary.LittleEndian.PutUint32(h[24:], 1)
	copy(h[28:32], creatorID)
	binary.LittleEndian.PutUint32(h[32:], 1)
	return h
}

// Checksum returns the byte that makes b sum to zero.
func Checksum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return -s
}

func finish(t []byte) []byte {
	binary.LittleEndian.PutUint32(t[4:], uint32(len(t)))
	t[9] = 0
	t[9] = Checksum(t)
	return t
}

// DSDT returns the DSDT with \_S5, COM1 and the virtio-mmio devices.
func DSDT(c Config) []byte {
	s5 := AMLName("\\_S5_", AMLPackage(AMLInteger(uint64(c.S5Type)), AMLInteger(uint64(c.S5Type)), AMLInteger(0), AMLInteger(0)))
	var devs [][]byte
	if c.COM1 {
		devs = append(devs, AMLDevice("COM1",
			AMLName("_HID", AMLInteger(uint64(EISAID("PNP0501")))),
			AMLName("_UID", AMLInteger(0)),
			AMLName("_CRS", ResourceTemplate(ResIO(0x3f8, 8), ResIRQNoFlags(4)))))
	}
	for i, v := range c.Virtio {
		devs = append(devs, AMLDevice(fmt.Sprintf("VR%02X", i&0xff),
			AMLName("_HID", AMLString("LNRO0005")),
			AMLName("_UID", AMLInteger(uint64(i))),
			AMLName("_CCA", AMLInteger(1)),
			AMLName("_CRS", ResourceTemplate(ResMemory32Fixed(uint32(v.Base), v.Size), ResInterrupt(v.GSI)))))
	}
	t := header("DSDT", 0, 2)
	t = append(t, s5...)
	if len(devs) > 0 {
		t = append(t, AMLScope("\\_SB_", devs...)...)
	}
	return finish(t)
}

// gas encodes a Generic Address Structure for a system I/O register block.
func gas(port uint16, bits uint8) []byte {
	b := make([]byte, 12)
	if port == 0 {
		return b
	}
	b[0] = 1 // system I/O
	b[1] = bits
	b[3] = 2 // word access
	binary.LittleEndian.PutUint64(b[4:], uint64(port))
	return b
}

// FADT returns a revision-6 FADT pointing at facs and dsdt.
func FADT(c Config, facs, dsdt uint64) []byte {
	t := header("FACP", 276, 6)
	t = t[:276]
	le := binary.LittleEndian
	// FIRMWARE_CTRL and DSDT (32-bit) stay zero: the X_ fields below are used (ACPI 6 §5.2.9: only one of
	// each pair may be set).
	le.PutUint16(t[46:], c.SCI)
	// SMI_CMD (48) = 0: the platform is always in ACPI mode.
	le.PutUint32(t[56:], uint32(c.PM1aEvt))
	le.PutUint32(t[64:], uint32(c.PM1aCnt))
	t[88] = c.PM1EvtLen
	t[89] = c.PM1CntLen
	le.PutUint16(t[109:], 1<<1|1<<2) // IAPC_BOOT_ARCH: 8042 present, no VGA
	// Flags: WBINVD, PROC_C1, SLP_BUTTON (no fixed sleep button); the fixed power button is present.
	le.PutUint32(t[112:], 1<<0|1<<2|1<<5)
	t[131] = 5 // FADT minor version (6.5)
	le.PutUint64(t[132:], facs)
	le.PutUint64(t[140:], dsdt)
	copy(t[148:], gas(c.PM1aEvt, c.PM1EvtLen*8))
	copy(t[172:], gas(c.PM1aCnt, c.PM1CntLen*8))
	copy(t[268:], "KVIRTVMM")
	return finish(t)
}

// FACS returns a 64-byte FACS (no checksum field).
func FACS() []byte {
	t := make([]byte, 64)
	copy(t, "FACS")
	binary.LittleEndian.PutUint32(t[4:], 64)
	t[32] = 2 // version
	return t
}

// MADT returns the MADT: one enabled local APIC per vCPU (processor UID = index, APIC ID from
// c.APICIDs), the IOAPIC and the SCI override (level, active high).
func MADT(c Config) []byte {
	t := header("APIC", 0, 5)
	t = binary.LittleEndian.AppendUint32(t, c.LAPICAddr)
	t = binary.LittleEndian.AppendUint32(t, 1) // PCAT_COMPAT: dual 8259s present
	for i := 0; i < c.CPUs; i++ {
		id := byte(i)
		if c.APICIDs != nil {
			id = c.APICIDs[i]
		}
		t = append(t, 0, 8, byte(i), id, 1, 0, 0, 0)
	}
	t = append(t, 1, 12, c.IOAPICID, 0)
	t = binary.LittleEndian.AppendUint32(t, c.IOAPICAddr)
	t = binary.LittleEndian.AppendUint32(t, 0)
	t = append(t, 2, 10, 0, byte(c.SCI))
	t = binary.LittleEndian.AppendUint32(t, uint32(c.SCI))
	t = binary.LittleEndian.AppendUint16(t, 0x000d)
	return finish(t)
}

// XSDT returns an XSDT listing the given table addresses.
func XSDT(entries ...uint64) []byte {
	t := header("XSDT", 0, 1)
	for _, e := range entries {
		t = binary.LittleEndian.AppendUint64(t, e)
	}
	return finish(t)
}

// RSDP returns a revision-2 RSDP pointing at xsdt.
func RSDP(xsdt uint64) []byte {
	r := make([]byte, 36)
	copy(r, "RSD PTR ")
	copy(r[9:15], oemID)
	r[15] = 2
	binary.LittleEndian.PutUint32(r[20:], 36)
	binary.LittleEndian.PutUint64(r[24:], xsdt)
	r[8] = Checksum(r[:20])
	r[32] = Checksum(r)
	return r
}

// Build lays the tables out from c.Addr (RSDP first) and returns the image to copy there and the RSDP
// address.
func Build(c Config) (image []byte, rsdp uint64, err error) {
	if c.CPUs < 1 || c.CPUs > 255 {
		return nil, 0, fmt.Errorf("acpi: %d CPUs out of range 1-255", c.CPUs)
	}
	if c.APICIDs != nil {
		if len(c.APICIDs) != c.CPUs {
			return nil, 0, fmt.Errorf("acpi: %d APIC IDs for %d CPUs", len(c.APICIDs), c.CPUs)
		}
		seen := map[uint8]bool{}
		for _, id := range c.APICIDs {
			if id == 0xff || seen[id] {
				return nil, 0, fmt.Errorf("acpi: APIC ID %d is the broadcast ID or given twice", id)
			}
			seen[id] = true
		}
	}
	var img []byte
	place := func(t []byte, align int) uint64 {
		for len(img)%align != 0 {
			img = append(img, 0)
		}
		a := c.Addr + uint64(len(img))
		img = append(img, t...)
		return a
	}
	// Reserve the RSDP slot first so it sits at c.Addr.
	img = make([]byte, 36)
	facs := place(FACS(), 64)
	dsdt := place(DSDT(c), 16)
	fadt := place(FADT(c, facs, dsdt), 16)
	madt := place(MADT(c), 16)
	xsdt := place(XSDT(fadt, madt), 16)
	copy(img, RSDP(xsdt))
	return img, c.Addr, nil
}
