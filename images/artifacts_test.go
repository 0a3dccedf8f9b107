package images

import (
	"bufio"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"

	"github.com/kvirt/kvirt/tests/testenv"
)

// pvhEntry returns the XEN_ELFNOTE_PHYS32_ENTRY (type 18, name "Xen") address in f's PT_NOTE segments.
func pvhEntry(f *elf.File) (uint64, bool) {
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			return 0, false
		}
		for len(b) >= 12 {
			namesz := binary.LittleEndian.Uint32(b[0:])
			descsz := binary.LittleEndian.Uint32(b[4:])
			typ := binary.LittleEndian.Uint32(b[8:])
			off := 12 + int(namesz+3)&^3
			end := off + int(descsz+3)&^3
			if end > len(b) || off > len(b) || namesz > 64 {
				break
			}
			if typ == 18 && namesz == 4 && string(b[12:15]) == "Xen" {
				switch descsz {
				case 4:
					return uint64(binary.LittleEndian.Uint32(b[off:])), true
				case 8:
					return binary.LittleEndian.Uint64(b[off:]), true
				}
			}
			b = b[end:]
		}
	}
	return 0, false
}

// The test guest's shape is the contract with the VMM's ELF loader (images/README.md): ELF64 x86-64, one
// PT_LOAD at physical 0x100000 entered at 0x100000, and a PVH note for QEMU.
func TestTestGuestELF(t *testing.T) {
	f, err := elf.Open(testenv.Image(t, TestGuest))
	if err != nil {
		t.Fatalf("open test guest: %v (rebuild with `just images`)", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Fatalf("test guest is %v %v %v, want ELFCLASS64 EM_X86_64 ET_EXEC", f.Class, f.Machine, f.Type)
	}
	if f.Entry != 0x100000 {
		t.Errorf("entry %#x, want 0x100000", f.Entry)
	}
	var loads []*elf.Prog
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD {
			loads = append(loads, p)
		}
	}
	if len(loads) != 1 || loads[0].Paddr != 0x100000 || loads[0].Vaddr != 0x100000 {
		t.Fatalf("want one PT_LOAD at 0x100000, got %d (first %+v)", len(loads), loads[0].ProgHeader)
	}
	if end := loads[0].Paddr + loads[0].Memsz; end > 1<<30 {
		t.Errorf("image ends at %#x, beyond the 1 GiB the VMM identity-maps", end)
	}
	entry, ok := pvhEntry(f)
	if !ok || entry < loads[0].Paddr || entry >= loads[0].Paddr+loads[0].Filesz {
		t.Errorf("PVH entry note: %#x, %v; want an address inside the image", entry, ok)
	}
}

// vmlinux must be an ELF64 with a PVH note and physical load addresses, as the VMM loads it.
func TestVmlinuxELF(t *testing.T) {
	f, err := elf.Open(testenv.Image(t, Vmlinux))
	if err != nil {
		t.Fatalf("open vmlinux: %v (rebuild with `just images`)", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		t.Fatalf("vmlinux is %v %v, want ELFCLASS64 EM_X86_64", f.Class, f.Machine)
	}
	if _, ok := pvhEntry(f); !ok {
		t.Errorf("vmlinux has no PVH (XEN_ELFNOTE_PHYS32_ENTRY) note: is CONFIG_PVH set?")
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Paddr >= 1<<32 {
			t.Errorf("PT_LOAD with physical address %#x: vmlinux is not loadable at a fixed low address", p.Paddr)
		}
	}
}

// initramfs.cpio must be an uncompressed newc archive (the kernel is built without decompressors) whose
// /init is an executable.
func TestInitramfsCpio(t *testing.T) {
	fh, err := os.Open(testenv.Image(t, Initramfs))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r := bufio.NewReader(fh)
	found := map[string]uint64{}
	for i := 0; i < 10000; i++ {
		name, mode, err := nextCpioEntry(r)
		if err != nil {
			t.Fatalf("entry %d: %v (is initramfs.cpio an uncompressed newc archive?)", i, err)
		}
		if name == "TRAILER!!!" {
			break
		}
		found[name] = mode
	}
	for _, name := range []string{"init", "bin/sh", "bbin/bb", "dev/console"} {
		if _, ok := found[name]; !ok {
			t.Errorf("initramfs has no %s", name)
		}
	}
	if mode := found["init"]; mode&0o170000 != 0o100000 || mode&0o111 == 0 {
		t.Errorf("/init mode %o, want an executable regular file", mode)
	}
}

// nextCpioEntry reads one newc header and skips the entry's data.
func nextCpioEntry(r *bufio.Reader) (string, uint64, error) {
	var hdr [110]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return "", 0, err
	}
	if string(hdr[:6]) != "070701" {
		return "", 0, fmt.Errorf("magic %q, want newc 070701", hdr[:6])
	}
	field := func(i int) (uint64, error) { return strconv.ParseUint(string(hdr[6+8*i:14+8*i]), 16, 32) }
	mode, err := field(1)
	if err != nil {
		return "", 0, err
	}
	size, err := field(6)
	if err != nil {
		return "", 0, err
	}
	namesize, err := field(11)
	if err != nil || namesize == 0 || namesize > 4096 {
		return "", 0, fmt.Errorf("bad name size %d (%v)", namesize, err)
	}
	name := make([]byte, (110+namesize+3)&^3-110)
	if _, err := io.ReadFull(r, name); err != nil {
		return "", 0, err
	}
	if _, err := r.Discard(int((size + 3) &^ 3)); err != nil {
		return "", 0, err
	}
	return string(name[:namesize-1]), mode, nil
}
