package volumes

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/kvirt/kvirt/devices/virtio/blk"
)

// OverlayBlockSize is the copy-on-write granularity of an Overlay. Guests write in 4 KiB pages, so a write
// rarely needs a read-modify-write of the base.
const OverlayBlockSize = 4096

// Overlay is a copy-on-write Backend over a read-only base: written blocks live in a sparse overlay file at the
// same offsets, and a set of blocks (blockSet, sparse) says which blocks the overlay holds. Reads of unwritten blocks come from the base;
// nothing is ever written to the base. The set is kept in memory only: the overlay is ephemeral, like the
// containerDisk it sits on, and is discarded with the pod.
//
// The overlay file is a blk.File, so the overlay inherits its vectored I/O, hole punching (with the zero-fill
// fallback) and sticky flush failure. ReadVAt and WriteVAt serve a request's buffers in one call per run of
// blocks with the same source, and in one preadv when the base is a blk.File too.
type Overlay struct {
	base ReaderAtSize
	file *blk.File
	size int64

	mu     sync.RWMutex
	blocks blockSet // the blocks in the overlay file
}

// ReaderAtSize is a read-only disk: a ReaderAt that knows its size.
type ReaderAtSize interface {
	io.ReaderAt
	Size() int64
}

// NewOverlay creates (truncating) the overlay file at path, sparse and of the base's size, and returns the
// copy-on-write backend. Closing the Overlay closes the overlay file but not the base.
func NewOverlay(base ReaderAtSize, path string) (*Overlay, error) {
	size := base.Size()
	if size < 0 {
		return nil, fmt.Errorf("overlay: negative base size %d", size)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("overlay: size %s to %d bytes: %w", path, size, err)
	}
	file, err := blk.OpenFile(path, blk.FileOptions{})
	if err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	// Nothing in proportion to the size: a tiny qcow2 may claim 64 PiB (review finding F9).
	return &Overlay{base: base, file: file, size: size, blocks: newBlockSet(blockCount(size))}, nil
}

// blockCount is the number of blocks covering n bytes.
func blockCount(n int64) int64 { return n/OverlayBlockSize + min(n%OverlayBlockSize, 1) }

func (o *Overlay) has(block int64) bool { return o.blocks.has(block) }

// setRange records that the overlay file holds every block touching [from, to).
func (o *Overlay) setRange(from, to int64) { o.blocks.add(from/OverlayBlockSize, blockCount(to)) }

// Size is the disk size in bytes (the base's).
func (o *Overlay) Size() int64 { return o.size }

// Allocated returns how many blocks the overlay holds.
func (o *Overlay) Allocated() int {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return int(o.blocks.count())
}

// ReadAt reads from the overlay where written and from the base elsewhere; a read past the end is cut short
// with io.EOF.
func (o *Overlay) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("overlay: negative offset %d", off)
	}
	if off >= o.size {
		return 0, io.EOF
	}
	var eof error
	if rest := o.size - off; int64(len(p)) > rest {
		p = p[:rest]
		eof = io.EOF
	}
	n, err := o.ReadVAt([][]byte{p}, off)
	if err != nil {
		return n, err
	}
	return n, eof
}

// ReadVAt is a scatter read into bufs from off, which must lie inside the disk: each run of blocks with the
// same source (overlay file or base) is one vectored read.
func (o *Overlay) ReadVAt(bufs [][]byte, off int64) (int, error) {
	total := iovLen(bufs)
	if off < 0 || int64(total) > o.size-off {
		return 0, fmt.Errorf("overlay: read [%d,+%d) beyond the disk size %d", off, total, o.size)
	}
	o.mu.RLock()
	defer o.mu.RUnlock()
	done := 0
	for done < total {
		pos := off + int64(done)
		block := pos / OverlayBlockSize
		inOverlay := o.has(block)
		// Extend the run while blocks share the same source.
		end := (block + 1) * OverlayBlockSize
		for end < off+int64(total) && o.has(end/OverlayBlockSize) == inOverlay {
			end += OverlayBlockSize
		}
		n := int(min(end-pos, int64(total-done)))
		part := iovSlice(bufs, done, n)
		var err error
		if inOverlay {
			_, err = o.file.ReadVAt(part, pos)
		} else {
			err = readFullV(o.base, part, pos)
		}
		if err != nil {
			return done, fmt.Errorf("overlay: read at %d: %w", pos, err)
		}
		done += n
	}
	return done, nil
}

// readFullV fills bufs from r at off, in one call when r does vectored I/O; a short read is an error.
func readFullV(r io.ReaderAt, bufs [][]byte, off int64) error {
	if v, ok := r.(blk.VectorIO); ok {
		n, err := v.ReadVAt(bufs, off)
		if err == nil && n < iovLen(bufs) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	for _, b := range bufs {
		if _, err := readFull(r, b, off); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}

// readFull reads len(p) bytes at off, treating a short read that ends at EOF as an error.
func readFull(r io.ReaderAt, p []byte, off int64) (int, error) {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return n, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// WriteAt writes p at off (see WriteVAt).
func (o *Overlay) WriteAt(p []byte, off int64) (int, error) { return o.WriteVAt([][]byte{p}, off) }

// WriteVAt is a gather write of bufs at off into the overlay file. Only the first and the last block of the
// range can be partly covered; such a block not yet in the overlay is first copied from the base
// (read-modify-write). Everything between goes to the overlay file in one vectored write.
func (o *Overlay) WriteVAt(bufs [][]byte, off int64) (int, error) {
	total := iovLen(bufs)
	if off < 0 || int64(total) > o.size-off {
		return 0, fmt.Errorf("overlay: write [%d,+%d) beyond the disk size %d", off, total, o.size)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	start, end := off, off+int64(total)
	if start == end {
		return 0, nil
	}
	if first := start / OverlayBlockSize; o.partial(first, start, end) {
		to := min((first+1)*OverlayBlockSize, end)
		if err := o.merge(first, start, iovSlice(bufs, 0, int(to-start))); err != nil {
			return 0, err
		}
		start = to
	}
	if start < end {
		if last := (end - 1) / OverlayBlockSize; o.partial(last, max(start, last*OverlayBlockSize), end) {
			from := last * OverlayBlockSize
			if err := o.merge(last, from, iovSlice(bufs, int(from-off), int(end-from))); err != nil {
				return int(start - off), err
			}
			end = from
		}
	}
	if start < end {
		if _, err := o.file.WriteVAt(iovSlice(bufs, int(start-off), int(end-start)), start); err != nil {
			return int(start - off), fmt.Errorf("overlay: write at %d: %w", start, err)
		}
		o.setRange(start, end)
	}
	return total, nil
}

// partial tells whether writing [from, to) to block needs the rest of the block from the base first: the
// block is not in the overlay and the range does not cover it.
func (o *Overlay) partial(block, from, to int64) bool {
	bstart := block * OverlayBlockSize
	bend := min(bstart+OverlayBlockSize, o.size)
	return !o.has(block) && (from > bstart || to < bend)
}

// merge writes src at pos into block, which is not in the overlay yet: the block is read from the base, src
// copied over it, and the whole block written to the overlay file. Callers hold o.mu.
func (o *Overlay) merge(block, pos int64, src [][]byte) error {
	bstart := block * OverlayBlockSize
	buf := make([]byte, min(bstart+OverlayBlockSize, o.size)-bstart)
	if _, err := readFull(o.base, buf, bstart); err != nil {
		return fmt.Errorf("overlay: copy block %d from the base: %w", block, err)
	}
	p := int(pos - bstart)
	for _, b := range src {
		p += copy(buf[p:], b)
	}
	if _, err := o.file.WriteAt(buf, bstart); err != nil {
		return fmt.Errorf("overlay: write block %d: %w", block, err)
	}
	o.setRange(bstart, bstart+1)
	return nil
}

// iovLen is the total length of bufs.
func iovLen(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}

// iovSlice returns bytes [from, from+n) of bufs as buffers aliasing the same memory; the range must lie
// inside bufs.
func iovSlice(bufs [][]byte, from, n int) [][]byte {
	var out [][]byte
	for _, b := range bufs {
		if n == 0 {
			break
		}
		if from >= len(b) {
			from -= len(b)
			continue
		}
		b = b[from:min(len(b), from+n)]
		from = 0
		out = append(out, b)
		n -= len(b)
	}
	return out
}

// PunchHole makes [off, off+n) read as zeros: whole blocks become holes in the overlay, partial blocks are
// written with zeros.
func (o *Overlay) PunchHole(off, n int64) error {
	if off < 0 || n < 0 || off+n > o.size {
		return fmt.Errorf("overlay: discard [%d,+%d) beyond the disk size %d", off, n, o.size)
	}
	end := off + n
	first := (off + OverlayBlockSize - 1) / OverlayBlockSize * OverlayBlockSize
	last := end / OverlayBlockSize * OverlayBlockSize
	if end == o.size {
		last = end
	}
	if first >= last { // no whole block inside
		_, err := o.WriteAt(make([]byte, n), off)
		return err
	}
	if first > off {
		if _, err := o.WriteAt(make([]byte, first-off), off); err != nil {
			return err
		}
	}
	if end > last {
		if _, err := o.WriteAt(make([]byte, end-last), last); err != nil {
			return err
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.file.PunchHole(first, last-first); err != nil {
		return fmt.Errorf("overlay: discard: %w", err)
	}
	o.setRange(first, last)
	return nil
}

// Sync flushes the overlay file.
func (o *Overlay) Sync() error { return o.file.Sync() }

// Close closes the overlay file (the base stays open; its owner closes it).
func (o *Overlay) Close() error { return o.file.Close() }
