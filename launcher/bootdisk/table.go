package bootdisk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"unicode/utf16"
)

// SectorSize is the logical sector size partition tables are read with (virtio-blk's, and every cloud image's).
const SectorSize = 512

// Limits that bound what a corrupt table can make the reader allocate or walk.
const (
	maxGPTEntries     = 1024
	maxGPTEntryBytes  = 4096
	maxLogicalEntries = 128 // MBR extended-partition chain
)

// Partition is one partition of the disk, numbered as Linux numbers them (vda1, vda2, ...; logical MBR
// partitions from 5). Index 0 is the whole disk (a filesystem without a partition table).
type Partition struct {
	Index  int
	Start  int64 // bytes from the start of the disk
	Size   int64 // bytes
	Type   string
	UUID   string // PARTUUID as Linux spells it: the GPT unique GUID, or MBR "SSSSSSSS-NN"
	Label  string // GPT partition name (PARTLABEL); empty for MBR
	Extent bool   // an MBR extended-partition container (holds no filesystem)
}

// Table is the disk's partition table.
type Table struct {
	// Kind is "gpt", "mbr" or "none" (the whole disk is one filesystem, or blank).
	Kind string
	// DiskID is the GPT disk GUID or the MBR disk signature ("%08x").
	DiskID     string
	Partitions []Partition
}

// ErrNoTable is wrapped by ReadTable when the disk has neither an MBR nor a GPT.
var ErrNoTable = errors.New("no partition table (MBR or GPT)")

// ReadTable reads the MBR or GPT partition table of a disk of size bytes. A disk with no table returns
// ErrNoTable (wrapped); a table that is there but inconsistent (bad CRC on both GPT copies, partitions beyond
// the disk, a looping extended-partition chain) returns an error saying what is wrong.
func ReadTable(r io.ReaderAt, size int64) (*Table, error) {
	if size < 2*SectorSize {
		return nil, fmt.Errorf("%w: the disk is only %d bytes", ErrNoTable, size)
	}
	var mbr [SectorSize]byte
	if err := readFull(r, mbr[:], 0); err != nil {
		return nil, fmt.Errorf("read the MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return nil, ErrNoTable
	}
	le := binary.LittleEndian
	protective := false
	for i := range 4 {
		if mbr[446+16*i+4] == 0xee {
			protective = true
		}
	}
	if protective {
		return readGPT(r, size)
	}
	// A FAT or NTFS boot sector also ends in 55 aa: an MBR's entries must be sane (status 0 or 0x80).
	t := &Table{Kind: "mbr", DiskID: fmt.Sprintf("%08x", le.Uint32(mbr[440:]))}
	sig := le.Uint32(mbr[440:])
	var ext *Partition
	for i := range 4 {
		e := mbr[446+16*i : 446+16*i+16]
		if e[0] != 0 && e[0] != 0x80 {
			return nil, ErrNoTable
		}
		typ, start, n := e[4], int64(le.Uint32(e[8:])), int64(le.Uint32(e[12:]))
		if typ == 0 || n == 0 {
			continue
		}
		p := Partition{Index: i + 1, Start: start * SectorSize, Size: n * SectorSize, Type: fmt.Sprintf("%#02x", typ),
			UUID: fmt.Sprintf("%08x-%02x", sig, i+1), Extent: isExtended(typ)}
		if err := p.check(size); err != nil {
			return nil, fmt.Errorf("MBR: %w", err)
		}
		t.Partitions = append(t.Partitions, p)
		if p.Extent {
			if ext != nil {
				return nil, fmt.Errorf("MBR: partitions %d and %d are both extended partitions", ext.Index, p.Index)
			}
			ext = &t.Partitions[len(t.Partitions)-1]
		}
	}
	if ext != nil {
		logical, err := readLogical(r, size, *ext, sig)
		if err != nil {
			return nil, err
		}
		t.Partitions = append(t.Partitions, logical...)
	}
	return t, nil
}

func isExtended(typ byte) bool { return typ == 0x05 || typ == 0x0f || typ == 0x85 }

func (p Partition) check(disk int64) error {
	if p.Start <= 0 || p.Size <= 0 || p.Start > disk || p.Size > disk-p.Start {
		return fmt.Errorf("partition %d (bytes %d to %d) does not fit the %d-byte disk: the partition table is corrupt or the image was truncated",
			p.Index, p.Start, p.Start+p.Size, disk)
	}
	return nil
}

// readLogical walks the chain of extended boot records inside the extended partition ext.
func readLogical(r io.ReaderAt, size int64, ext Partition, sig uint32) ([]Partition, error) {
	le := binary.LittleEndian
	var out []Partition
	next := int64(0) // offset of the next EBR relative to the extended partition
	seen := map[int64]bool{}
	for n := 0; ; n++ {
		if n >= maxLogicalEntries {
			return nil, fmt.Errorf("MBR: more than %d logical partitions: the extended-partition chain is corrupt", maxLogicalEntries)
		}
		if seen[next] {
			return nil, fmt.Errorf("MBR: the extended-partition chain loops back to offset %d", ext.Start+next)
		}
		seen[next] = true
		at := ext.Start + next
		if next < 0 || next >= ext.Size || at+SectorSize > size {
			return nil, fmt.Errorf("MBR: extended boot record at byte %d lies outside extended partition %d", at, ext.Index)
		}
		var ebr [SectorSize]byte
		if err := readFull(r, ebr[:], at); err != nil {
			return nil, fmt.Errorf("MBR: read the extended boot record at byte %d: %w", at, err)
		}
		if ebr[510] != 0x55 || ebr[511] != 0xaa {
			return nil, fmt.Errorf("MBR: the extended boot record at byte %d has no 55aa signature", at)
		}
		e := ebr[446:462]
		if typ, start, cnt := e[4], int64(le.Uint32(e[8:])), int64(le.Uint32(e[12:])); typ != 0 && cnt != 0 {
			idx := 5 + len(out)
			p := Partition{Index: idx, Start: at + start*SectorSize, Size: cnt * SectorSize, Type: fmt.Sprintf("%#02x", typ),
				UUID: fmt.Sprintf("%08x-%02x", sig, idx)}
			if err := p.check(size); err != nil {
				return nil, fmt.Errorf("MBR: %w", err)
			}
			out = append(out, p)
		}
		link := ebr[462:478]
		if link[4] == 0 || le.Uint32(link[12:]) == 0 {
			return out, nil
		}
		next = int64(le.Uint32(link[8:])) * SectorSize
	}
}

// readGPT reads the primary GPT header (LBA 1), or the backup (last LBA) when the primary is damaged.
func readGPT(r io.ReaderAt, size int64) (*Table, error) {
	t, perr := readGPTAt(r, size, 1)
	if perr == nil {
		return t, nil
	}
	t, berr := readGPTAt(r, size, size/SectorSize-1)
	if berr == nil {
		return t, nil
	}
	return nil, fmt.Errorf("GPT: primary header: %v; backup header: %v", perr, berr)
}

func readGPTAt(r io.ReaderAt, size int64, lba int64) (*Table, error) {
	var h [SectorSize]byte
	if err := readFull(r, h[:], lba*SectorSize); err != nil {
		return nil, fmt.Errorf("read LBA %d: %w", lba, err)
	}
	le := binary.LittleEndian
	if string(h[:8]) != "EFI PART" {
		return nil, fmt.Errorf("no \"EFI PART\" signature at LBA %d", lba)
	}
	hsize := le.Uint32(h[12:])
	if hsize < 92 || hsize > SectorSize {
		return nil, fmt.Errorf("header size %d is out of range", hsize)
	}
	want := le.Uint32(h[16:])
	c := h
	le.PutUint32(c[16:], 0)
	if got := crc32.ChecksumIEEE(c[:hsize]); got != want {
		return nil, fmt.Errorf("header CRC32 is %#08x, the header says %#08x", got, want)
	}
	entriesLBA, count, esize := int64(le.Uint64(h[72:])), le.Uint32(h[80:]), le.Uint32(h[84:])
	if count > maxGPTEntries || esize < 128 || esize > maxGPTEntryBytes || esize%8 != 0 {
		return nil, fmt.Errorf("%d entries of %d bytes: not a table this reader accepts (at most %d entries of 128..%d bytes)",
			count, esize, maxGPTEntries, maxGPTEntryBytes)
	}
	n := int64(count) * int64(esize)
	if entriesLBA < 0 || entriesLBA > size/SectorSize || n > size-entriesLBA*SectorSize {
		return nil, fmt.Errorf("the partition entries (LBA %d, %d bytes) lie beyond the disk", entriesLBA, n)
	}
	ents := make([]byte, n)
	if err := readFull(r, ents, entriesLBA*SectorSize); err != nil {
		return nil, fmt.Errorf("read the partition entries: %w", err)
	}
	if got := crc32.ChecksumIEEE(ents); got != le.Uint32(h[88:]) {
		return nil, fmt.Errorf("partition entries CRC32 is %#08x, the header says %#08x", got, le.Uint32(h[88:]))
	}
	t := &Table{Kind: "gpt", DiskID: guidString(h[56:72])}
	for i := range int(count) {
		e := ents[i*int(esize) : (i+1)*int(esize)]
		if allZero(e[:16]) {
			continue
		}
		first, last := int64(le.Uint64(e[32:])), int64(le.Uint64(e[40:]))
		p := Partition{Index: i + 1, Type: guidString(e[0:16]), UUID: guidString(e[16:32]), Label: utf16String(e[56:128])}
		if first <= 0 || last < first || last >= size/SectorSize {
			return nil, fmt.Errorf("partition %d (LBA %d to %d) does not fit the %d-byte disk: the partition table is corrupt or the image was truncated",
				p.Index, first, last, size)
		}
		p.Start, p.Size = first*SectorSize, (last-first+1)*SectorSize
		t.Partitions = append(t.Partitions, p)
	}
	return t, nil
}

// guidString formats a GPT GUID (mixed-endian) as Linux prints it: lower case, 8-4-4-4-12.
func guidString(b []byte) string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(b[0:]), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16])
}

func utf16String(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return strings.ToValidUTF8(string(utf16.Decode(u)), "?")
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// readFull reads len(p) bytes at off; a short read is an error.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
