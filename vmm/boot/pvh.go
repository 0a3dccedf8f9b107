package boot

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/kvirt/kvirt/vmm/kvm"
	"github.com/kvirt/kvirt/vmm/layout"
	"github.com/kvirt/kvirt/vmm/memory"
)

// PVH is the x86 HVM direct boot ABI (Xen's, also used by QEMU, Firecracker and cloud-hypervisor): a kernel
// that declares a 32-bit entry point in an ELF note (XEN_ELFNOTE_PHYS32_ENTRY) is entered in flat 32-bit
// protected mode without paging, with EBX holding the address of an hvm_start_info that gives the command
// line, the modules (the initrd), the memory map and the RSDP. The kernel builds its own boot_params and page
// tables from it.
const (
	xenNotePhys32Entry = 18         // XEN_ELFNOTE_PHYS32_ENTRY
	pvhMagic           = 0x336ec578 // hvm_start_info.magic
	pvhStartInfoSize   = 56         // hvm_start_info, version 1
	pvhModlistAddr     = layout.PVHStartInfo + 0x40
	pvhMemmapEntrySize = 24
	// PVHMaxMemmap is how many memory map entries fit between PVHMemmap and the zero page.
	PVHMaxMemmap = (layout.ZeroPageAddr - layout.PVHMemmap) / pvhMemmapEntrySize
	maxNoteBytes = 1 << 16
)

// pvhEntry returns the PVH entry point declared in the ELF notes of f (0 if there is none).
func pvhEntry(f *elf.File) (uint32, error) {
	le := binary.LittleEndian
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		if p.Filesz > maxNoteBytes {
			return 0, fmt.Errorf("boot: vmlinux: note segment of %d bytes", p.Filesz)
		}
		b := make([]byte, p.Filesz)
		if _, err := io.ReadFull(p.Open(), b); err != nil {
			return 0, fmt.Errorf("boot: vmlinux: read notes: %w", err)
		}
		for len(b) >= 12 {
			namesz, descsz, typ := uint64(le.Uint32(b)), uint64(le.Uint32(b[4:])), le.Uint32(b[8:])
			nameEnd := 12 + (namesz+3)&^3
			descEnd := nameEnd + (descsz+3)&^3
			if nameEnd > uint64(len(b)) || descEnd > uint64(len(b)) {
				break // truncated note: stop, as a loader would
			}
			name, desc := b[12:12+namesz], b[nameEnd:nameEnd+descsz]
			if typ == xenNotePhys32Entry && string(name) == "Xen\x00" {
				switch len(desc) {
				case 4:
					return le.Uint32(desc), nil
				case 8:
					if e := le.Uint64(desc); e <= 0xffffffff {
						return uint32(e), nil
					}
				}
				return 0, fmt.Errorf("boot: vmlinux: PVH entry note has a %d-byte value beyond 32 bits", len(desc))
			}
			b = b[descEnd:]
		}
	}
	return 0, nil
}

// WritePVHStartInfo writes hvm_start_info (with the initrd as module 0 and the e820 map as its memory map)
// for a PVH entry. The command line must already be at layout.CmdlineAddr (WriteZeroPage puts it there).
func WritePVHStartInfo(mem *memory.GuestMemory, p Params) error {
	if len(p.E820) > PVHMaxMemmap {
		return fmt.Errorf("boot: %d memory map entries exceed the %d that fit for PVH", len(p.E820), PVHMaxMemmap)
	}
	le := binary.LittleEndian
	si := make([]byte, pvhStartInfoSize)
	le.PutUint32(si[0:], pvhMagic)
	le.PutUint32(si[4:], 1) // version: has the memory map
	if p.InitrdSize > 0 {
		le.PutUint32(si[12:], 1) // nr_modules
		le.PutUint64(si[16:], pvhModlistAddr)
		mod := make([]byte, 32)
		le.PutUint64(mod[0:], p.InitrdAddr)
		le.PutUint64(mod[8:], p.InitrdSize)
		if _, err := mem.WriteAt(mod, pvhModlistAddr); err != nil {
			return fmt.Errorf("boot: write PVH module list: %w", err)
		}
	}
	le.PutUint64(si[24:], layout.CmdlineAddr)
	le.PutUint64(si[32:], p.RSDP)
	le.PutUint64(si[40:], layout.PVHMemmap)
	le.PutUint32(si[48:], uint32(len(p.E820)))
	mm := make([]byte, pvhMemmapEntrySize*len(p.E820))
	for i, e := range p.E820 {
		o := pvhMemmapEntrySize * i
		le.PutUint64(mm[o:], e.Addr)
		le.PutUint64(mm[o+8:], e.Size)
		le.PutUint32(mm[o+16:], e.Type)
	}
	if _, err := mem.WriteAt(mm, layout.PVHMemmap); err != nil {
		return fmt.Errorf("boot: write PVH memory map: %w", err)
	}
	if _, err := mem.WriteAt(si, layout.PVHStartInfo); err != nil {
		return fmt.Errorf("boot: write hvm_start_info: %w", err)
	}
	return nil
}

// PVHSregs sets sregs for the PVH entry: flat 32-bit protected mode, no paging, boot GDT loaded.
func PVHSregs(s *kvm.Sregs) {
	g := GDT()
	code, data, tss := segment(g[4], SelCode32), segment(g[2], SelData), segment(g[3], SelTSS)
	s.GDT = kvm.DTable{Base: layout.GDTAddr, Limit: uint16(8*len(g) - 1)}
	s.IDT = kvm.DTable{Base: layout.IDTAddr, Limit: 7}
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = tss
	s.CR0 = CR0PE | CR0ET
	s.CR3, s.CR4 = 0, 0
	s.EFER &^= EFERLME | EFERLMA
}

// PVHRegs returns the general registers for the PVH entry: EBX = hvm_start_info.
func PVHRegs(entry uint64) kvm.Regs {
	return kvm.Regs{RIP: entry, RBX: layout.PVHStartInfo, RFLAGS: 2}
}
