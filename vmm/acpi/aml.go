// Package acpi builds the ACPI tables kvirt's guests boot with: RSDP, XSDT, FADT (PM1a event/control
// blocks, SCI), FACS, MADT (one local APIC per vCPU, the IOAPIC, the SCI override) and a minimal DSDT
// (the \_S5 sleep package, COM1 and virtio-mmio devices). The AML is kept small because guests on
// interpreted hosts (PVM) pay for every opcode ACPICA walks.
package acpi

import (
	"encoding/binary"
	"fmt"
)

// AML opcodes used here.
const (
	amlZero       = 0x00
	amlOne        = 0x01
	amlName       = 0x08
	amlBytePrefix = 0x0a
	amlWordPrefix = 0x0b
	amlDWordPref  = 0x0c
	amlString     = 0x0d
	amlScope      = 0x10
	amlBuffer     = 0x11
	amlPackage    = 0x12
	amlExtPrefix  = 0x5b
	amlDevice     = 0x82
)

// pkgLength encodes an AML PkgLength for a body of n bytes (the length counts itself).
func pkgLength(n int) []byte {
	if n+1 < 0x40 {
		return []byte{byte(n + 1)}
	}
	for k := 1; k <= 3; k++ {
		total := n + 1 + k
		if total < 1<<(4+8*k) {
			b := []byte{byte(k<<6) | byte(total&0xf)}
			for i := 0; i < k; i++ {
				b = append(b, byte(total>>(4+8*i)))
			}
			return b
		}
	}
	panic("acpi: AML package too large") // unreachable for the tables we build (< 256 MiB)
}

// nameSeg validates a 4-character AML name segment.
func nameSeg(s string) []byte {
	if len(s) != 4 {
		panic(fmt.Sprintf("acpi: name segment %q must be 4 characters", s))
	}
	return []byte(s)
}

// AMLInteger encodes an integer with the smallest prefix.
func AMLInteger(v uint64) []byte {
	switch {
	case v == 0:
		return []byte{amlZero}
	case v == 1:
		return []byte{amlOne}
	case v <= 0xff:
		return []byte{amlBytePrefix, byte(v)}
	case v <= 0xffff:
		return binary.LittleEndian.AppendUint16([]byte{amlWordPrefix}, uint16(v))
	case v <= 0xffffffff:
		return binary.LittleEndian.AppendUint32([]byte{amlDWordPref}, uint32(v))
	}
	return binary.LittleEndian.AppendUint64([]byte{0x0e}, v)
}

// AMLString encodes a string constant.
func AMLString(s string) []byte { return append(append([]byte{amlString}, s...), 0) }

// AMLName encodes Name(seg, value). seg may be a root path like "\\_S5_".
func AMLName(seg string, value []byte) []byte {
	b := []byte{amlName}
	if len(seg) == 5 && seg[0] == '\\' {
		b = append(b, '\\')
		seg = seg[1:]
	}
	return append(append(b, nameSeg(seg)...), value...)
}

// AMLPackage encodes Package(){elements...} of already encoded data objects.
func AMLPackage(elems ...[]byte) []byte {
	var body []byte
	body = append(body, byte(len(elems)))
	for _, e := range elems {
		body = append(body, e...)
	}
	return append(append([]byte{amlPackage}, pkgLength(len(body))...), body...)
}

// AMLBuffer encodes Buffer(){bytes}.
func AMLBuffer(data []byte) []byte {
	body := append(AMLInteger(uint64(len(data))), data...)
	return append(append([]byte{amlBuffer}, pkgLength(len(body))...), body...)
}

// AMLDevice encodes Device(seg){terms}.
func AMLDevice(seg string, terms ...[]byte) []byte {
	body := nameSeg(seg)
	for _, t := range terms {
		body = append(body, t...)
	}
	return append(append([]byte{amlExtPrefix, amlDevice}, pkgLength(len(body))...), body...)
}

// AMLScope encodes Scope(path){terms}; path is "\\" or "\\XXXX".
func AMLScope(path string, terms ...[]byte) []byte {
	body := []byte{'\\'}
	if path != "\\" {
		if len(path) != 5 || path[0] != '\\' {
			panic(fmt.Sprintf("acpi: unsupported scope path %q", path))
		}
		body = append(body, nameSeg(path[1:])...)
	}
	for _, t := range terms {
		body = append(body, t...)
	}
	return append(append([]byte{amlScope}, pkgLength(len(body))...), body...)
}

// EISAID compresses a PNP id like "PNP0501" into its 32-bit AML form.
func EISAID(id string) uint32 {
	if len(id) != 7 {
		panic(fmt.Sprintf("acpi: EISA id %q must be 7 characters", id))
	}
	c := func(i int) uint32 { return uint32(id[i]-'@') & 0x1f }
	hex := func(i int) uint32 {
		ch := id[i]
		switch {
		case ch >= '0' && ch <= '9':
			return uint32(ch - '0')
		case ch >= 'A' && ch <= 'F':
			return uint32(ch-'A') + 10
		}
		panic(fmt.Sprintf("acpi: EISA id %q has a non-hex digit", id))
	}
	v := c(0)<<26 | c(1)<<21 | c(2)<<16 | hex(3)<<12 | hex(4)<<8 | hex(5)<<4 | hex(6)
	// Stored big-endian in the AML integer.
	return v>>24 | (v>>8)&0xff00 | (v<<8)&0xff0000 | v<<24
}

// Resource descriptors for _CRS buffers.

// ResIO is an IO(Decode16, base, base, 1, length) descriptor.
func ResIO(base uint16, length uint8) []byte {
	return []byte{0x47, 0x01, byte(base), byte(base >> 8), byte(base), byte(base >> 8), 0x01, length}
}

// ResIRQNoFlags is an IRQNoFlags(){irq} descriptor (ISA edge, active high).
func ResIRQNoFlags(irq uint8) []byte {
	m := uint16(1) << (irq & 15)
	return []byte{0x22, byte(m), byte(m >> 8)}
}

// ResMemory32Fixed is a Memory32Fixed(ReadWrite, base, length) descriptor.
func ResMemory32Fixed(base, length uint32) []byte {
	b := []byte{0x86, 9, 0, 1}
	b = binary.LittleEndian.AppendUint32(b, base)
	return binary.LittleEndian.AppendUint32(b, length)
}

// ResInterrupt is an Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive){gsi} descriptor.
func ResInterrupt(gsi uint32) []byte {
	b := []byte{0x89, 6, 0, 0x03, 1}
	return binary.LittleEndian.AppendUint32(b, gsi)
}

// ResourceTemplate closes a list of descriptors with an end tag and wraps it in a Buffer.
func ResourceTemplate(descs ...[]byte) []byte {
	var b []byte
	for _, d := range descs {
		b = append(b, d...)
	}
	return AMLBuffer(append(b, 0x79, 0x00))
}
