package volumes

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Backend is what a virtio-blk device reads and writes: random access, a flush, and the capacity in bytes.
// Implementations are safe for concurrent use.
type Backend interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Size() int64
	Close() error
}

// Discarder is implemented by backends that can drop a byte range (virtio-blk DISCARD / WRITE_ZEROES; the
// same method as devices/virtio/blk.Discarder):
// afterwards the range reads as zeros.
type Discarder interface {
	PunchHole(off, n int64) error
}

// ErrReadOnly is returned by WriteAt on a read-only backend.
var ErrReadOnly = errors.New("backend is read-only")

// FileBackend is a Backend over a regular file or a block device.
type FileBackend struct {
	f        *os.File
	size     int64
	readOnly bool
}

// OpenFile opens a raw disk file or block device. A read-only backend is opened O_RDONLY so nothing below it
// can be modified.
func OpenFile(path string, readOnly bool) (*FileBackend, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	size, err := fileSize(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &FileBackend{f: f, size: size, readOnly: readOnly}, nil
}

// fileSize returns the size of a regular file or of a block device.
func fileSize(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Mode()&os.ModeDevice != 0 {
		n, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return 0, fmt.Errorf("size of block device %s: %w", f.Name(), err)
		}
		return n, nil
	}
	return st.Size(), nil
}

func (b *FileBackend) ReadAt(p []byte, off int64) (int, error) { return b.f.ReadAt(p, off) }

func (b *FileBackend) WriteAt(p []byte, off int64) (int, error) {
	if b.readOnly {
		return 0, ErrReadOnly
	}
	if off < 0 || off+int64(len(p)) > b.size {
		return 0, fmt.Errorf("write [%d,+%d) beyond the disk size %d", off, len(p), b.size)
	}
	return b.f.WriteAt(p, off)
}

func (b *FileBackend) Sync() error {
	if b.readOnly {
		return nil
	}
	return b.f.Sync()
}

func (b *FileBackend) Size() int64  { return b.size }
func (b *FileBackend) Close() error { return b.f.Close() }

// ReadOnly reports whether writes are refused.
func (b *FileBackend) ReadOnly() bool { return b.readOnly }

// PunchHole punches a hole in the file (falling back to writing zeros where the filesystem cannot).
func (b *FileBackend) PunchHole(off, n int64) error {
	if b.readOnly {
		return ErrReadOnly
	}
	if off < 0 || n < 0 || off+n > b.size {
		return fmt.Errorf("discard [%d,+%d) beyond the disk size %d", off, n, b.size)
	}
	return punchHole(b.f, off, n)
}

func punchHole(f *os.File, off, n int64) error {
	if n == 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	// Block devices and some filesystems cannot punch holes: write zeros instead.
	zero := make([]byte, min(n, 1<<20))
	for n > 0 {
		c := min(n, int64(len(zero)))
		if _, err := f.WriteAt(zero[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}
