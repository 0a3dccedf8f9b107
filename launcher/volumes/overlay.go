package volumes

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// OverlayBlockSize is the copy-on-write granularity of an Overlay. Guests write in 4 KiB pages, so a write
// rarely needs a read-modify-write of the base.
const OverlayBlockSize = 4096

// Overlay is a copy-on-write Backend over a read-only base: written blocks live in a sparse overlay file at the
// same offsets, and a bitmap says which blocks the overlay holds. Reads of unwritten blocks come from the base;
// nothing is ever written to the base. The bitmap is kept in memory only: the overlay is ephemeral, like the
// containerDisk it sits on, and is discarded with the pod.
type Overlay struct {
	base ReaderAtSize
	file *os.File
	size int64

	mu     sync.RWMutex
	bitmap []uint64 // bit i set: block i is in the overlay file
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
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("overlay: size %s to %d bytes: %w", path, size, err)
	}
	blocks := (size + OverlayBlockSize - 1) / OverlayBlockSize
	return &Overlay{base: base, file: f, size: size, bitmap: make([]uint64, (blocks+63)/64)}, nil
}

func (o *Overlay) has(block int64) bool { return o.bitmap[block/64]&(1<<(block%64)) != 0 }
func (o *Overlay) set(block int64)      { o.bitmap[block/64] |= 1 << (block % 64) }

// Size is the disk size in bytes (the base's).
func (o *Overlay) Size() int64 { return o.size }

// Allocated returns how many blocks the overlay holds.
func (o *Overlay) Allocated() int {
	o.mu.RLock()
	defer o.mu.RUnlock()
	n := 0
	for _, w := range o.bitmap {
		for ; w != 0; w &= w - 1 {
			n++
		}
	}
	return n
}

// ReadAt reads from the overlay where written and from the base elsewhere.
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
	o.mu.RLock()
	defer o.mu.RUnlock()
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		block := pos / OverlayBlockSize
		inOverlay := o.has(block)
		// Extend the run while blocks share the same source.
		end := (block + 1) * OverlayBlockSize
		for end < pos+int64(len(p)-done) && o.has(end/OverlayBlockSize) == inOverlay {
			end += OverlayBlockSize
		}
		n := int(min(end-pos, int64(len(p)-done)))
		var err error
		if inOverlay {
			_, err = o.file.ReadAt(p[done:done+n], pos)
		} else {
			_, err = readFull(o.base, p[done:done+n], pos)
		}
		if err != nil {
			return done, fmt.Errorf("overlay: read at %d: %w", pos, err)
		}
		done += n
	}
	return done, eof
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

// WriteAt writes to the overlay file; a partial write of a block not yet in the overlay first copies that
// block from the base.
func (o *Overlay) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > o.size {
		return 0, fmt.Errorf("overlay: write [%d,+%d) beyond the disk size %d", off, len(p), o.size)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	done := 0
	var buf []byte
	for done < len(p) {
		pos := off + int64(done)
		block := pos / OverlayBlockSize
		bstart := block * OverlayBlockSize
		bend := min(bstart+OverlayBlockSize, o.size)
		n := int(min(bend-pos, int64(len(p)-done)))
		if o.has(block) || (pos == bstart && pos+int64(n) == bend) {
			if _, err := o.file.WriteAt(p[done:done+n], pos); err != nil {
				return done, fmt.Errorf("overlay: write at %d: %w", pos, err)
			}
		} else {
			if buf == nil {
				buf = make([]byte, OverlayBlockSize)
			}
			b := buf[:bend-bstart]
			if _, err := readFull(o.base, b, bstart); err != nil {
				return done, fmt.Errorf("overlay: copy block %d from the base: %w", block, err)
			}
			copy(b[pos-bstart:], p[done:done+n])
			if _, err := o.file.WriteAt(b, bstart); err != nil {
				return done, fmt.Errorf("overlay: write block %d: %w", block, err)
			}
		}
		o.set(block)
		done += n
	}
	return done, nil
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
	if err := punchHole(o.file, first, last-first); err != nil {
		return fmt.Errorf("overlay: discard: %w", err)
	}
	for b := first / OverlayBlockSize; b*OverlayBlockSize < last; b++ {
		o.set(b)
	}
	return nil
}

// Sync flushes the overlay file.
func (o *Overlay) Sync() error { return o.file.Sync() }

// Close closes the overlay file (the base stays open; its owner closes it).
func (o *Overlay) Close() error { return o.file.Close() }
