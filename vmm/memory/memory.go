// Package memory owns guest RAM: host mappings of guest-physical regions and bounds-checked access
// to them for the VMM and its devices. No access panics; out-of-range accesses return errors.
package memory

import (
	"errors"
	"fmt"
	"io"
	"sort"

	"golang.org/x/sys/unix"
)

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
}

// ErrOutOfRange is wrapped by errors for accesses outside guest RAM.
var ErrOutOfRange = errors.New("guest address out of range")

// Options selects the host backing.
type Options struct {
	HugePages bool // advise transparent huge pages
}

// New maps anonymous host memory for each (gpa, size) range. Ranges must not overlap.
func New(ranges [][2]uint64, opts Options) (*GuestMemory, error) {
	m := &GuestMemory{owned: true}
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
// no longer counts as resident); used when the guest is reset.
func (m *GuestMemory) Discard() error {
	if !m.owned {
		for _, r := range m.regions {
			clear(r.Data)
		}
		return nil
	}
	for _, r := range m.regions {
		if err := unix.Madvise(r.Data, unix.MADV_DONTNEED); err != nil {
			return fmt.Errorf("memory: discard %#x+%#x: %w", r.GPA, len(r.Data), err)
		}
	}
	return nil
}
