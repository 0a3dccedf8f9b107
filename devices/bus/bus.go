// Package bus routes guest I/O-port and MMIO accesses to device models.
//
// A Bus maps non-overlapping address ranges to Devices. Accesses to addresses no device claims are
// tolerated: reads return all-ones, writes are dropped, and each such address is logged once, for the
// first MaxLoggedAddrs addresses. Past them the guest could otherwise make every exit a log line (it
// chooses the addresses), so new addresses are only counted, and a summary line with the count is logged
// at most once per SummaryEvery.
package bus

import (
	"fmt"
	"log"
	"sort"
	"sync"
	"time"
)

const (
	// MaxLoggedAddrs bounds the unclaimed addresses a Bus logs (and remembers) one by one.
	MaxLoggedAddrs = 4096
	// SummaryEvery is the most often a Bus logs how many unclaimed accesses it did not log one by one.
	SummaryEvery = time.Minute
)

// Device is a device model reachable through a bus range. offset is relative to the range's base;
// len(data) is 1, 2, 4 or 8. Implementations must never panic on guest input.
type Device interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

type entry struct {
	base, size uint64
	dev        Device
}

// Bus is an address space (I/O ports or MMIO). It is safe for concurrent use by several vCPUs; devices
// must do their own locking.
type Bus struct {
	name string

	mu      sync.RWMutex
	entries []entry // sorted by base, non-overlapping

	logMu       sync.Mutex
	logged      map[uint64]bool
	suppressed  uint64    // accesses to new addresses past MaxLoggedAddrs since the last summary
	lastSummary time.Time // zero: none yet
	// Logf receives the one-time "unhandled access" messages and the summaries; nil means log.Printf.
	Logf func(format string, args ...any)
	now  func() time.Time // tests
}

// New returns an empty bus; name ("pio", "mmio") prefixes its log messages.
func New(name string) *Bus { return &Bus{name: name, logged: map[uint64]bool{}} }

// Insert maps [base, base+size) to d. Overlapping an existing range, or an empty/wrapping range, is an error.
func (b *Bus) Insert(base, size uint64, d Device) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("%s bus: invalid range base %#x size %#x", b.name, base, size)
	}
	if d == nil {
		return fmt.Errorf("%s bus: nil device at %#x", b.name, base)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base >= base })
	if i > 0 {
		p := b.entries[i-1]
		if p.base+p.size > base {
			return fmt.Errorf("%s bus: range %#x+%#x overlaps %#x+%#x", b.name, base, size, p.base, p.size)
		}
	}
	if i < len(b.entries) && base+size > b.entries[i].base {
		n := b.entries[i]
		return fmt.Errorf("%s bus: range %#x+%#x overlaps %#x+%#x", b.name, base, size, n.base, n.size)
	}
	b.entries = append(b.entries, entry{})
	copy(b.entries[i+1:], b.entries[i:])
	b.entries[i] = entry{base, size, d}
	return nil
}

// Remove unmaps the range starting exactly at base; it reports whether one was removed.
func (b *Bus) Remove(base uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, e := range b.entries {
		if e.base == base {
			b.entries = append(b.entries[:i], b.entries[i+1:]...)
			return true
		}
	}
	return false
}

func (b *Bus) find(addr uint64) (Device, uint64, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base > addr })
	if i == 0 {
		return nil, 0, false
	}
	e := b.entries[i-1]
	if addr-e.base >= e.size {
		return nil, 0, false
	}
	return e.dev, addr - e.base, true
}

func (b *Bus) unhandled(kind string, addr uint64, n int) {
	b.logMu.Lock()
	first, summary := false, uint64(0)
	switch {
	case b.logged[addr]:
	case len(b.logged) < MaxLoggedAddrs:
		b.logged[addr], first = true, true
	default:
		b.suppressed++
		now := time.Now()
		if b.now != nil {
			now = b.now()
		}
		if b.lastSummary.IsZero() || now.Sub(b.lastSummary) >= SummaryEvery {
			summary, b.suppressed, b.lastSummary = b.suppressed, 0, now
		}
	}
	logf := b.Logf
	b.logMu.Unlock()
	if logf == nil {
		logf = log.Printf
	}
	switch {
	case first:
		logf("%s bus: unhandled %s of %d bytes at %#x (ignored; logged once)", b.name, kind, n, addr)
	case summary > 0:
		logf("%s bus: %d more unhandled accesses to addresses past the first %d, latest a %s of %d bytes at %#x (ignored; counted, logged at most once per %v)",
			b.name, summary, MaxLoggedAddrs, kind, n, addr, SummaryEvery)
	}
}

// Read dispatches a guest read. It reports whether a device handled it; unhandled reads fill data with 0xff.
func (b *Bus) Read(addr uint64, data []byte) bool {
	d, off, ok := b.find(addr)
	if !ok {
		for i := range data {
			data[i] = 0xff
		}
		b.unhandled("read", addr, len(data))
		return false
	}
	d.Read(off, data)
	return true
}

// Write dispatches a guest write. It reports whether a device handled it.
func (b *Bus) Write(addr uint64, data []byte) bool {
	d, off, ok := b.find(addr)
	if !ok {
		b.unhandled("write", addr, len(data))
		return false
	}
	d.Write(off, data)
	return true
}
