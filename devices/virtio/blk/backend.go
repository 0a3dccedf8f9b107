package blk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
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

// VectorIO is implemented by backends that do scatter/gather I/O in one system call; the device then
// hands each request's guest buffers over in one call instead of one call per buffer.
type VectorIO interface {
	ReadVAt(bufs [][]byte, off int64) (int, error)
	WriteVAt(bufs [][]byte, off int64) (int, error)
}

// ErrReadOnly is returned by every write (WriteAt, WriteVAt, PunchHole, WriteZeroes) to a File opened
// read-only.
var ErrReadOnly = errors.New("virtio-blk: the disk is read-only")

// ErrFlushFailed is wrapped by the error of a File's failed Sync and, from then on, by every later Sync
// and write: Linux reports a write-back error to fdatasync once and may already have dropped the pages it
// could not write, so a retried flush would succeed although acknowledged data is gone ("fsyncgate").
// Only reopening the disk clears it.
var ErrFlushFailed = errors.New("data written before this flush may be lost: the disk refuses writes and flushes until it is reopened")

// FileOptions select how a raw image file is opened.
type FileOptions struct {
	// ReadOnly opens the file O_RDONLY, so nothing can modify it; every write fails with ErrReadOnly.
	ReadOnly bool
	// Direct opens the file with O_DIRECT (no host page cache); I/O goes through 4 KiB-aligned bounce
	// buffers, and offsets/lengths must be multiples of the host device's logical block size.
	Direct bool
}

// File is the raw disk backend: a regular (sparse-aware) image file or a block device, used by every raw
// disk, from kvirt-vmm's --disk to the launcher's PVCs, hostDisks, emptyDisks, cloud-init images and
// containerDisk overlays. It does vectored I/O (ReadVAt/WriteVAt, one preadv/pwritev per request),
// DISCARD as a punched hole and WRITE_ZEROES as a zeroed range, each falling back to writing zeroes where
// the filesystem or device cannot, and refuses writes past its size. A failed Sync is sticky
// (ErrFlushFailed). It is safe for concurrent use.
type File struct {
	f        *os.File
	readOnly bool
	direct   bool
	size     int64
	pool     sync.Pool // aligned bounce buffers for O_DIRECT

	// The system calls that can fail without the disk failing; tests inject failures here.
	fdatasync func() error
	fallocate func(mode uint32, off, n int64) error

	flushErr atomic.Pointer[error] // the first failed Sync, wrapping ErrFlushFailed
}

// directAlign is the memory alignment O_DIRECT buffers get.
const directAlign = 4096

// OpenFile opens a raw image file or block device (whose size is found by seeking to its end).
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
	b := &File{f: f, readOnly: o.ReadOnly, direct: o.Direct, size: size}
	b.fdatasync = func() error { return retryEINTR(func() error { return unix.Fdatasync(int(f.Fd())) }) }
	b.fallocate = func(mode uint32, off, n int64) error {
		return retryEINTR(func() error { return unix.Fallocate(int(f.Fd()), mode, off, n) })
	}
	return b, nil
}

// Size is the image size in bytes at open time.
func (b *File) Size() int64 { return b.size }

// ReadOnly reports whether the file was opened read-only.
func (b *File) ReadOnly() bool { return b.readOnly }

// Close closes the file (callers Sync first when durability matters).
func (b *File) Close() error { return b.f.Close() }

// writable checks a write of n bytes at off: the file is writable, no flush has failed, and the range lies
// inside the disk.
func (b *File) writable(off, n int64) error {
	if b.readOnly {
		return ErrReadOnly
	}
	if err := b.flushErr.Load(); err != nil {
		return *err
	}
	if off < 0 || n < 0 || n > b.size-off {
		return fmt.Errorf("range [%d,+%d) beyond the disk size %d", off, n, b.size)
	}
	return nil
}

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
	if err := b.writable(off, int64(len(p))); err != nil {
		return 0, err
	}
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
	n := 0
	for _, x := range bufs {
		n += len(x)
	}
	if err := b.writable(off, int64(n)); err != nil {
		return 0, err
	}
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

// Sync makes completed writes durable (fdatasync); on a read-only file it does nothing. Its first failure
// is kept: that Sync and every later one and every write return it, wrapping ErrFlushFailed.
func (b *File) Sync() error {
	if b.readOnly {
		return nil
	}
	if err := b.flushErr.Load(); err != nil {
		return *err
	}
	if err := b.fdatasync(); err != nil {
		err = fmt.Errorf("fdatasync: %w; %w", err, ErrFlushFailed)
		b.flushErr.CompareAndSwap(nil, &err)
		return *b.flushErr.Load()
	}
	return nil
}

// PunchHole deallocates [off, off+n) keeping the file size; the range then reads as zero. Where the
// filesystem or block device cannot punch holes it writes zeroes instead.
func (b *File) PunchHole(off, n int64) error {
	return b.zeroRange(unix.FALLOC_FL_PUNCH_HOLE, "punch hole", off, n)
}

// WriteZeroes zeroes [off, off+n), with FALLOC_FL_ZERO_RANGE where the filesystem has it and by writing
// zeroes elsewhere.
func (b *File) WriteZeroes(off, n int64) error {
	return b.zeroRange(unix.FALLOC_FL_ZERO_RANGE, "zero range", off, n)
}

// zeroRange makes [off, off+n) read as zeroes with fallocate(mode|FALLOC_FL_KEEP_SIZE), or by writing zeroes
// where the filesystem or device does not support mode.
func (b *File) zeroRange(mode uint32, what string, off, n int64) error {
	if err := b.writable(off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	err := b.fallocate(mode|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	if !unsupported(err) {
		return fmt.Errorf("%s %d+%d: %w", what, off, n, err)
	}
	return b.writeZeroes(off, n)
}

// unsupported tells whether fallocate failed because the filesystem or device lacks the operation (rather
// than because the disk failed).
func unsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) ||
		errors.Is(err, unix.ENODEV)
}

// writeZeroes writes zeroes over [off, off+n) in chunks of at most 1 MiB (aligned for O_DIRECT).
func (b *File) writeZeroes(off, n int64) error {
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

func retryEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
