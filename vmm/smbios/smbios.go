// Package smbios builds the SMBIOS 3.0 tables the guest reads as DMI: BIOS information (type 0) and
// system information (type 1) carrying the firmware UUID and serial number KubeVirt exposes
// (/sys/class/dmi/id/product_uuid, product_serial).
package smbios

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// Info is what the guest sees.
type Info struct {
	Manufacturer string // default "KubeVirt"
	Product      string // default "None"
	Version      string
	Serial       string
	UUID         string // canonical 8-4-4-4-12 form; empty = all zero
	Family       string // default "KubeVirt"
}

// ParseUUID parses a canonical UUID into SMBIOS byte order (first three fields little-endian).
func ParseUUID(s string) ([16]byte, error) {
	var u [16]byte
	if s == "" {
		return u, nil
	}
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 || len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, fmt.Errorf("smbios: UUID %q is not in 8-4-4-4-12 form", s)
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return u, fmt.Errorf("smbios: UUID %q: %w", s, err)
	}
	copy(u[:], b)
	u[0], u[1], u[2], u[3] = b[3], b[2], b[1], b[0]
	u[4], u[5] = b[5], b[4]
	u[6], u[7] = b[7], b[6]
	return u, nil
}

func structure(typ byte, handle uint16, formatted []byte, strs ...string) []byte {
	b := []byte{typ, byte(4 + len(formatted))}
	b = binary.LittleEndian.AppendUint16(b, handle)
	b = append(b, formatted...)
	n := 0
	for _, s := range strs {
		if s != "" {
			b = append(append(b, s...), 0)
			n++
		}
	}
	if n == 0 {
		b = append(b, 0)
	}
	return append(b, 0)
}

// strIdx numbers the non-empty strings in order (0 for an empty one).
func strIdx(strs ...string) []byte {
	out := make([]byte, len(strs))
	n := byte(0)
	for i, s := range strs {
		if s != "" {
			n++
			out[i] = n
		}
	}
	return out
}

// Build returns the entry point followed by the structure table, to be copied to addr (16-byte aligned,
// in 0xF0000-0xFFFFF where Linux scans for it).
func Build(info Info, addr uint64) ([]byte, error) {
	if info.Manufacturer == "" {
		info.Manufacturer = "KubeVirt"
	}
	if info.Product == "" {
		info.Product = "None"
	}
	if info.Family == "" {
		info.Family = "KubeVirt"
	}
	uuid, err := ParseUUID(info.UUID)
	if err != nil {
		return nil, err
	}
	for _, s := range []string{info.Manufacturer, info.Product, info.Version, info.Serial, info.Family} {
		if len(s) > 64 || strings.ContainsRune(s, 0) {
			return nil, fmt.Errorf("smbios: string %q too long or contains NUL", s)
		}
	}
	// Type 0: vendor, version, release date.
	bi := strIdx("kvirt", "1.0", "01/01/2026")
	t0 := []byte{bi[0], bi[1], 0x00, 0xe8, bi[2], 0x00}
	t0 = binary.LittleEndian.AppendUint64(t0, 1<<3) // characteristics not supported
	t0 = append(t0, 0x00, 0x08, 1, 0, 0xff, 0xff)   // ext: virtual machine; release 1.0; no EC
	table := structure(0, 0, t0, "kvirt", "1.0", "01/01/2026")
	// Type 1.
	si := strIdx(info.Manufacturer, info.Product, info.Version, info.Serial, "", info.Family)
	t1 := []byte{si[0], si[1], si[2], si[3]}
	t1 = append(t1, uuid[:]...)
	t1 = append(t1, 6, si[4], si[5]) // wake-up: power switch
	table = append(table, structure(1, 1, t1, info.Manufacturer, info.Product, info.Version, info.Serial, "", info.Family)...)
	table = append(table, structure(127, 2, nil)...)
	// SMBIOS 3.0 entry point (24 bytes), table right after it.
	ep := make([]byte, 24)
	copy(ep, "_SM3_")
	ep[6] = 24
	ep[7], ep[8], ep[9] = 3, 2, 0
	ep[10] = 1
	binary.LittleEndian.PutUint32(ep[12:], uint32(len(table)))
	binary.LittleEndian.PutUint64(ep[16:], addr+32)
	var s byte
	for _, c := range ep {
		s += c
	}
	ep[5] = -s
	out := append(ep, make([]byte, 8)...)
	return append(out, table...), nil
}
