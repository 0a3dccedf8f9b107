package blk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Backend is the storage behind a disk: positional reads and writes, and Sync making every completed write
// durable. Implementations must be safe for concurrent use (several requests run in flight).
type Backend interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// Discarder is implemented by backends that can deallocate a range (DISCARD, WRITE_ZEROES with UNMAP);
// afterwards the range reads as zeroes.
type Discarder interface {
	PunchHole(off, n int64) error
}

// Zeroer is implemented by backends that can zero a range efficiently (WRITE_ZEROES without UNMAP).
type Zeroer interface {
	WriteZeroes(off, n int64) error
}

// vectorIO is implemented by backends that do scatter/gather I/O in one system call.
type vectorIO interface {
	ReadVAt(bufs [][]byte, off int64) (int, error)
	WriteVAt(bufs [][]byte, off int64) (int, error)
}

// FileOptions select how a raw image file is opened.
type FileOptions struct {
	ReadOnly bool
	// Direct opens the file with O_DIRECT (no host page cache); I/O goes through 4 KiB-aligned bounce
	// buffers, and offsets/lengths must be multiples of the host device's logical block size.
	Direct bool
}

// File is a raw (sparse-aware) image file backend.
type File struct {
	f      *os.File
	direct bool
	size   int64
	pool   sync.Pool // aligned bounce buffers for O_DIRECT
}

// directAlign is the memory alignment O_DIRECT buffers get.
const directAlign = 4096

// OpenFile opens a raw image.
func OpenFile(path string, o FileOptions) (*File, error) {
	flags := os.O_RDWR
	if o.ReadOnly {
		flags = os.O_RDONLY
	}
	if o.Direct {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("virtio-blk: open disk image: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("virtio-blk: stat %s: %w", path, err)
	}
	size := st.Size()
	if st.Mode()&os.ModeDevice != 0 {
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("virtio-blk: size of %s: %w", path, err)
		}
		size = end
	}
	return &File{f: f, direct: o.Direct, size: size}, nil
}

// Size is the image size in bytes at open time.
func (b *File) Size() int64 { return b.size }

// Close closes the file (callers Sync first when durability matters).
func (b *File) Close() error { return b.f.Close() }

func (b *File) bounce(n int) []byte {
	if v, ok := b.pool.Get().(*[]byte); ok && cap(*v) >= n {
		return (*v)[:n]
	}
	raw := make([]byte, n+directAlign)
	off := 0
	if r := int(uintptrOf(raw)) % directAlign; r != 0 {
		off = directAlign - r
	}
	return raw[off : off+n : off+n]
}

func (b *File) release(buf []byte) { b.pool.Put(&buf) }

// ReadAt reads len(p) bytes at off; bytes past the end of the file read as zero.
func (b *File) ReadAt(p []byte, off int64) (int, error) {
	if !b.direct {
		n, err := b.f.ReadAt(p, off)
		if err == io.EOF {
			clear(p[n:])
			return len(p), nil
		}
		return n, err
	}
	buf := b.bounce(len(p))
	defer b.release(buf)
	n, err := b.f.ReadAt(buf, off)
	copy(p, buf[:n])
	if err == io.EOF {
		clear(p[n:])
		return len(p), nil
	}
	return n, err
}

// WriteAt writes p at off.
func (b *File) WriteAt(p []byte, off int64) (int, error) {
	if !b.direct {
		return b.f.WriteAt(p, off)
	}
	buf := b.bounce(len(p))
	defer b.release(buf)
	copy(buf, p)
	return b.f.WriteAt(buf, off)
}

// ReadVAt is a scatter read (preadv) into bufs from off.
func (b *File) ReadVAt(bufs [][]byte, off int64) (int, error) {
	if b.direct {
		return b.gatherDirect(bufs, off, false)
	}
	total := 0
	for len(bufs) > 0 {
		n, err := unix.Preadv(int(b.f.Fd()), bufs, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return total, fmt.Errorf("preadv at %d: %w", off, err)
		}
		if n == 0 { // end of file: the rest reads as zero
			for _, x := range bufs {
				clear(x)
				total += len(x)
			}
			return total, nil
		}
		total += n
		off += int64(n)
		bufs = advance(bufs, n)
	}
	return total, nil
}

// WriteVAt is a gather write (pwritev) of bufs at off.
func (b *File) WriteVAt(bufs [][]byte, off int64) (int, error) {
	if b.direct {
		return b.gatherDirect(bufs, off, true)
	}
	total := 0
	for len(bufs) > 0 {
		n, err := unix.Pwritev(int(b.f.Fd()), bufs, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return total, fmt.Errorf("pwritev at %d: %w", off, err)
		}
		if n == 0 {
			return total, io.ErrShortWrite
		}
		total += n
		off += int64(n)
		bufs = advance(bufs, n)
	}
	return total, nil
}

// gatherDirect does a vector request through one aligned bounce buffer.
func (b *File) gatherDirect(bufs [][]byte, off int64, write bool) (int, error) {
	n := 0
	for _, x := range bufs {
		n += len(x)
	}
	buf := b.bounce(n)
	defer b.release(buf)
	if write {
		p := 0
		for _, x := range bufs {
			p += copy(buf[p:], x)
		}
		return b.f.WriteAt(buf, off)
	}
	got, err := b.f.ReadAt(buf, off)
	if err == io.EOF {
		clear(buf[got:])
		got, err = n, nil
	}
	p := 0
	for _, x := range bufs {
		p += copy(x, buf[p:got])
	}
	return got, err
}

// advance drops n bytes from the front of bufs.
func advance(bufs [][]byte, n int) [][]byte {
	for n > 0 && len(bufs) > 0 {
		if n >= len(bufs[0]) {
			n -= len(bufs[0])
			bufs = bufs[1:]
			continue
		}
		bufs = append([][]byte{bufs[0][n:]}, bufs[1:]...)
		n = 0
	}
	for len(bufs) > 0 && len(bufs[0]) == 0 {
		bufs = bufs[1:]
	}
	return bufs
}

// Sync makes completed writes durable (fdatasync).
func (b *File) Sync() error {
	for {
		err := unix.Fdatasync(int(b.f.Fd()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("fdatasync: %w", err)
		}
		return nil
	}
}

// PunchHole deallocates [off, off+n) keeping the file size; the range then reads as zero.
func (b *File) PunchHole(off, n int64) error {
	err := unix.Fallocate(int(b.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err != nil {
		return fmt.Errorf("punch hole %d+%d: %w", off, n, err)
	}
	return nil
}

// WriteZeroes zeroes [off, off+n), with FALLOC_FL_ZERO_RANGE when the filesystem has it.
func (b *File) WriteZeroes(off, n int64) error {
	err := unix.Fallocate(int(b.f.Fd()), unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("zero range %d+%d: %w", off, n, err)
	}
	buf := b.bounce(int(min(n, 1<<20)))
	defer b.release(buf)
	clear(buf)
	for n > 0 {
		c := min(n, int64(len(buf)))
		if _, err := b.f.WriteAt(buf[:c], off); err != nil {
			return fmt.Errorf("write zeroes %d+%d: %w", off, c, err)
		}
		off += c
		n -= c
	}
	return nil
}

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
