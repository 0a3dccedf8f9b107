package bootdisk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"
)

// ext4 on-disk constants (https://docs.kernel.org/filesystems/ext4/ondisk.html).
const (
	ext4SuperOffset = 1024
	ext4Magic       = 0xef53
	ext4RootInode   = 2

	incompatCompression = 0x1
	incompatFiletype    = 0x2
	incompatRecover     = 0x4
	incompatJournalDev  = 0x8
	incompatMetaBG      = 0x10
	incompatExtents     = 0x40
	incompat64Bit       = 0x80
	incompatMMP         = 0x100
	incompatFlexBG      = 0x200
	incompatEAInode     = 0x400
	incompatDirData     = 0x1000
	incompatCsumSeed    = 0x2000
	incompatLargeDir    = 0x4000
	incompatInlineData  = 0x8000
	incompatEncrypt     = 0x10000
	incompatCasefold    = 0x20000
	// incompatKnown are the features this reader can read through (encryption and casefolding only matter
	// for the directories that use them, which boot files do not).
	incompatKnown = incompatFiletype | incompatRecover | incompatExtents | incompat64Bit | incompatMMP |
		incompatFlexBG | incompatEAInode | incompatCsumSeed | incompatLargeDir | incompatInlineData |
		incompatEncrypt | incompatCasefold | incompatMetaBG

	inodeFlagIndex      = 0x1000
	inodeFlagExtents    = 0x80000
	inodeFlagInlineData = 0x10000000

	extentMagic    = 0xf30a
	maxExtentDepth = 5

	// maxSymlinks bounds symlink resolution in one lookup (Linux's MAXSYMLINKS).
	maxSymlinks = 40
	// maxDirBytes bounds a directory read into memory.
	maxDirBytes = 8 << 20
	// maxExtents bounds the extent list of one file (a 2 GiB file in 4 KiB blocks fully fragmented).
	maxExtents = 1 << 19
	// maxMapBlocks bounds the extent-tree or indirect blocks read to map one file (a 2 GiB file needs
	// about 1,500): a corrupt tree whose nodes all point at one block cannot make the walk explode.
	maxMapBlocks = 1 << 14
)

// Ext4 is a read-only view of an ext2/3/4 filesystem read through an io.ReaderAt: no mounting, no kernel
// driver, nothing written. It implements fs.FS (paths without a leading slash; symlinks are followed, also
// absolute ones, inside this filesystem). It trusts nothing on the disk: every offset is checked against the
// filesystem size and every table is bounded, so a corrupt image gives an error, never a panic or an
// unbounded allocation. The journal is not replayed: a filesystem that was not cleanly unmounted may show
// metadata as it was at the last checkpoint.
type Ext4 struct {
	r           io.ReaderAt
	size        int64
	bs          int64
	inodeSize   int64
	inodesPerGr uint32
	inodes      uint32
	groups      uint32
	descSize    int64
	gdtBlock    int64
	firstMetaBG uint32
	incompat    uint32
	uuid        string
	label       string
}

// IsExt4 reports whether the bytes at the start of r carry an ext2/3/4 superblock magic.
func IsExt4(r io.ReaderAt) bool {
	var m [2]byte
	if err := readFull(r, m[:], ext4SuperOffset+0x38); err != nil {
		return false
	}
	return binary.LittleEndian.Uint16(m[:]) == ext4Magic
}

// OpenExt4 reads the superblock of the filesystem in the size bytes of r.
func OpenExt4(r io.ReaderAt, size int64) (*Ext4, error) {
	var sb [1024]byte
	if size < ext4SuperOffset+int64(len(sb)) {
		return nil, fmt.Errorf("ext4: %d bytes is too small to hold a superblock", size)
	}
	if err := readFull(r, sb[:], ext4SuperOffset); err != nil {
		return nil, fmt.Errorf("ext4: read the superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != ext4Magic {
		return nil, errors.New("ext4: no superblock magic: not an ext2/3/4 filesystem")
	}
	f := &Ext4{r: r, size: size}
	logBS := le.Uint32(sb[0x18:])
	if logBS > 6 {
		return nil, fmt.Errorf("ext4: block size 2^(10+%d) is out of range: the superblock is corrupt", logBS)
	}
	f.bs = 1024 << logBS
	f.inodes = le.Uint32(sb[0x0:])
	blocks := uint64(le.Uint32(sb[0x4:]))
	firstData := le.Uint32(sb[0x14:])
	perGroup := le.Uint32(sb[0x20:])
	f.inodesPerGr = le.Uint32(sb[0x28:])
	f.incompat = le.Uint32(sb[0x60:])
	if f.incompat&incompat64Bit != 0 {
		blocks |= uint64(le.Uint32(sb[0x150:])) << 32
	}
	f.inodeSize = 128
	if le.Uint32(sb[0x4c:]) >= 1 {
		f.inodeSize = int64(le.Uint16(sb[0x58:]))
	}
	if f.inodeSize < 128 || f.inodeSize > f.bs || f.inodeSize&(f.inodeSize-1) != 0 {
		return nil, fmt.Errorf("ext4: inode size %d is invalid: the superblock is corrupt", f.inodeSize)
	}
	if unk := f.incompat &^ incompatKnown; unk != 0 {
		return nil, fmt.Errorf("ext4: incompatible features %#x are not supported by kvirt's reader", unk)
	}
	if f.incompat&incompatCompression != 0 || f.incompat&incompatJournalDev != 0 {
		return nil, fmt.Errorf("ext4: a compressed filesystem or an external journal device is not supported")
	}
	if perGroup == 0 || f.inodesPerGr == 0 || blocks == 0 || uint64(firstData) >= blocks {
		return nil, fmt.Errorf("ext4: the superblock's geometry (%d blocks, %d per group, %d inodes per group) is corrupt",
			blocks, perGroup, f.inodesPerGr)
	}
	if blocks > uint64(size/f.bs)+1 {
		// mkfs and resize2fs never leave the block count beyond the device; a truncated image does.
		return nil, fmt.Errorf("ext4: the filesystem has %d blocks of %d bytes but its partition holds only %d bytes: the image is truncated or the partition table wrong",
			blocks, f.bs, size)
	}
	groups := (blocks - uint64(firstData) + uint64(perGroup) - 1) / uint64(perGroup)
	if groups > 1<<32-1 || uint64(f.inodes) > groups*uint64(f.inodesPerGr) {
		return nil, fmt.Errorf("ext4: %d inodes in %d groups of %d: the superblock is corrupt", f.inodes, groups, f.inodesPerGr)
	}
	f.groups = uint32(groups)
	f.descSize = 32
	if f.incompat&incompat64Bit != 0 {
		f.descSize = int64(le.Uint16(sb[0xfe:]))
		if f.descSize < 32 || f.descSize > f.bs || f.descSize&(f.descSize-1) != 0 {
			return nil, fmt.Errorf("ext4: group descriptor size %d is invalid", f.descSize)
		}
	}
	f.gdtBlock = int64(firstData) + 1
	if f.incompat&incompatMetaBG != 0 {
		f.firstMetaBG = le.Uint32(sb[0x104:])
	} else {
		f.firstMetaBG = f.groups
	}
	f.uuid = formatUUID(sb[0x68:0x78])
	f.label = cString(sb[0x78:0x88])
	return f, nil
}

// UUID is the filesystem UUID (root=UUID=...), lower case.
func (f *Ext4) UUID() string { return f.uuid }

// Label is the volume label (root=LABEL=...).
func (f *Ext4) Label() string { return f.label }

func formatUUID(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func cString(b []byte) string {
	if i := slices.Index(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.ToValidUTF8(string(b), "?")
}

// readAt reads len(p) bytes at byte offset off of the filesystem, refusing anything beyond it.
func (f *Ext4) readAt(p []byte, off int64) error {
	if off < 0 || off > f.size || int64(len(p)) > f.size-off {
		return fmt.Errorf("ext4: bytes %d..%d lie beyond the %d-byte filesystem: the filesystem is corrupt", off, off+int64(len(p)), f.size)
	}
	return readFull(f.r, p, off)
}

func (f *Ext4) block(n uint64) (int64, error) {
	if n >= uint64(f.size/f.bs) {
		return 0, fmt.Errorf("ext4: block %d lies beyond the %d-byte filesystem: the filesystem is corrupt", n, f.size)
	}
	return int64(n) * f.bs, nil
}

// descOffset is the byte offset of group g's descriptor (flat table, or META_BG's per-metagroup copies).
func (f *Ext4) descOffset(g uint32) (int64, error) {
	perBlock := uint32(f.bs / f.descSize)
	if g < f.firstMetaBG {
		return f.gdtBlock*f.bs + int64(g)*f.descSize, nil
	}
	// META_BG: the descriptors of metagroup m live in the first block of its first group.
	mg := g / perBlock
	first := uint64(mg) * uint64(perBlock)
	blocksPerGroup := uint64(f.bs) * 8 // META_BG implies the standard geometry
	blk := first*blocksPerGroup + uint64(f.gdtBlock-1)
	if f.hasSuperblock(uint32(first)) {
		blk++
	}
	off, err := f.block(blk)
	if err != nil {
		return 0, err
	}
	return off + int64(g%perBlock)*f.descSize, nil
}

func (f *Ext4) hasSuperblock(g uint32) bool {
	// sparse_super: groups 0, 1 and powers of 3, 5, 7 (an approximation that holds for meta_bg images).
	if g <= 1 {
		return true
	}
	for _, b := range []uint32{3, 5, 7} {
		n := b
		for n < g {
			n *= b
		}
		if n == g {
			return true
		}
	}
	return false
}

// inode is the part of an on-disk inode the reader uses.
type inode struct {
	num   uint32
	mode  uint16
	size  int64
	flags uint32
	mtime int64
	block [60]byte
	raw   []byte
}

const (
	modeTypeMask = 0xf000
	modeDir      = 0x4000
	modeRegular  = 0x8000
	modeSymlink  = 0xa000
)

func (f *Ext4) inode(num uint32) (*inode, error) {
	if num == 0 || num > f.inodes {
		return nil, fmt.Errorf("ext4: inode %d does not exist (the filesystem has %d): the filesystem is corrupt", num, f.inodes)
	}
	g, idx := (num-1)/f.inodesPerGr, (num-1)%f.inodesPerGr
	do, err := f.descOffset(g)
	if err != nil {
		return nil, err
	}
	d := make([]byte, f.descSize)
	if err := f.readAt(d, do); err != nil {
		return nil, fmt.Errorf("ext4: group descriptor %d: %w", g, err)
	}
	le := binary.LittleEndian
	table := uint64(le.Uint32(d[0x8:]))
	if f.descSize >= 64 {
		table |= uint64(le.Uint32(d[0x28:])) << 32
	}
	base, err := f.block(table)
	if err != nil {
		return nil, fmt.Errorf("ext4: inode table of group %d: %w", g, err)
	}
	raw := make([]byte, f.inodeSize)
	if err := f.readAt(raw, base+int64(idx)*f.inodeSize); err != nil {
		return nil, fmt.Errorf("ext4: inode %d: %w", num, err)
	}
	in := &inode{num: num, mode: le.Uint16(raw[0:]), flags: le.Uint32(raw[0x20:]), mtime: int64(le.Uint32(raw[0x10:])), raw: raw}
	size := uint64(le.Uint32(raw[0x4:])) | uint64(le.Uint32(raw[0x6c:]))<<32
	if size > 1<<62 {
		return nil, fmt.Errorf("ext4: inode %d claims %d bytes: the filesystem is corrupt", num, size)
	}
	in.size = int64(size)
	copy(in.block[:], raw[0x28:0x28+60])
	return in, nil
}

// extent maps file blocks [lblk, lblk+n) to filesystem blocks from pblk; uninit extents read as zeros.
type extent struct {
	lblk, pblk uint64
	n          uint64
	uninit     bool
}

// extents returns the block mapping of a file, sorted by logical block.
func (f *Ext4) extents(in *inode) ([]extent, error) {
	var out []extent
	var err error
	budget := maxMapBlocks
	if in.flags&inodeFlagExtents != 0 {
		err = f.walkExtents(in.block[:], maxExtentDepth+1, &budget, &out)
	} else {
		err = f.walkBlockMap(in, &budget, &out)
	}
	if err != nil {
		return nil, fmt.Errorf("inode %d: %w", in.num, err)
	}
	slices.SortFunc(out, func(a, b extent) int {
		switch {
		case a.lblk < b.lblk:
			return -1
		case a.lblk > b.lblk:
			return 1
		}
		return 0
	})
	for i := 1; i < len(out); i++ {
		if out[i-1].lblk+out[i-1].n > out[i].lblk {
			return nil, fmt.Errorf("ext4: inode %d: overlapping extents at file block %d: the filesystem is corrupt", in.num, out[i].lblk)
		}
	}
	return out, nil
}

// mapBlock reads one block of a file's mapping metadata, within the budget.
func (f *Ext4) mapBlock(n uint64, budget *int) ([]byte, error) {
	if *budget <= 0 {
		return nil, fmt.Errorf("ext4: more than %d mapping blocks for one file: the filesystem is corrupt", maxMapBlocks)
	}
	*budget--
	off, err := f.block(n)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, f.bs)
	if err := f.readAt(buf, off); err != nil {
		return nil, err
	}
	return buf, nil
}

func (f *Ext4) walkExtents(node []byte, depthLeft int, budget *int, out *[]extent) error {
	le := binary.LittleEndian
	if len(node) < 12 || le.Uint16(node[0:]) != extentMagic {
		return errors.New("ext4: bad extent header magic: the filesystem is corrupt")
	}
	entries, depth := int(le.Uint16(node[2:])), int(le.Uint16(node[6:]))
	if depth >= depthLeft || 12+12*entries > len(node) {
		return fmt.Errorf("ext4: extent node of depth %d with %d entries does not fit: the filesystem is corrupt", depth, entries)
	}
	for i := range entries {
		e := node[12+12*i : 24+12*i]
		if depth == 0 {
			n := uint64(le.Uint16(e[4:]))
			uninit := n > 32768
			if uninit {
				n -= 32768
			}
			p := uint64(le.Uint16(e[6:]))<<32 | uint64(le.Uint32(e[8:]))
			if len(*out) >= maxExtents {
				return fmt.Errorf("ext4: more than %d extents in one file", maxExtents)
			}
			*out = append(*out, extent{lblk: uint64(le.Uint32(e[0:])), pblk: p, n: n, uninit: uninit})
			continue
		}
		child := uint64(le.Uint16(e[8:]))<<32 | uint64(le.Uint32(e[4:]))
		buf, err := f.mapBlock(child, budget)
		if err != nil {
			return err
		}
		if d := int(le.Uint16(buf[6:])); d != depth-1 {
			return fmt.Errorf("ext4: extent node at block %d has depth %d under a node of depth %d: the filesystem is corrupt", child, d, depth)
		}
		if err := f.walkExtents(buf, depth, budget, out); err != nil {
			return err
		}
	}
	return nil
}

// walkBlockMap maps an ext2/3-style file: 12 direct blocks, then single, double and triple indirect blocks.
func (f *Ext4) walkBlockMap(in *inode, budget *int, out *[]extent) error {
	le := binary.LittleEndian
	nblocks := uint64((in.size + f.bs - 1) / f.bs)
	var lblk uint64
	add := func(p uint64) error {
		if p != 0 {
			if k := len(*out); k > 0 && (*out)[k-1].lblk+(*out)[k-1].n == lblk && (*out)[k-1].pblk+(*out)[k-1].n == p {
				(*out)[k-1].n++
			} else {
				if k >= maxExtents {
					return fmt.Errorf("ext4: more than %d extents in one file", maxExtents)
				}
				*out = append(*out, extent{lblk: lblk, pblk: p, n: 1})
			}
		}
		lblk++
		return nil
	}
	per := uint64(f.bs / 4)
	var indirect func(blk uint64, level int) error
	indirect = func(blk uint64, level int) error {
		span := uint64(1)
		for range level {
			span *= per
		}
		if blk == 0 { // a hole as large as this subtree
			lblk += span * per
			return nil
		}
		buf, err := f.mapBlock(blk, budget)
		if err != nil {
			return err
		}
		for i := uint64(0); i < per && lblk < nblocks; i++ {
			p := uint64(le.Uint32(buf[4*i:]))
			if level == 0 {
				if err := add(p); err != nil {
					return err
				}
				continue
			}
			if err := indirect(p, level-1); err != nil {
				return err
			}
		}
		return nil
	}
	for i := 0; i < 15 && lblk < nblocks; i++ {
		p := uint64(le.Uint32(in.block[4*i:]))
		if i < 12 {
			if err := add(p); err != nil {
				return err
			}
			continue
		}
		if err := indirect(p, i-12); err != nil {
			return err
		}
	}
	return nil
}

// inlineData returns the data of an inode stored inline (i_block, then the system.data extended attribute).
func (f *Ext4) inlineData(in *inode) ([]byte, error) {
	data := slices.Clone(in.block[:])
	if more, ok := inodeXattr(in.raw, 7, "data"); ok {
		data = append(data, more...)
	}
	if in.size > int64(len(data)) {
		return nil, fmt.Errorf("ext4: inode %d: %d bytes of inline data, the inode holds %d: the filesystem is corrupt", in.num, in.size, len(data))
	}
	return data[:in.size], nil
}

// inodeXattr finds an extended attribute (name index, name) in the inode's in-inode attribute area.
func inodeXattr(raw []byte, index byte, name string) ([]byte, bool) {
	le := binary.LittleEndian
	if len(raw) <= 0x82 {
		return nil, false
	}
	start := 128 + int(le.Uint16(raw[0x80:]))
	if start+4 > len(raw) || le.Uint32(raw[start:]) != 0xea020000 {
		return nil, false
	}
	area := raw[start+4:]
	for p := 0; p+16 <= len(area); {
		nameLen := int(area[p])
		if nameLen == 0 && area[p+1] == 0 && le.Uint16(area[p+2:]) == 0 {
			break // end of entries
		}
		if p+16+nameLen > len(area) {
			break
		}
		vOff, vInum, vSize := int(le.Uint16(area[p+2:])), le.Uint32(area[p+4:]), int(le.Uint32(area[p+8:]))
		if area[p+1] == index && string(area[p+16:p+16+nameLen]) == name && vInum == 0 {
			if vOff+vSize > len(area) || vOff < 0 || vSize < 0 {
				return nil, false
			}
			return area[vOff : vOff+vSize], true
		}
		p += (16 + nameLen + 3) &^ 3
	}
	return nil, false
}

// fileReader reads a regular file's data.
type fileReader struct {
	f      *Ext4
	in     *inode
	ext    []extent
	inline []byte
}

func (f *Ext4) openData(in *inode) (*fileReader, error) {
	fr := &fileReader{f: f, in: in}
	if in.flags&inodeFlagInlineData != 0 {
		d, err := f.inlineData(in)
		if err != nil {
			return nil, err
		}
		fr.inline = d
		return fr, nil
	}
	ext, err := f.extents(in)
	if err != nil {
		return nil, err
	}
	fr.ext = ext
	return fr, nil
}

func (fr *fileReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("ext4: negative offset")
	}
	if fr.inline != nil || fr.in.flags&inodeFlagInlineData != 0 {
		if off >= int64(len(fr.inline)) {
			return 0, io.EOF
		}
		n := copy(p, fr.inline[off:])
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	}
	size := fr.in.size
	if off >= size {
		return 0, io.EOF
	}
	want := p
	if int64(len(want)) > size-off {
		want = want[:size-off]
	}
	bs := fr.f.bs
	done := 0
	for done < len(want) {
		pos := off + int64(done)
		lblk := uint64(pos / bs)
		inBlock := pos % bs
		i, _ := slices.BinarySearchFunc(fr.ext, lblk, func(e extent, t uint64) int {
			switch {
			case e.lblk+e.n <= t:
				return -1
			case e.lblk > t:
				return 1
			}
			return 0
		})
		var n int64
		if i < len(fr.ext) && fr.ext[i].lblk <= lblk && lblk < fr.ext[i].lblk+fr.ext[i].n {
			e := fr.ext[i]
			n = min(int64(len(want)-done), int64(e.lblk+e.n-lblk)*bs-inBlock)
			if e.uninit {
				clear(want[done : done+int(n)])
			} else {
				pb := e.pblk + (lblk - e.lblk)
				start, err := fr.f.block(pb)
				if err != nil {
					return done, err
				}
				if err := fr.f.readAt(want[done:done+int(n)], start+inBlock); err != nil {
					return done, err
				}
			}
		} else {
			// A hole up to the next extent.
			next := int64(size)
			if i < len(fr.ext) {
				next = int64(fr.ext[i].lblk) * bs
			}
			n = min(int64(len(want)-done), next-pos)
			clear(want[done : done+int(n)])
		}
		done += int(n)
	}
	if done < len(p) {
		return done, io.EOF
	}
	return done, nil
}

// dirEntry is one directory entry.
type dirEntry struct {
	name  string
	inode uint32
	ftype byte
}

// readDir lists a directory (linear read: hashed directories read the same way).
func (f *Ext4) readDir(in *inode) ([]dirEntry, error) {
	if in.mode&modeTypeMask != modeDir {
		return nil, fmt.Errorf("ext4: inode %d is not a directory", in.num)
	}
	if in.size > maxDirBytes {
		return nil, fmt.Errorf("ext4: directory inode %d claims %d bytes", in.num, in.size)
	}
	var data []byte
	if in.flags&inodeFlagInlineData != 0 {
		d, err := f.inlineData(in)
		if err != nil {
			return nil, err
		}
		if len(d) < 4 {
			return nil, fmt.Errorf("ext4: inline directory inode %d is too short", in.num)
		}
		// i_block: the parent's inode number, then entries; the system.data attribute holds more entries.
		var out []dirEntry
		out = append(out, dirEntry{name: "..", inode: binary.LittleEndian.Uint32(d), ftype: 2})
		rest := d[4:]
		ib := min(len(rest), 56)
		for _, chunk := range [][]byte{rest[:ib], rest[ib:]} {
			es, err := f.parseDirBlock(chunk)
			if err != nil {
				return nil, fmt.Errorf("ext4: directory inode %d: %w", in.num, err)
			}
			out = append(out, es...)
		}
		return out, nil
	}
	fr, err := f.openData(in)
	if err != nil {
		return nil, err
	}
	data = make([]byte, in.size)
	if _, err := fr.ReadAt(data, 0); err != nil && err != io.EOF {
		return nil, err
	}
	var out []dirEntry
	for b := int64(0); b < int64(len(data)); b += f.bs {
		es, err := f.parseDirBlock(data[b:min(b+f.bs, int64(len(data)))])
		if err != nil {
			return nil, fmt.Errorf("ext4: directory inode %d, block %d: %w", in.num, b/f.bs, err)
		}
		out = append(out, es...)
	}
	return out, nil
}

func (f *Ext4) parseDirBlock(b []byte) ([]dirEntry, error) {
	le := binary.LittleEndian
	var out []dirEntry
	for p := 0; p+8 <= len(b); {
		ino, recLen := le.Uint32(b[p:]), int(le.Uint16(b[p+4:]))
		nameLen, ftype := int(b[p+6]), b[p+7]
		if f.incompat&incompatFiletype == 0 {
			nameLen, ftype = int(le.Uint16(b[p+6:])), 0
		}
		if recLen < 8 || recLen%4 != 0 || p+recLen > len(b) || 8+nameLen > recLen {
			return nil, fmt.Errorf("bad directory entry at byte %d (record length %d, name length %d): the filesystem is corrupt", p, recLen, nameLen)
		}
		if ino != 0 && nameLen > 0 {
			out = append(out, dirEntry{name: string(b[p+8 : p+8+nameLen]), inode: ino, ftype: ftype})
		}
		p += recLen
	}
	return out, nil
}

// readLink returns a symlink's target.
func (f *Ext4) readLink(in *inode) (string, error) {
	if in.size > 4096 {
		return "", fmt.Errorf("ext4: symlink inode %d claims %d bytes", in.num, in.size)
	}
	if in.flags&(inodeFlagExtents|inodeFlagInlineData) == 0 && in.size < 60 {
		return string(in.block[:in.size]), nil // fast symlink
	}
	fr, err := f.openData(in)
	if err != nil {
		return "", err
	}
	b := make([]byte, in.size)
	if _, err := fr.ReadAt(b, 0); err != nil && err != io.EOF {
		return "", err
	}
	return string(b), nil
}

// lookup resolves a slash-separated path from the root, following symlinks (also in the last component
// when follow is set). ".." never leaves the filesystem's root.
func (f *Ext4) lookup(name string, follow bool) (*inode, error) {
	root, err := f.inode(ext4RootInode)
	if err != nil {
		return nil, err
	}
	stack := []*inode{root}
	parts := splitPath(name)
	links := 0
	for len(parts) > 0 {
		c := parts[0]
		parts = parts[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		cur := stack[len(stack)-1]
		if cur.mode&modeTypeMask != modeDir {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("not a directory")}
		}
		ents, err := f.readDir(cur)
		if err != nil {
			return nil, err
		}
		i := slices.IndexFunc(ents, func(e dirEntry) bool { return e.name == c })
		if i < 0 {
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		}
		next, err := f.inode(ents[i].inode)
		if err != nil {
			return nil, err
		}
		if next.mode&modeTypeMask == modeSymlink && (len(parts) > 0 || follow) {
			links++
			if links > maxSymlinks {
				return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("too many levels of symbolic links")}
			}
			target, err := f.readLink(next)
			if err != nil {
				return nil, err
			}
			if strings.HasPrefix(target, "/") {
				stack = stack[:1]
			}
			parts = append(splitPath(target), parts...)
			continue
		}
		stack = append(stack, next)
	}
	return stack[len(stack)-1], nil
}

func splitPath(p string) []string { return strings.Split(strings.Trim(p, "/"), "/") }

// Open implements fs.FS.
func (f *Ext4) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	in, err := f.lookup(name, true)
	if err != nil {
		return nil, err
	}
	info := fileInfo{name: path.Base(name), in: in}
	switch in.mode & modeTypeMask {
	case modeDir:
		return &dirFile{f: f, info: info}, nil
	case modeRegular:
		fr, err := f.openData(in)
		if err != nil {
			return nil, err
		}
		return &regFile{info: info, r: io.NewSectionReader(fr, 0, in.size)}, nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: errors.New("not a regular file or directory")}
}

// ReadLink implements fs.ReadLinkFS: the target of the symlink name, unresolved.
func (f *Ext4) ReadLink(name string) (string, error) {
	in, err := f.lstat("readlink", name)
	if err != nil {
		return "", err
	}
	if in.mode&modeTypeMask != modeSymlink {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	return f.readLink(in)
}

// Lstat implements fs.ReadLinkFS: name's own metadata (a symlink is not followed).
func (f *Ext4) Lstat(name string) (fs.FileInfo, error) {
	in, err := f.lstat("lstat", name)
	if err != nil {
		return nil, err
	}
	return fileInfo{name: path.Base(name), in: in}, nil
}

func (f *Ext4) lstat(op, name string) (*inode, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	return f.lookup(name, false)
}

// ReadFile reads a whole file of at most limit bytes.
func (f *Ext4) ReadFile(name string, limit int64) ([]byte, error) {
	fl, err := f.Open(name)
	if err != nil {
		return nil, err
	}
	defer fl.Close()
	rf, ok := fl.(*regFile)
	if !ok {
		return nil, &fs.PathError{Op: "read", Path: name, Err: errors.New("is a directory")}
	}
	if rf.info.in.size > limit {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fmt.Errorf("%d bytes is more than the %d this reader accepts", rf.info.in.size, limit)}
	}
	b := make([]byte, rf.info.in.size)
	if _, err := rf.r.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return b, nil
}

type fileInfo struct {
	name string
	in   *inode
}

func (i fileInfo) Name() string       { return i.name }
func (i fileInfo) Size() int64        { return i.in.size }
func (i fileInfo) ModTime() time.Time { return time.Unix(i.in.mtime, 0) }
func (i fileInfo) IsDir() bool        { return i.in.mode&modeTypeMask == modeDir }
func (i fileInfo) Sys() any           { return nil }
func (i fileInfo) Mode() fs.FileMode {
	m := fs.FileMode(i.in.mode & 0o777)
	switch i.in.mode & modeTypeMask {
	case modeDir:
		m |= fs.ModeDir
	case modeSymlink:
		m |= fs.ModeSymlink
	case modeRegular:
	default:
		m |= fs.ModeIrregular
	}
	return m
}

type regFile struct {
	info fileInfo
	r    *io.SectionReader
}

func (r *regFile) Stat() (fs.FileInfo, error)                { return r.info, nil }
func (r *regFile) Read(p []byte) (int, error)                { return r.r.Read(p) }
func (r *regFile) ReadAt(p []byte, off int64) (int, error)   { return r.r.ReadAt(p, off) }
func (r *regFile) Seek(off int64, whence int) (int64, error) { return r.r.Seek(off, whence) }
func (r *regFile) Close() error                              { return nil }

type dirFile struct {
	f    *Ext4
	info fileInfo
	ents []fs.DirEntry
	read bool
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: errors.New("is a directory")}
}
func (d *dirFile) Close() error { return nil }

// ReadDir implements fs.ReadDirFile (entries in name order, without "." and "..").
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	if !d.read {
		d.read = true
		ents, err := d.f.readDir(d.info.in)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if e.name == "." || e.name == ".." || strings.Contains(e.name, "/") {
				continue
			}
			in, err := d.f.inode(e.inode)
			if err != nil {
				return nil, err
			}
			d.ents = append(d.ents, fs.FileInfoToDirEntry(fileInfo{name: e.name, in: in}))
		}
		slices.SortFunc(d.ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	}
	if n <= 0 {
		out := d.ents
		d.ents = nil
		return out, nil
	}
	if len(d.ents) == 0 {
		return nil, io.EOF
	}
	k := min(n, len(d.ents))
	out := d.ents[:k]
	d.ents = d.ents[k:]
	return out, nil
}
