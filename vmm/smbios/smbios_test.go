package smbios

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestBuild(t *testing.T) {
	b, err := Build(Info{UUID: "12345678-9abc-def0-1122-334455667788", Serial: "S-1"}, 0xf0000)
	if err != nil {
		t.Fatal(err)
	}
	var s byte
	for _, c := range b[:24] {
		s += c
	}
	if string(b[:5]) != "_SM3_" || s != 0 {
		t.Fatal("entry point bad")
	}
	if binary.LittleEndian.Uint64(b[16:]) != 0xf0000+32 {
		t.Fatal("table address")
	}
	tab := b[32:]
	if int(binary.LittleEndian.Uint32(b[12:])) != len(tab) {
		t.Fatal("table length")
	}
	want := []byte{0x78, 0x56, 0x34, 0x12, 0xbc, 0x9a, 0xf0, 0xde, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}
	if !bytes.Contains(tab, want) || !bytes.Contains(tab, []byte("S-1\x00")) {
		t.Fatal("UUID or serial missing")
	}
	if !bytes.HasSuffix(tab, []byte{127, 4, 2, 0, 0, 0}) {
		t.Fatal("end-of-table structure missing")
	}
	if _, err := Build(Info{UUID: "nope"}, 0); err == nil {
		t.Fatal("bad uuid accepted")
	}
}
