package boot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/kvirt/kvirt/vmm/kvm"
	"github.com/kvirt/kvirt/vmm/layout"
	"github.com/kvirt/kvirt/vmm/memory"
)

func load(mem *memory.GuestMemory, img []byte) (*Kernel, error) {
	return LoadKernel(mem, bytes.NewReader(img), int64(len(img)))
}

func newMem(t *testing.T, size uint64) *memory.GuestMemory {
	t.Helper()
	m, err := memory.New([][2]uint64{{0, size}}, memory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// tinyELF builds a minimal ELF64 x86-64 executable with one PT_LOAD segment at paddr.
func tinyELF(paddr uint64, code []byte, memsz uint64) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	h := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: 1, Entry: paddr,
		Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: 1}
	copy(h.Ident[:], "\x7fELF")
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA], h.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	binary.Write(&b, le, h)
	p := elf.Prog64{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Off: 0x1000, Vaddr: paddr, Paddr: paddr,
		Filesz: uint64(len(code)), Memsz: memsz, Align: 0x1000}
	binary.Write(&b, le, p)
	b.Write(make([]byte, 0x1000-b.Len()))
	b.Write(code)
	return b.Bytes()
}

func TestLoadELF(t *testing.T) {
	mem := newMem(t, 32<<20)
	k, err := load(mem, tinyELF(0x1000000, []byte{1, 2, 3, 4}, 0x10))
	if err != nil {
		t.Fatal(err)
	}
	if k.Entry != 0x1000000 || k.End != 0x1000010 || k.Format != "elf" {
		t.Fatalf("kernel %+v", k)
	}
	got := make([]byte, 6)
	mem.ReadAt(got, 0x1000000)
	if !bytes.Equal(got, []byte{1, 2, 3, 4, 0, 0}) {
		t.Fatalf("segment contents % x", got)
	}
	if _, err := load(mem, tinyELF(0x1000, []byte{1}, 1)); err == nil {
		t.Fatal("segment below 1 MiB accepted")
	}
	if _, err := load(mem, tinyELF(0x3000000, []byte{1}, 1)); err == nil {
		t.Fatal("segment beyond RAM accepted")
	}
	if _, err := load(mem, []byte("not a kernel at all")); err == nil {
		t.Fatal("garbage accepted")
	}
}

func fakeBzImage(setupSects byte, payload []byte) []byte {
	img := make([]byte, (int(setupSects)+1)*512)
	le := binary.LittleEndian
	img[offSetupSects] = setupSects
	le.PutUint16(img[offBootFlag:], 0xaa55)
	img[0x200], img[0x201] = 0xeb, 0x66 // jmp: header ends at 0x202+0x66
	le.PutUint32(img[offHeaderMagic:], hdrSMagic)
	le.PutUint16(img[offVersion:], 0x020f)
	le.PutUint32(img[offInitrdAddrMax:], 0x7fffffff)
	le.PutUint16(img[offXLoadFlags:], xlfKernel64)
	le.PutUint32(img[offInitSize:], 0x10000)
	return append(img, payload...)
}

func TestLoadBzImage(t *testing.T) {
	mem := newMem(t, 32<<20)
	k, err := load(mem, fakeBzImage(4, []byte{9, 8, 7}))
	if err != nil {
		t.Fatal(err)
	}
	if k.Entry != layout.KernelLoadAddr+0x200 || k.End != layout.KernelLoadAddr+0x10000 || len(k.Header) != 0x202+0x66-offSetupSects {
		t.Fatalf("kernel %+v", k)
	}
	got := make([]byte, 3)
	mem.ReadAt(got, layout.KernelLoadAddr)
	if !bytes.Equal(got, []byte{9, 8, 7}) {
		t.Fatal("payload not at 1 MiB")
	}
	old := fakeBzImage(4, nil)
	binary.LittleEndian.PutUint16(old[offXLoadFlags:], 0)
	if _, err := load(mem, old); err == nil {
		t.Fatal("bzImage without 64-bit entry accepted")
	}
}

func TestZeroPageAndE820(t *testing.T) {
	mem := newMem(t, 64<<20)
	e := E820Map(mem)
	want := []E820Entry{{0, layout.EBDAStart, E820RAM}, {layout.HighMemStart, 64<<20 - layout.HighMemStart, E820RAM}}
	if len(e) != 2 || e[0] != want[0] || e[1] != want[1] {
		t.Fatalf("e820 %+v", e)
	}
	k, err := load(mem, tinyELF(0x1000000, []byte{0x90}, 0x200000))
	if err != nil {
		t.Fatal(err)
	}
	initrd := bytes.Repeat([]byte{0x5a}, 5000)
	ia, err := LoadInitrd(mem, k, bytes.NewReader(initrd), int64(len(initrd)))
	if err != nil {
		t.Fatal(err)
	}
	if ia%4096 != 0 || ia+5000 > 64<<20 || ia < k.End {
		t.Fatalf("initrd at %#x", ia)
	}
	if err := WriteZeroPage(mem, Params{Kernel: k, Cmdline: "console=ttyS0", InitrdAddr: ia, InitrdSize: 5000, E820: e, RSDP: 0xe0000}); err != nil {
		t.Fatal(err)
	}
	zp := make([]byte, ZeroPageSize)
	mem.ReadAt(zp, layout.ZeroPageAddr)
	le := binary.LittleEndian
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"boot_flag", uint64(le.Uint16(zp[offBootFlag:])), 0xaa55},
		{"HdrS", uint64(le.Uint32(zp[offHeaderMagic:])), hdrSMagic},
		{"type_of_loader", uint64(zp[offTypeOfLoader]), 0xff},
		{"cmd_line_ptr", uint64(le.Uint32(zp[offCmdLinePtr:])), layout.CmdlineAddr},
		{"cmdline_size", uint64(le.Uint32(zp[offCmdlineSize:])), uint64(len("console=ttyS0"))},
		{"ramdisk_image", uint64(le.Uint32(zp[offRamdiskImage:])), ia},
		{"ramdisk_size", uint64(le.Uint32(zp[offRamdiskSize:])), 5000},
		{"acpi_rsdp_addr", le.Uint64(zp[offACPIRSDP:]), 0xe0000},
		{"e820_entries", uint64(zp[offE820Entries]), 2},
		{"e820[1].addr", le.Uint64(zp[offE820Table+20:]), layout.HighMemStart},
		{"e820[1].type", uint64(le.Uint32(zp[offE820Table+20+16:])), E820RAM},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	cl := make([]byte, 14)
	mem.ReadAt(cl, layout.CmdlineAddr)
	if string(cl) != "console=ttyS0\x00" {
		t.Fatalf("cmdline %q", cl)
	}
	if err := WriteZeroPage(mem, Params{Kernel: k, Cmdline: string(make([]byte, layout.CmdlineMax))}); err == nil {
		t.Fatal("oversized command line accepted")
	}
	if _, err := LoadInitrd(mem, k, bytes.NewReader(nil), 63<<20); err == nil {
		t.Fatal("initrd overlapping the kernel accepted")
	}
}

func TestBootTables(t *testing.T) {
	mem := newMem(t, 16<<20)
	if err := WriteBootTables(mem); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	mem.ReadAt(b, layout.PML4Addr)
	if binary.LittleEndian.Uint64(b) != layout.PDPTAddr|3 {
		t.Fatal("PML4[0]")
	}
	mem.ReadAt(b, layout.PDAddr+8*513) // second PD, entry 1: 1 GiB + 2 MiB
	if binary.LittleEndian.Uint64(b) != (1<<30+2<<20)|0x83 {
		t.Fatalf("PD entry %#x", binary.LittleEndian.Uint64(b))
	}
	g := GDT()
	if s := segment(g[1], SelCode); s.L != 1 || s.Present != 1 || s.Type != 0xb || s.Limit != 0xffffffff {
		t.Fatalf("code segment %+v", s)
	}
}

func FuzzLoadKernel(f *testing.F) {
	f.Add(fakeBzImage(4, []byte{1}))
	f.Add(tinyELF(0x100000, []byte{1}, 1))
	f.Add(pvhELF([]byte{0x80, 0x06, 0x00, 0x01}))
	f.Fuzz(func(t *testing.T, img []byte) {
		mem, err := memory.New([][2]uint64{{0, 4 << 20}}, memory.Options{})
		if err != nil {
			t.Skip()
		}
		defer mem.Close()
		_, _ = load(mem, img)
	})
}

// TestLoadFromFiles loads a kernel and an initrd from files, whose page-aligned parts are mapped rather than
// read: guest memory must hold the same bytes as a copy would, with the bss and the rest of the page zero.
func TestLoadFromFiles(t *testing.T) {
	code := make([]byte, 3*4096+5)
	for i := range code {
		code[i] = byte(i%251 + 1)
	}
	dir := t.TempDir()
	kpath, ipath := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd")
	initrd := bytes.Repeat([]byte("initramfs"), 3000)
	if err := os.WriteFile(kpath, tinyELF(0x1000000, code, uint64(len(code))+0x3000), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ipath, initrd, 0o444); err != nil {
		t.Fatal(err)
	}
	kf, err := os.Open(kpath)
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Close()
	fi, _ := kf.Stat()
	mem := newMem(t, 64<<20)
	k, err := LoadKernel(mem, kf, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(code)+0x3000)
	if _, err := mem.ReadAt(got, 0x1000000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(code)], code) || !bytes.Equal(got[len(code):], make([]byte, 0x3000)) {
		t.Fatal("kernel segment or its bss differs from the file")
	}
	inf, err := os.Open(ipath)
	if err != nil {
		t.Fatal(err)
	}
	defer inf.Close()
	addr, err := LoadInitrd(mem, k, inf, int64(len(initrd)))
	if err != nil {
		t.Fatal(err)
	}
	gotI := make([]byte, len(initrd))
	if _, err := mem.ReadAt(gotI, int64(addr)); err != nil || !bytes.Equal(gotI, initrd) {
		t.Fatalf("initrd at %#x differs from the file (%v)", addr, err)
	}
}

// pvhELF is tinyELF with a PT_NOTE segment holding a Xen PHYS32_ENTRY note whose value is desc.
func pvhELF(desc []byte) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	h := elf.Header64{Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: 1, Entry: 0x1000000,
		Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: 2}
	copy(h.Ident[:], "\x7fELF")
	h.Ident[elf.EI_CLASS], h.Ident[elf.EI_DATA], h.Ident[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	binary.Write(&b, le, h)
	var note bytes.Buffer
	binary.Write(&note, le, [3]uint32{4, uint32(len(desc)), 18})
	note.WriteString("Xen\x00")
	note.Write(desc)
	note.Write(make([]byte, (4-len(desc)%4)%4))
	binary.Write(&b, le, elf.Prog64{Type: uint32(elf.PT_LOAD), Off: 0x1000, Paddr: 0x1000000, Filesz: 4, Memsz: 4, Align: 0x1000})
	binary.Write(&b, le, elf.Prog64{Type: uint32(elf.PT_NOTE), Off: 0x800, Filesz: uint64(note.Len()), Memsz: uint64(note.Len()), Align: 4})
	b.Write(make([]byte, 0x800-b.Len()))
	b.Write(note.Bytes())
	b.Write(make([]byte, 0x1000-b.Len()))
	b.Write([]byte{0x90, 0x90, 0x90, 0x90})
	return b.Bytes()
}

func TestPVHEntryNote(t *testing.T) {
	for _, tc := range []struct {
		desc    []byte
		want    uint32
		wantErr bool
	}{
		{[]byte{0x80, 0x06, 0x00, 0x01}, 0x1000680, false},
		{[]byte{0x80, 0x06, 0x00, 0x01, 0, 0, 0, 0}, 0x1000680, false},
		{[]byte{0x80, 0x06, 0x00, 0x01, 0, 0, 0, 1}, 0, true},
		{[]byte{1, 2}, 0, true},
	} {
		k, err := load(newMem(t, 32<<20), pvhELF(tc.desc))
		if tc.wantErr {
			if err == nil {
				t.Errorf("note % x accepted", tc.desc)
			}
			continue
		}
		if err != nil || k.PVHEntry != tc.want {
			t.Errorf("note % x: entry %#x, %v; want %#x", tc.desc, k.PVHEntry, err, tc.want)
		}
	}
	k, err := load(newMem(t, 32<<20), tinyELF(0x1000000, []byte{1}, 1))
	if err != nil || k.PVHEntry != 0 {
		t.Fatalf("kernel without notes: entry %#x, %v", k.PVHEntry, err)
	}
}

func TestWritePVHStartInfo(t *testing.T) {
	mem := newMem(t, 64<<20)
	e820 := E820Map(mem)
	if err := WritePVHStartInfo(mem, Params{InitrdAddr: 0x3000000, InitrdSize: 0x1234, E820: e820, RSDP: 0xe0000}); err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	si := make([]byte, 56)
	mem.ReadAt(si, layout.PVHStartInfo)
	if le.Uint32(si) != 0x336ec578 || le.Uint32(si[4:]) != 1 || le.Uint32(si[12:]) != 1 || le.Uint64(si[24:]) != layout.CmdlineAddr ||
		le.Uint64(si[32:]) != 0xe0000 || le.Uint64(si[40:]) != layout.PVHMemmap || le.Uint32(si[48:]) != uint32(len(e820)) {
		t.Fatalf("hvm_start_info % x", si)
	}
	mod := make([]byte, 32)
	mem.ReadAt(mod, int64(le.Uint64(si[16:])))
	if le.Uint64(mod) != 0x3000000 || le.Uint64(mod[8:]) != 0x1234 {
		t.Fatalf("module % x", mod)
	}
	last := make([]byte, 24)
	mem.ReadAt(last, int64(layout.PVHMemmap+24*(len(e820)-1)))
	if l := e820[len(e820)-1]; le.Uint64(last) != l.Addr || le.Uint64(last[8:]) != l.Size || le.Uint32(last[16:]) != E820RAM {
		t.Fatalf("memmap entry % x, want %+v", last, l)
	}
	if err := WritePVHStartInfo(mem, Params{E820: make([]E820Entry, PVHMaxMemmap+1)}); err == nil {
		t.Fatal("oversized memory map accepted")
	}
	var s kvm.Sregs
	PVHSregs(&s)
	if s.CS.L != 0 || s.CS.DB != 1 || s.CS.Type != 0xb || s.CS.Limit != 0xffffffff || s.CR0&CR0PG != 0 || s.EFER&EFERLME != 0 {
		t.Fatalf("PVH sregs %+v", s)
	}
}
