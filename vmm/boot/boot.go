// Package boot implements the Linux/x86 64-bit boot protocol: loading an ELF vmlinux or a bzImage, the
// initrd and command line into guest memory, the boot_params "zero page" with its e820 map, and the
// long-mode CPU state (GDT, identity page tables, registers) the kernel's 64-bit entry expects.
package boot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/kvirt/kvirt/vmm/layout"
	"github.com/kvirt/kvirt/vmm/memory"
)

// E820 types.
const (
	E820RAM      = 1
	E820Reserved = 2
	E820ACPI     = 3
)

// E820Entry is one e820 memory map entry.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// Kernel is a kernel loaded into guest memory.
type Kernel struct {
	Entry uint64 // 64-bit entry point (guest-physical)
	// Header is the setup header to put in boot_params (copied from a bzImage; built for a vmlinux).
	Header []byte
	End    uint64 // first guest-physical address after the loaded image (incl. init_size for bzImage)
	Format string // "elf" or "bzimage"
	// PVHEntry is the 32-bit PVH entry point a vmlinux declares (XEN_ELFNOTE_PHYS32_ENTRY); 0 if none.
	PVHEntry uint32
}

// Setup header offsets within boot_params.
const (
	offACPIRSDP       = 0x070
	offExtRamdiskImg  = 0x0c0
	offExtRamdiskSize = 0x0c4
	offExtCmdline     = 0x0c8
	offE820Entries    = 0x1e8
	offSetupSects     = 0x1f1
	offBootFlag       = 0x1fe
	offHeaderMagic    = 0x202
	offVersion        = 0x206
	offTypeOfLoader   = 0x210
	offLoadFlags      = 0x211
	offRamdiskImage   = 0x218
	offRamdiskSize    = 0x21c
	offHeapEnd        = 0x224
	offCmdLinePtr     = 0x228
	offInitrdAddrMax  = 0x22c
	offKernelAlign    = 0x230
	offXLoadFlags     = 0x236
	offCmdlineSize    = 0x238
	offInitSize       = 0x260
	offE820Table      = 0x2d0
	maxE820           = 128
	hdrSMagic         = 0x53726448 // "HdrS"
	loadedHigh        = 0x01
	canUseHeap        = 0x80
	xlfKernel64       = 0x01
	// ZeroPageSize is the size of boot_params.
	ZeroPageSize = 4096
)

// ErrNotELF is returned by LoadELF for input that is not an ELF file.
var ErrNotELF = errors.New("not an ELF image")

// LoadKernel loads a vmlinux (ELF64) or a bzImage of size bytes read from r, detected from its content.
// Segments go straight into guest memory (no intermediate copy); when r is an *os.File, page-aligned parts are
// mapped copy-on-write from the file rather than read (see memory.LoadFile).
func LoadKernel(mem *memory.GuestMemory, r io.ReaderAt, size int64) (*Kernel, error) {
	magic := make([]byte, 4)
	if _, err := r.ReadAt(magic, 0); err != nil {
		return nil, fmt.Errorf("boot: read kernel image: %w", err)
	}
	if bytes.Equal(magic, []byte("\x7fELF")) {
		return LoadELF(mem, r)
	}
	return LoadBzImage(mem, r, size)
}

// LoadELF loads the PT_LOAD segments of a 64-bit x86 ELF kernel at their physical addresses. Guest memory
// must be zero-filled (a fresh or Discarded GuestMemory): bss is not cleared.
func LoadELF(mem *memory.GuestMemory, r io.ReaderAt) (*Kernel, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("boot: vmlinux: %w: %v", ErrNotELF, err)
	}
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("boot: vmlinux: want a 64-bit x86-64 ELF, got %v %v", f.Class, f.Machine)
	}
	k := &Kernel{Format: "elf"}
	loaded := 0
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD {
			continue
		}
		if p.Filesz > p.Memsz {
			return nil, fmt.Errorf("boot: vmlinux: segment at %#x has filesz %#x > memsz %#x", p.Paddr, p.Filesz, p.Memsz)
		}
		if p.Paddr < layout.HighMemStart {
			return nil, fmt.Errorf("boot: vmlinux: segment at %#x below 1 MiB would overwrite boot structures", p.Paddr)
		}
		if _, err := mem.Slice(p.Paddr, p.Memsz); err != nil {
			return nil, fmt.Errorf("boot: vmlinux: segment %#x+%#x does not fit guest RAM (give the VM more memory): %w", p.Paddr, p.Memsz, err)
		}
		if err := place(mem, r, int64(p.Off), p.Paddr, p.Filesz); err != nil {
			return nil, fmt.Errorf("boot: vmlinux: segment at %#x: %w", p.Paddr, err)
		}
		// The bss (Filesz to Memsz) is left alone: guest memory is zero-filled when a kernel is loaded (fresh
		// or Discarded), and touching it would only cost page faults.
		if e := p.Paddr + p.Memsz; e > k.End {
			k.End = e
		}
		loaded++
	}
	if loaded == 0 {
		return nil, fmt.Errorf("boot: vmlinux: no loadable segments")
	}
	if k.PVHEntry, err = pvhEntry(f); err != nil {
		return nil, err
	}
	// Linux's vmlinux entry (phys_startup_64) is a physical address; tolerate a virtual one by masking
	// the kernel mapping base.
	k.Entry = f.Entry
	if k.Entry >= 0xffffffff80000000 {
		k.Entry -= 0xffffffff80000000
	}
	h := make([]byte, 0x280-offSetupSects)
	le := binary.LittleEndian
	le.PutUint16(h[offBootFlag-offSetupSects:], 0xaa55)
	le.PutUint32(h[offHeaderMagic-offSetupSects:], hdrSMagic)
	le.PutUint16(h[offVersion-offSetupSects:], 0x020f)
	le.PutUint32(h[offInitrdAddrMax-offSetupSects:], 0x7fffffff)
	le.PutUint32(h[offKernelAlign-offSetupSects:], 0x1000000)
	k.Header = h
	return k, nil
}

// LoadBzImage loads a bzImage's protected-mode kernel at 1 MiB and returns its 64-bit entry.
func LoadBzImage(mem *memory.GuestMemory, r io.ReaderAt, size int64) (*Kernel, error) {
	if size < 0x270 {
		return nil, fmt.Errorf("boot: kernel image of %d bytes is neither ELF nor bzImage", size)
	}
	image := make([]byte, min(size, 0x10000)) // boot sector + setup header (setup is at most 64 sectors)
	if _, err := r.ReadAt(image, 0); err != nil && err != io.EOF {
		return nil, fmt.Errorf("boot: read bzImage header: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint32(image[offHeaderMagic:]) != hdrSMagic || le.Uint16(image[offBootFlag:]) != 0xaa55 {
		return nil, fmt.Errorf("boot: kernel image is neither ELF nor bzImage (no HdrS magic)")
	}
	if v := le.Uint16(image[offVersion:]); v < 0x020c {
		return nil, fmt.Errorf("boot: bzImage boot protocol %#x too old, need 2.12+", v)
	}
	if le.Uint16(image[offXLoadFlags:])&xlfKernel64 == 0 {
		return nil, fmt.Errorf("boot: bzImage has no 64-bit entry point (XLF_KERNEL_64)")
	}
	setupSects := int(image[offSetupSects])
	if setupSects == 0 {
		setupSects = 4
	}
	pmOff := int64(setupSects+1) * 512
	if pmOff >= size {
		return nil, fmt.Errorf("boot: bzImage truncated: setup of %d sectors, file %d bytes", setupSects, size)
	}
	pmSize := uint64(size - pmOff)
	total := pmSize
	if is := uint64(le.Uint32(image[offInitSize:])); is > total {
		total = is
	}
	if _, err := mem.Slice(layout.KernelLoadAddr, total); err != nil {
		return nil, fmt.Errorf("boot: bzImage needs %#x bytes at 1 MiB (give the VM more memory): %w", total, err)
	}
	if err := place(mem, r, pmOff, layout.KernelLoadAddr, pmSize); err != nil {
		return nil, fmt.Errorf("boot: bzImage payload: %w", err)
	}
	hdrEnd := 0x202 + int(image[0x201])
	if hdrEnd > len(image) || hdrEnd < offHeaderMagic {
		return nil, fmt.Errorf("boot: bzImage setup header length invalid")
	}
	return &Kernel{
		Entry:  layout.KernelLoadAddr + 0x200,
		Header: append([]byte(nil), image[offSetupSects:hdrEnd]...),
		End:    layout.KernelLoadAddr + total,
		Format: "bzimage",
	}, nil
}

// Params are the inputs of the zero page.
type Params struct {
	Kernel     *Kernel
	Cmdline    string
	InitrdAddr uint64
	InitrdSize uint64
	E820       []E820Entry
	RSDP       uint64 // 0 = none
}

// InitrdMax is the highest address (exclusive) an initrd may end at for this kernel.
func (k *Kernel) InitrdMax() uint64 {
	if len(k.Header) > offInitrdAddrMax-offSetupSects+4 {
		if m := binary.LittleEndian.Uint32(k.Header[offInitrdAddrMax-offSetupSects:]); m != 0 {
			return uint64(m) + 1
		}
	}
	return 0x38000000
}

// LoadInitrd puts an initrd of size bytes from r (mapped when r is an *os.File) at the top of the low RAM region that contains the
// kernel, below the kernel's initrd_addr_max and above the kernel, page aligned. It returns the address.
func LoadInitrd(mem *memory.GuestMemory, k *Kernel, r io.ReaderAt, size int64) (uint64, error) {
	if size <= 0 {
		return 0, nil
	}
	var top uint64
	for _, reg := range mem.Regions() {
		if reg.GPA <= layout.HighMemStart && reg.End() > layout.HighMemStart {
			top = reg.End()
		}
	}
	if m := k.InitrdMax(); top > m {
		top = m
	}
	n := uint64(size)
	if n > top || (top-n)&^0xfff < k.End {
		return 0, fmt.Errorf("boot: initrd of %d bytes does not fit between the kernel end %#x and %#x (give the VM more memory)", n, k.End, top)
	}
	addr := (top - n) &^ 0xfff
	if err := place(mem, r, 0, addr, n); err != nil {
		return 0, fmt.Errorf("boot: initrd: %w", err)
	}
	return addr, nil
}

// place puts n bytes of r, from offset off, at guest address gpa: mapped from the file where it can be (an
// *os.File), read otherwise.
func place(mem *memory.GuestMemory, r io.ReaderAt, off int64, gpa, n uint64) error {
	if f, ok := r.(*os.File); ok {
		_, err := mem.LoadFile(gpa, f, off, n)
		return err
	}
	dst, err := mem.Slice(gpa, n)
	if err != nil {
		return err
	}
	if got, err := r.ReadAt(dst, off); err != nil && !(err == io.EOF && uint64(got) == n) {
		return fmt.Errorf("read %d bytes at offset %d (got %d): %w", n, off, got, err)
	}
	return nil
}

// E820Map builds the e820 map for the given RAM regions: low RAM below the EBDA, the BIOS area reserved,
// and RAM from 1 MiB.
func E820Map(mem *memory.GuestMemory) []E820Entry {
	var out []E820Entry
	for _, r := range mem.Regions() {
		start, end := r.GPA, r.End()
		if start < layout.EBDAStart {
			e := min(end, uint64(layout.EBDAStart))
			out = append(out, E820Entry{start, e - start, E820RAM})
		}
		if end > layout.HighMemStart {
			s := max(start, uint64(layout.HighMemStart))
			out = append(out, E820Entry{s, end - s, E820RAM})
		}
	}
	return out
}

// WriteZeroPage writes the kernel command line and boot_params into guest memory.
func WriteZeroPage(mem *memory.GuestMemory, p Params) error {
	if len(p.Cmdline)+1 > layout.CmdlineMax {
		return fmt.Errorf("boot: kernel command line of %d bytes exceeds %d", len(p.Cmdline), layout.CmdlineMax-1)
	}
	if len(p.E820) > maxE820 {
		return fmt.Errorf("boot: %d e820 entries exceed %d", len(p.E820), maxE820)
	}
	if _, err := mem.WriteAt(append([]byte(p.Cmdline), 0), layout.CmdlineAddr); err != nil {
		return fmt.Errorf("boot: write command line: %w", err)
	}
	zp := make([]byte, ZeroPageSize)
	copy(zp[offSetupSects:], p.Kernel.Header)
	le := binary.LittleEndian
	zp[offTypeOfLoader] = 0xff
	zp[offLoadFlags] |= loadedHigh | canUseHeap
	le.PutUint16(zp[offHeapEnd:], 0xfe00)
	le.PutUint32(zp[offCmdLinePtr:], uint32(layout.CmdlineAddr))
	le.PutUint32(zp[offExtCmdline:], uint32(uint64(layout.CmdlineAddr)>>32))
	le.PutUint32(zp[offCmdlineSize:], uint32(len(p.Cmdline)))
	le.PutUint32(zp[offRamdiskImage:], uint32(p.InitrdAddr))
	le.PutUint32(zp[offExtRamdiskImg:], uint32(p.InitrdAddr>>32))
	le.PutUint32(zp[offRamdiskSize:], uint32(p.InitrdSize))
	le.PutUint32(zp[offExtRamdiskSize:], uint32(p.InitrdSize>>32))
	le.PutUint64(zp[offACPIRSDP:], p.RSDP)
	zp[offE820Entries] = byte(len(p.E820))
	for i, e := range p.E820 {
		o := offE820Table + 20*i
		le.PutUint64(zp[o:], e.Addr)
		le.PutUint64(zp[o+8:], e.Size)
		le.PutUint32(zp[o+16:], e.Type)
	}
	if _, err := mem.WriteAt(zp, layout.ZeroPageAddr); err != nil {
		return fmt.Errorf("boot: write zero page: %w", err)
	}
	return nil
}
