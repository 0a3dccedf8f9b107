package boot

import (
	"encoding/binary"
	"fmt"

	"github.com/kvirt/kvirt/vmm/kvm"
	"github.com/kvirt/kvirt/vmm/layout"
	"github.com/kvirt/kvirt/vmm/memory"
)

// GDT selectors of the boot GDT.
const (
	SelCode   = 0x08 // 64-bit code
	SelData   = 0x10
	SelTSS    = 0x18
	SelCode32 = 0x20 // 32-bit code (PVH entry)
)

func gdtEntry(flags uint16, base, limit uint32) uint64 {
	return uint64(base&0xff000000)<<32 | uint64(flags&0xf0ff)<<40 | uint64(limit&0xf0000)<<32 |
		uint64(base&0xffffff)<<16 | uint64(limit&0xffff)
}

// GDT returns the boot GDT: null, 64-bit code, data, TSS, 32-bit code.
func GDT() []uint64 {
	return []uint64{0, gdtEntry(0xa09b, 0, 0xfffff), gdtEntry(0xc093, 0, 0xfffff), gdtEntry(0x808b, 0, 0xfffff),
		gdtEntry(0xc09b, 0, 0xfffff)}
}

func segment(e uint64, sel uint16) kvm.Segment {
	s := kvm.Segment{
		Base:     (e>>16)&0xffffff | (e>>32)&0xff000000,
		Limit:    uint32(e&0xffff | (e>>32)&0xf0000),
		Selector: sel,
		Type:     uint8(e>>40) & 0xf,
		S:        uint8(e>>44) & 1,
		DPL:      uint8(e>>45) & 3,
		Present:  uint8(e>>47) & 1,
		AVL:      uint8(e>>52) & 1,
		L:        uint8(e>>53) & 1,
		DB:       uint8(e>>54) & 1,
		G:        uint8(e>>55) & 1,
	}
	if s.G == 1 {
		s.Limit = s.Limit<<12 | 0xfff
	}
	return s
}

// WriteBootTables writes the GDT, an empty IDT and identity page tables covering the first 4 GiB
// (2 MiB pages) into guest memory.
func WriteBootTables(mem *memory.GuestMemory) error {
	le := binary.LittleEndian
	g := GDT()
	b := make([]byte, 8*len(g))
	for i, e := range g {
		le.PutUint64(b[8*i:], e)
	}
	if _, err := mem.WriteAt(b, layout.GDTAddr); err != nil {
		return fmt.Errorf("boot: write GDT: %w", err)
	}
	if _, err := mem.WriteAt(make([]byte, 8), layout.IDTAddr); err != nil {
		return fmt.Errorf("boot: write IDT: %w", err)
	}
	pt := make([]byte, 6*4096) // PML4, PDPT, 4 PDs
	le.PutUint64(pt[0:], layout.PDPTAddr|3)
	for i := uint64(0); i < 4; i++ {
		le.PutUint64(pt[4096+8*i:], (layout.PDAddr+i*4096)|3)
	}
	for i := uint64(0); i < 4*512; i++ {
		le.PutUint64(pt[2*4096+8*i:], i<<21|0x83) // present, writable, 2 MiB page
	}
	if _, err := mem.WriteAt(pt, layout.PML4Addr); err != nil {
		return fmt.Errorf("boot: write page tables: %w", err)
	}
	return nil
}

// Control register and EFER bits.
const (
	CR0PE   = 1 << 0
	CR0MP   = 1 << 1
	CR0ET   = 1 << 4
	CR0NE   = 1 << 5
	CR0PG   = 1 << 31
	CR4PAE  = 1 << 5
	EFERLME = 1 << 8
	EFERLMA = 1 << 10
)

// LongModeSregs sets sregs for 64-bit entry: boot GDT loaded, paging on with the identity tables.
func LongModeSregs(s *kvm.Sregs) {
	g := GDT()
	code, data, tss := segment(g[1], SelCode), segment(g[2], SelData), segment(g[3], SelTSS)
	s.GDT = kvm.DTable{Base: layout.GDTAddr, Limit: uint16(8*len(g) - 1)}
	s.IDT = kvm.DTable{Base: layout.IDTAddr, Limit: 7}
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = tss
	s.CR0 = CR0PE | CR0MP | CR0ET | CR0NE | CR0PG
	s.CR3 = layout.PML4Addr
	s.CR4 = CR4PAE
	s.EFER |= EFERLME | EFERLMA
}

// BootRegs returns the general registers for the 64-bit entry with boot_params at the zero page.
func BootRegs(entry uint64) kvm.Regs {
	return kvm.Regs{
		RIP:    entry,
		RSP:    layout.BootStackTop,
		RBP:    layout.BootStackTop,
		RSI:    layout.ZeroPageAddr,
		RFLAGS: 2,
	}
}

// BootFPU is the FPU state at reset (x87 control word and MXCSR defaults).
func BootFPU() kvm.FPU { return kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80} }
