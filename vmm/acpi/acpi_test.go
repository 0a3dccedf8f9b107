package acpi

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func testConfig() Config {
	return Config{Addr: 0xe0000, CPUs: 2, LAPICAddr: 0xfee00000, IOAPICAddr: 0xfec00000, SCI: 9,
		PM1aEvt: 0x600, PM1aCnt: 0x604, PM1EvtLen: 4, PM1CntLen: 2, S5Type: 5, COM1: true,
		Virtio: []VirtioMMIO{{Base: 0xd0000000, Size: 0x200, GSI: 5}}}
}

func sum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

func TestBuildChecksumsAndLinks(t *testing.T) {
	img, rsdp, err := Build(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	at := func(addr uint64) []byte { return img[addr-rsdp:] }
	r := at(rsdp)[:36]
	if string(r[:8]) != "RSD PTR " || sum(r[:20]) != 0 || sum(r) != 0 {
		t.Fatal("RSDP signature or checksums wrong")
	}
	le := binary.LittleEndian
	table := func(addr uint64, sig string) []byte {
		t.Helper()
		b := at(addr)
		if string(b[:4]) != sig {
			t.Fatalf("table at %#x is %q, want %s", addr, b[:4], sig)
		}
		tb := b[:le.Uint32(b[4:])]
		if sum(tb) != 0 {
			t.Fatalf("%s checksum wrong", sig)
		}
		return tb
	}
	x := table(le.Uint64(r[24:]), "XSDT")
	if len(x) != 36+16 {
		t.Fatalf("XSDT has %d bytes", len(x))
	}
	f := table(le.Uint64(x[36:]), "FACP")
	if len(f) != 276 || le.Uint16(f[46:]) != 9 || le.Uint32(f[56:]) != 0x600 || le.Uint32(f[64:]) != 0x604 {
		t.Fatal("FADT fields wrong")
	}
	if f[112+0]&(1<<4) != 0 {
		t.Fatal("FADT must announce a fixed power button")
	}
	d := table(le.Uint64(f[140:]), "DSDT")
	if !bytes.Contains(d, []byte("_S5_")) || !bytes.Contains(d, []byte("LNRO0005")) {
		t.Fatal("DSDT lacks _S5_ or the virtio device")
	}
	if le.Uint32(f[36:]) != 0 || le.Uint32(f[40:]) != 0 {
		t.Fatal("32-bit FIRMWARE_CTRL/DSDT must be zero when the X_ fields are set")
	}
	if string(at(le.Uint64(f[132:]))[:4]) != "FACS" || le.Uint64(f[132:])%64 != 0 {
		t.Fatal("FACS missing or misaligned")
	}
	m := table(le.Uint64(x[44:]), "APIC")
	if len(m) != 44+2*8+12+10 {
		t.Fatalf("MADT length %d", len(m))
	}
}

func TestAML(t *testing.T) {
	// Name(\_S5_, Package(){5,5,0,0}) as iasl emits it.
	want := []byte{0x08, '\\', '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00}
	if got := AMLName("\\_S5_", AMLPackage(AMLInteger(5), AMLInteger(5), AMLInteger(0), AMLInteger(0))); !bytes.Equal(got, want) {
		t.Fatalf("_S5_ = % x\nwant   % x", got, want)
	}
	if got := EISAID("PNP0501"); got != 0x0105d041 {
		t.Fatalf("EISAID = %#x", got)
	}
	for _, c := range []struct {
		n    int
		want []byte
	}{{0, []byte{1}}, {62, []byte{63}}, {63, []byte{0x41, 0x04}}, {4093, []byte{0x4f, 0xff}}, {4094, []byte{0x81, 0x00, 0x01}}} {
		if got := pkgLength(c.n); !bytes.Equal(got, c.want) {
			t.Errorf("pkgLength(%d) = % x want % x", c.n, got, c.want)
		}
	}
	// Device with a long body uses a 2-byte PkgLength that counts itself.
	d := AMLDevice("TEST", make([]byte, 100))
	if d[2] != 0x40|byte((100+4+2)&0xf) || d[3] != byte((100+4+2)>>4) {
		t.Fatalf("device pkglength % x", d[:4])
	}
	if len(d) != 2+2+4+100 {
		t.Fatalf("device length %d", len(d))
	}
}
