// Package memory owns guest RAM: host mappings of guest-physical regions and bounds-checked access
// to them for the VMM and its devices. No access panics; out-of-range accesses return errors.
package memory

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"unsafe"

	"golang.org/x/sys/unix"
)

// PageSize is the host page size LoadFile maps with.
const PageSize = 4096

// Region is one contiguous range of guest RAM backed by host memory.
type Region struct {
	GPA  uint64
	Data []byte // len(Data) is the size
}

// End is the first guest-physical address after the region.
func (r Region) End() uint64 { return r.GPA + uint64(len(r.Data)) }

// GuestMemory is the guest's RAM as a set of non-overlapping regions.
type GuestMemory struct {
	regions []Region
	owned   bool
	huge    bool // MADV_HUGEPAGE asked for (again after Discard)
}

// ErrOutOfRange is wrapped by errors for accesses outside guest RAM.
var ErrOutOfRange = errors.New("guest address out of range")

// Options selects the host backing.
type Options struct {
	HugePages bool // advise transparent huge pages
}

// New maps anonymous host memory for each (gpa, size) range. Ranges must not overlap.
func New(ranges [][2]uint64, opts Options) (*GuestMemory, error) {
	m := &GuestMemory{owned: true, huge: opts.HugePages}
	for _, r := range ranges {
		gpa, size := r[0], r[1]
		if size == 0 || size%4096 != 0 || gpa%4096 != 0 {
			m.Close()
			return nil, fmt.Errorf("memory: region %#x+%#x not page aligned", gpa, size)
		}
		data, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("memory: mmap %d bytes: %w", size, err)
		}
		if opts.HugePages {
			_ = unix.Madvise(data, unix.MADV_HUGEPAGE)
		}
		m.regions = append(m.regions, Region{GPA: gpa, Data: data})
	}
	return m.sorted()
}

// FromRegions wraps caller-owned buffers (useful in tests); Close does not unmap them.
func FromRegions(regions ...Region) (*GuestMemory, error) {
	m := &GuestMemory{regions: append([]Region(nil), regions...)}
	return m.sorted()
}

func (m *GuestMemory) sorted() (*GuestMemory, error) {
	sort.Slice(m.regions, func(i, j int) bool { return m.regions[i].GPA < m.regions[j].GPA })
	for i := 1; i < len(m.regions); i++ {
		if m.regions[i-1].End() > m.regions[i].GPA {
			err := fmt.Errorf("memory: regions at %#x and %#x overlap", m.regions[i-1].GPA, m.regions[i].GPA)
			m.Close()
			return nil, err
		}
	}
	return m, nil
}

// Regions returns the regions in ascending address order (the slice must not be modified).
func (m *GuestMemory) Regions() []Region { return m.regions }

// Size is the total RAM in bytes.
func (m *GuestMemory) Size() uint64 {
	var n uint64
	for _, r := range m.regions {
		n += uint64(len(r.Data))
	}
	return n
}

// Close unmaps memory this GuestMemory mapped itself.
func (m *GuestMemory) Close() error {
	var first error
	if m.owned {
		for _, r := range m.regions {
			if err := unix.Munmap(r.Data); err != nil && first == nil {
				first = err
			}
		}
	}
	m.regions = nil
	return first
}

// Slice returns the host bytes backing [gpa, gpa+n); the range must lie in one region.
func (m *GuestMemory) Slice(gpa, n uint64) ([]byte, error) {
	for _, r := range m.regions {
		if gpa >= r.GPA && gpa < r.End() {
			off := gpa - r.GPA
			if n > uint64(len(r.Data))-off {
				return nil, fmt.Errorf("memory: %#x+%#x crosses the end of RAM region at %#x: %w", gpa, n, r.End(), ErrOutOfRange)
			}
			return r.Data[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("memory: %#x+%#x: %w", gpa, n, ErrOutOfRange)
}

// ReadAt reads len(p) bytes at guest-physical address off (io.ReaderAt semantics; may span regions only
// if they are contiguous).
func (m *GuestMemory) ReadAt(p []byte, off int64) (int, error) {
	return m.access(p, off, false)
}

// WriteAt writes p at guest-physical address off (io.WriterAt semantics).
func (m *GuestMemory) WriteAt(p []byte, off int64) (int, error) {
	return m.access(p, off, true)
}

func (m *GuestMemory) access(p []byte, off int64, write bool) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("memory: negative address %d: %w", off, ErrOutOfRange)
	}
	done := 0
	gpa := uint64(off)
	for done < len(p) {
		var r *Region
		for i := range m.regions {
			if gpa >= m.regions[i].GPA && gpa < m.regions[i].End() {
				r = &m.regions[i]
				break
			}
		}
		if r == nil {
			if !write && done > 0 {
				return done, io.EOF
			}
			return done, fmt.Errorf("memory: access at %#x (%d bytes): %w", gpa, len(p)-done, ErrOutOfRange)
		}
		o := gpa - r.GPA
		var n int
		if write {
			n = copy(r.Data[o:], p[done:])
		} else {
			n = copy(p[done:], r.Data[o:])
		}
		done += n
		gpa += uint64(n)
	}
	return done, nil
}

// Discard drops the contents of all memory this GuestMemory mapped itself (it reads as zero afterwards and
// no longer counts as resident), including file pages LoadFile mapped; used when the guest is reset.
// The host addresses stay the same, so KVM memory slots remain valid.
func (m *GuestMemory) Discard() error {
	if !m.owned {
		for _, r := range m.regions {
			clear(r.Data)
		}
		return nil
	}
	for _, r := range m.regions {
		// A fresh anonymous mapping in place: MADV_DONTNEED would bring a file mapping back to the file's
		// contents instead of zeros.
		if _, err := unix.MmapPtr(-1, 0, unsafe.Pointer(&r.Data[0]), uintptr(len(r.Data)), unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE|unix.MAP_FIXED); err != nil {
			return fmt.Errorf("memory: discard %#x+%#x: %w", r.GPA, len(r.Data), err)
		}
		if m.huge {
			_ = unix.Madvise(r.Data, unix.MADV_HUGEPAGE)
		}
	}
	return nil
}

// LoadFile puts n bytes of f, from file offset off, at guest-physical address gpa. When gpa and off lie at the
// same offset within a page and this GuestMemory mapped its RAM itself, the whole pages are mapped from the
// file copy-on-write (MAP_PRIVATE|MAP_FIXED) instead of being read: nothing is copied up front, the guest
// faults pages in from the page cache as it touches them, its writes go to private copies, and the file is
// never modified. Partial pages at either end are copied, so bytes outside [gpa, gpa+n) keep their contents.
// Otherwise (or if the file cannot be mapped) the bytes are read. The range must lie in one region. It
// returns how many bytes were mapped rather than copied.
//
// The file must not be truncated while it is mapped: that makes guest and VMM accesses to the lost pages
// fail (SIGBUS). Discard (or Close) removes the mappings.
func (m *GuestMemory) LoadFile(gpa uint64, f *os.File, off int64, n uint64) (mapped uint64, err error) {
	dst, err := m.Slice(gpa, n)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	if off < 0 {
		return 0, fmt.Errorf("memory: load file at negative offset %d", off)
	}
	read := func(b []byte, at int64) error {
		got, err := f.ReadAt(b, at)
		if err == io.EOF && got == len(b) {
			err = nil
		}
		if err != nil {
			return fmt.Errorf("memory: read %s at %d (%d of %d bytes): %w", f.Name(), at, got, len(b), err)
		}
		return nil
	}
	// Mapped pages beyond the end of the file would fault (SIGBUS) instead of reading short.
	if fi, err := f.Stat(); err != nil {
		return 0, fmt.Errorf("memory: %w", err)
	} else if uint64(off)+n > uint64(fi.Size()) || uint64(off)+n < n {
		return 0, fmt.Errorf("memory: %s: %d bytes at offset %d run past its end (%d bytes)", f.Name(), n, off, fi.Size())
	}
	head := (PageSize - gpa%PageSize) % PageSize // bytes before the first whole page
	if !m.owned || gpa%PageSize != uint64(off)%PageSize || n < head+PageSize {
		return 0, read(dst, off)
	}
	whole := (n - head) &^ (PageSize - 1)
	if _, err := unix.MmapPtr(int(f.Fd()), off+int64(head), unsafe.Pointer(&dst[head]), uintptr(whole),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_FIXED); err != nil {
		// Not mappable (a pipe, a file system without mmap). A failed MAP_FIXED may have removed the old
		// mapping: put anonymous memory back, then copy.
		if _, err := unix.MmapPtr(-1, 0, unsafe.Pointer(&dst[head]), uintptr(whole), unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE|unix.MAP_FIXED); err != nil {
			return 0, fmt.Errorf("memory: restore guest RAM at %#x: %w", gpa+head, err)
		}
		return 0, read(dst, off)
	}
	if err := read(dst[:head], off); err != nil {
		return whole, err
	}
	tail := head + whole
	return whole, read(dst[tail:], off+int64(tail))
}
