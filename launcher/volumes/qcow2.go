package volumes

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/kvirt/kvirt/devices/virtio/blk"
)

// qcow2 limits: every table the parser allocates is bounded by these and by the image file's size, so a
// corrupt header can never make it allocate absurd amounts of memory.
const (
	qcow2Magic        = 0x514649fb // "QFI\xfb"
	qcow2MinClusterB  = 9
	qcow2MaxClusterB  = 21             // 2 MiB clusters, as QEMU
	qcow2MaxL1Bytes   = 32 << 20       // QEMU's QCOW_MAX_L1_SIZE
	qcow2MaxSize      = int64(1) << 56 // 64 PiB virtual size
	qcow2OffsetMask   = 0x00fffffffffffe00
	qcow2Compressed   = int64(1) << 62
	qcow2ZeroFlag     = 1
	qcow2L2CacheLimit = 64
)

// qcow2 incompatible feature bits (version 3).
const (
	qcow2IncompatDirty        = 1 << 0
	qcow2IncompatCorrupt      = 1 << 1
	qcow2IncompatExternalData = 1 << 2
	qcow2IncompatCompressType = 1 << 3
	qcow2IncompatExtendedL2   = 1 << 4
)

// IsQCOW2 reports whether the data starts with the qcow2 magic.
func IsQCOW2(r io.ReaderAt) bool {
	var m [4]byte
	if _, err := r.ReadAt(m[:], 0); err != nil {
		return false
	}
	return binary.BigEndian.Uint32(m[:]) == qcow2Magic
}

// QCOW2 is a read-only view of a qcow2 image (version 2 or 3) as a raw disk. Supported: standard and
// zero clusters, zlib (deflate) compressed clusters, the dirty bit (refcounts are not used for reading).
// Refused with an error: backing files, encryption, external data files, extended L2 entries, zstd compression,
// images marked corrupt. It is safe for concurrent use.
type QCOW2 struct {
	r           io.ReaderAt
	fileSize    int64
	size        int64
	clusterBits uint
	clusterSize int64
	l2Entries   int64
	l1          []uint64

	mu      sync.Mutex
	l2Cache map[uint64][]uint64
}

// qcow2Err is the error for a corrupt or unsupported image.
func qcow2Err(format string, args ...any) error {
	return fmt.Errorf("qcow2: "+format, args...)
}

// OpenQCOW2 parses the header and L1 table of a qcow2 image of fileSize bytes read through r.
func OpenQCOW2(r io.ReaderAt, fileSize int64) (*QCOW2, error) {
	var h [112]byte
	if fileSize < 72 {
		return nil, qcow2Err("image is %d bytes, smaller than a qcow2 header: the file is truncated or not qcow2", fileSize)
	}
	hn := min(int64(len(h)), fileSize)
	if _, err := readFull(r, h[:hn], 0); err != nil {
		return nil, qcow2Err("read header: %w", err)
	}
	be := binary.BigEndian
	if be.Uint32(h[0:]) != qcow2Magic {
		return nil, qcow2Err("bad magic %#x: not a qcow2 image", be.Uint32(h[0:]))
	}
	version := be.Uint32(h[4:])
	if version != 2 && version != 3 {
		return nil, qcow2Err("version %d not supported (only 2 and 3): convert with `qemu-img convert -O qcow2 -o compat=1.1`", version)
	}
	if be.Uint64(h[8:]) != 0 || be.Uint32(h[16:]) != 0 {
		return nil, qcow2Err("image has a backing file, which is not supported: flatten it with `qemu-img convert -O qcow2 in.qcow2 out.qcow2`")
	}
	clusterBits := be.Uint32(h[20:])
	if clusterBits < qcow2MinClusterB || clusterBits > qcow2MaxClusterB {
		return nil, qcow2Err("cluster_bits %d outside [%d, %d]: corrupt image", clusterBits, qcow2MinClusterB, qcow2MaxClusterB)
	}
	size := be.Uint64(h[24:])
	if size > uint64(qcow2MaxSize) {
		return nil, qcow2Err("virtual size %d larger than %d: corrupt image", size, qcow2MaxSize)
	}
	if c := be.Uint32(h[32:]); c != 0 {
		return nil, qcow2Err("encrypted images (crypt_method %d) are not supported: decrypt it with qemu-img first", c)
	}
	l1Size := be.Uint32(h[36:])
	l1Off := be.Uint64(h[40:])
	q := &QCOW2{
		r: r, fileSize: fileSize, size: int64(size),
		clusterBits: uint(clusterBits), clusterSize: int64(1) << clusterBits,
		l2Cache: map[uint64][]uint64{},
	}
	q.l2Entries = q.clusterSize / 8
	if version == 3 {
		if fileSize < 104 {
			return nil, qcow2Err("version 3 header truncated (%d bytes)", fileSize)
		}
		incompat := be.Uint64(h[72:])
		hdrLen := be.Uint32(h[100:])
		if hdrLen < 104 || int64(hdrLen) > q.clusterSize {
			return nil, qcow2Err("header_length %d invalid: corrupt image", hdrLen)
		}
		if incompat&qcow2IncompatCorrupt != 0 {
			return nil, qcow2Err("image is marked corrupt: repair it with `qemu-img check -r all`")
		}
		if incompat&qcow2IncompatExternalData != 0 {
			return nil, qcow2Err("images with an external data file are not supported: convert it to a plain qcow2 or raw")
		}
		if incompat&qcow2IncompatExtendedL2 != 0 {
			return nil, qcow2Err("extended L2 entries (subclusters) are not supported: convert with `qemu-img convert -O qcow2`")
		}
		if incompat&qcow2IncompatCompressType != 0 {
			ct := byte(0)
			if hdrLen > 104 && hn > 104 {
				ct = h[104]
			}
			if ct != 0 {
				return nil, qcow2Err("compression type %d (zstd) is not supported, only zlib: recompress with `qemu-img convert -c -o compression_type=zlib`", ct)
			}
		}
		if unknown := incompat &^ (qcow2IncompatDirty | qcow2IncompatCompressType); unknown != 0 {
			return nil, qcow2Err("unknown incompatible features %#x: convert the image with an older qemu-img", unknown)
		}
	}
	// The L1 table must cover the virtual size and lie inside the file.
	perL1 := q.clusterSize * q.l2Entries
	need := (q.size + perL1 - 1) / perL1
	if int64(l1Size) < need {
		return nil, qcow2Err("L1 table has %d entries but the virtual size %d needs %d: corrupt image", l1Size, q.size, need)
	}
	l1Bytes := int64(l1Size) * 8
	if l1Bytes > qcow2MaxL1Bytes {
		return nil, qcow2Err("L1 table of %d bytes exceeds %d: corrupt image", l1Bytes, qcow2MaxL1Bytes)
	}
	if l1Off%uint64(q.clusterSize) != 0 || l1Off > uint64(fileSize) || int64(l1Off)+l1Bytes > fileSize {
		return nil, qcow2Err("L1 table at %d (+%d) is misaligned or outside the %d-byte file: corrupt or truncated image", l1Off, l1Bytes, fileSize)
	}
	// Only the entries that cover the virtual size are ever used.
	raw := make([]byte, need*8)
	if _, err := readFull(r, raw, int64(l1Off)); err != nil {
		return nil, qcow2Err("read L1 table: %w", err)
	}
	q.l1 = make([]uint64, need)
	for i := range q.l1 {
		q.l1[i] = be.Uint64(raw[i*8:])
	}
	return q, nil
}

// Size is the virtual disk size.
func (q *QCOW2) Size() int64 { return q.size }

// l2 returns the L2 table at host offset off, cached.
func (q *QCOW2) l2(off uint64) ([]uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t, ok := q.l2Cache[off]; ok {
		return t, nil
	}
	if off%uint64(q.clusterSize) != 0 || off > uint64(q.fileSize) || int64(off)+q.clusterSize > q.fileSize {
		return nil, qcow2Err("L2 table at %d is misaligned or outside the %d-byte file: corrupt image", off, q.fileSize)
	}
	raw := make([]byte, q.clusterSize)
	if _, err := readFull(q.r, raw, int64(off)); err != nil {
		return nil, qcow2Err("read L2 table at %d: %w", off, err)
	}
	t := make([]uint64, q.l2Entries)
	for i := range t {
		t[i] = binary.BigEndian.Uint64(raw[i*8:])
	}
	if len(q.l2Cache) >= qcow2L2CacheLimit {
		clear(q.l2Cache)
	}
	q.l2Cache[off] = t
	return t, nil
}

// ReadAt reads guest bytes: unallocated and zero clusters read as zeros.
func (q *QCOW2) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, qcow2Err("negative offset %d", off)
	}
	if off >= q.size {
		return 0, io.EOF
	}
	var eof error
	if rest := q.size - off; int64(len(p)) > rest {
		p = p[:rest]
		eof = io.EOF
	}
	done := 0
	var cbuf []byte
	for done < len(p) {
		pos := off + int64(done)
		cluster := pos >> q.clusterBits
		inCluster := pos & (q.clusterSize - 1)
		n := int(min(q.clusterSize-inCluster, int64(len(p)-done)))
		dst := p[done : done+n]
		l1e := q.l1[cluster/q.l2Entries]
		l2Off := l1e & qcow2OffsetMask
		if l2Off == 0 {
			clear(dst)
			done += n
			continue
		}
		t, err := q.l2(l2Off)
		if err != nil {
			return done, err
		}
		e := t[cluster%q.l2Entries]
		switch {
		case int64(e)&qcow2Compressed != 0:
			if cbuf == nil {
				cbuf = make([]byte, q.clusterSize)
			}
			if err := q.readCompressed(e, cbuf); err != nil {
				return done, err
			}
			copy(dst, cbuf[inCluster:])
		case e&qcow2ZeroFlag != 0 || e&qcow2OffsetMask == 0:
			clear(dst)
		default:
			host := int64(e & qcow2OffsetMask)
			if host%q.clusterSize != 0 || host+q.clusterSize > q.fileSize {
				return done, qcow2Err("data cluster %d at %d is misaligned or outside the %d-byte file: corrupt or truncated image", cluster, host, q.fileSize)
			}
			if _, err := readFull(q.r, dst, host+inCluster); err != nil {
				return done, qcow2Err("read cluster %d: %w", cluster, err)
			}
		}
		done += n
	}
	return done, eof
}

// readCompressed inflates the compressed cluster described by L2 entry e into out (one cluster).
func (q *QCOW2) readCompressed(e uint64, out []byte) error {
	x := 62 - (q.clusterBits - 8)
	host := int64(e & (uint64(1)<<x - 1))
	sectors := int64((e>>x)&(uint64(1)<<(62-x)-1)) + 1
	length := sectors*512 - host%512
	if host >= q.fileSize {
		return qcow2Err("compressed cluster at %d outside the %d-byte file: corrupt image", host, q.fileSize)
	}
	length = min(length, q.fileSize-host, 2*q.clusterSize+512)
	in := make([]byte, length)
	if _, err := readFull(q.r, in, host); err != nil {
		return qcow2Err("read compressed cluster at %d: %w", host, err)
	}
	zr := flate.NewReader(bytes.NewReader(in))
	defer zr.Close()
	if _, err := io.ReadFull(zr, out); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return qcow2Err("compressed cluster at %d inflates to less than a cluster: corrupt image", host)
		}
		return qcow2Err("inflate cluster at %d: %w", host, err)
	}
	return nil
}

// WriteAt always fails: a qcow2 base is read-only (put an Overlay on top).
func (q *QCOW2) WriteAt([]byte, int64) (int, error) { return 0, blk.ErrReadOnly }
