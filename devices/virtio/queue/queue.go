// Package queue implements the device side of a virtio 1.x split virtqueue: the descriptor table, the
// driver (available) ring and the device (used) ring living in guest memory.
//
// Everything read from guest memory is untrusted. Every descriptor index, address, length and chain length is
// checked; guest memory is only reached through Memory.Slice, which bounds-checks against guest RAM. A
// malformed queue (a descriptor loop, an out-of-range index or address, a nested indirect table, an avail
// index that jumps by more than the queue size) yields an error; the transport then marks the device
// DEVICE_NEEDS_RESET. Nothing here panics on guest input.
//
// Concurrency: one goroutine pops chains (Pop, EnableNotify); completions (Push, PushBatch, NeedInterrupt) may
// come from several goroutines and are serialised by an internal mutex. Setup fields (Size, addresses,
// Ready) are written by the transport only while the device is not running.
//
// Supported ring features: VIRTIO_RING_F_INDIRECT_DESC and VIRTIO_RING_F_EVENT_IDX (suppression in both
// directions: the device publishes avail_event and honours used_event).
package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Memory is the part of guest memory a virtqueue needs: a bounds-checked view of [gpa, gpa+n) of guest RAM.
// The returned slice aliases guest memory. It must fail (never panic) for ranges outside guest RAM.
type Memory interface {
	Slice(gpa, n uint64) ([]byte, error)
}

// Descriptor flags (virtq_desc.flags).
const (
	DescFNext     = 1
	DescFWrite    = 2
	DescFIndirect = 4
)

// Ring flags.
const (
	availFNoInterrupt = 1
)

// Feature bits relevant to the ring layer.
const (
	FeatureIndirectDesc = 28
	FeatureEventIdx     = 29
	FeatureVersion1     = 32
)

// MaxSize is the largest queue size the split ring allows.
const MaxSize = 32768

const descSize = 16

// ErrInvalid wraps every error caused by a malformed guest queue.
var ErrInvalid = errors.New("invalid virtqueue")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Desc is one descriptor as read from guest memory.
type Desc struct {
	Addr  uint64
	Len   uint32
	Flags uint16
	Next  uint16
}

// Chain is one descriptor chain taken from the available ring, with indirect tables expanded. Readable
// buffers (driver → device) come first, writable ones (device → driver) after, as the spec requires.
type Chain struct {
	Head     uint16
	Readable [][]byte // slices aliasing guest memory
	Writable [][]byte
}

// ReadableLen is the total length of the readable buffers.
func (c *Chain) ReadableLen() int {
	n := 0
	for _, b := range c.Readable {
		n += len(b)
	}
	return n
}

// WritableLen is the total length of the writable buffers.
func (c *Chain) WritableLen() int {
	n := 0
	for _, b := range c.Writable {
		n += len(b)
	}
	return n
}

// Queue is one split virtqueue.
type Queue struct {
	// Configuration, set by the transport while the device is stopped.
	MaxSize    uint16
	Size       uint16
	Ready      bool
	DescAddr   uint64
	DriverAddr uint64 // available ring
	DeviceAddr uint64 // used ring

	mem      Memory
	eventIdx bool
	indirect bool

	lastAvail uint16 // next avail ring entry to consume (popper goroutine only)

	mu          sync.Mutex // used ring side
	nextUsed    uint16
	signalled   uint16 // used idx at the last interrupt (event idx)
	signalValid bool

	fenceWord atomic.Uint64

	// Copies of the worker-owned indices for Snapshot (diagnostics from other goroutines).
	pubLastAvail, pubNextUsed atomic.Uint32
}

// New returns a queue whose largest size is maxSize (a power of two ≤ MaxSize).
func New(maxSize uint16) *Queue {
	return &Queue{MaxSize: maxSize, Size: maxSize}
}

// Reset returns the queue to its power-on state.
func (q *Queue) Reset() {
	q.Size = q.MaxSize
	q.Ready = false
	q.DescAddr, q.DriverAddr, q.DeviceAddr = 0, 0, 0
	q.mem = nil
	q.lastAvail = 0
	q.mu.Lock()
	q.nextUsed, q.signalled, q.signalValid = 0, 0, false
	q.mu.Unlock()
}

// fence is a full memory barrier (a locked instruction on x86): orders our used-ring stores before the
// following loads of driver-written fields, as the event-idx protocol requires.
func (q *Queue) fence() { q.fenceWord.Add(1) }

// Activate validates the configuration against guest memory and prepares the queue for use with the
// negotiated feature bits.
func (q *Queue) Activate(mem Memory, features uint64) error {
	n := uint64(q.Size)
	if n == 0 || n > uint64(q.MaxSize) || n&(n-1) != 0 {
		return invalid("queue size %d (max %d) is not a power of two in range", q.Size, q.MaxSize)
	}
	if q.DescAddr%16 != 0 || q.DriverAddr%2 != 0 || q.DeviceAddr%4 != 0 {
		return invalid("misaligned rings desc=%#x avail=%#x used=%#x", q.DescAddr, q.DriverAddr, q.DeviceAddr)
	}
	if _, err := mem.Slice(q.DescAddr, n*descSize); err != nil {
		return invalid("descriptor table %#x+%d: %v", q.DescAddr, n*descSize, err)
	}
	if _, err := mem.Slice(q.DriverAddr, 6+2*n); err != nil {
		return invalid("available ring %#x: %v", q.DriverAddr, err)
	}
	if _, err := mem.Slice(q.DeviceAddr, 6+8*n); err != nil {
		return invalid("used ring %#x: %v", q.DeviceAddr, err)
	}
	q.mem = mem
	q.eventIdx = features&(1<<FeatureEventIdx) != 0
	q.indirect = features&(1<<FeatureIndirectDesc) != 0
	// A queue activated after a reset starts from the indices the driver set up (zero).
	q.lastAvail = 0
	q.pubLastAvail.Store(0)
	q.pubNextUsed.Store(0)
	q.mu.Lock()
	q.nextUsed, q.signalled, q.signalValid = 0, 0, false
	q.mu.Unlock()
	return nil
}

func (q *Queue) read16(gpa uint64) (uint16, error) {
	b, err := q.mem.Slice(gpa, 2)
	if err != nil {
		return 0, invalid("read %#x: %v", gpa, err)
	}
	return binary.LittleEndian.Uint16(b), nil
}

func (q *Queue) write16(gpa uint64, v uint16) error {
	b, err := q.mem.Slice(gpa, 2)
	if err != nil {
		return invalid("write %#x: %v", gpa, err)
	}
	binary.LittleEndian.PutUint16(b, v)
	return nil
}

// availIdx reads the driver's avail->idx.
func (q *Queue) availIdx() (uint16, error) { return q.read16(q.DriverAddr + 2) }

// Pending reports whether the driver has made chains available that were not popped yet.
func (q *Queue) Pending() (bool, error) {
	if q.mem == nil {
		return false, nil
	}
	idx, err := q.availIdx()
	if err != nil {
		return false, err
	}
	return idx != q.lastAvail, nil
}

// Pop takes the next available chain. It returns (nil, nil) when the ring is empty.
func (q *Queue) Pop() (*Chain, error) {
	if q.mem == nil {
		return nil, nil
	}
	idx, err := q.availIdx()
	if err != nil {
		return nil, err
	}
	if idx == q.lastAvail {
		return nil, nil
	}
	if uint16(idx-q.lastAvail) > q.Size {
		return nil, invalid("avail idx %d is more than %d ahead of %d", idx, q.Size, q.lastAvail)
	}
	q.fence() // read the ring entry only after the index (x86 keeps load order; the compiler must too)
	slot := uint64(q.lastAvail % q.Size)
	head, err := q.read16(q.DriverAddr + 4 + 2*slot)
	if err != nil {
		return nil, err
	}
	q.lastAvail++
	q.pubLastAvail.Store(uint32(q.lastAvail))
	c := &Chain{Head: head}
	if err := q.walk(c, head); err != nil {
		return nil, err
	}
	return c, nil
}

func readDesc(mem Memory, table uint64, i uint16) (Desc, error) {
	b, err := mem.Slice(table+uint64(i)*descSize, descSize)
	if err != nil {
		return Desc{}, invalid("descriptor %d at %#x: %v", i, table, err)
	}
	return Desc{
		Addr:  binary.LittleEndian.Uint64(b[0:]),
		Len:   binary.LittleEndian.Uint32(b[8:]),
		Flags: binary.LittleEndian.Uint16(b[12:]),
		Next:  binary.LittleEndian.Uint16(b[14:]),
	}, nil
}

// walk follows the chain starting at head, expanding an indirect table, and fills c.
func (q *Queue) walk(c *Chain, head uint16) error {
	return WalkChain(q.mem, q.DescAddr, q.Size, head, q.indirect, c)
}

// WalkChain follows the descriptor chain starting at head in the table at table (size entries) and appends
// its buffers to c. It is the chain walker used by Pop, exported for fuzzing and tools. The total number of
// descriptors visited (direct plus indirect) is bounded by size plus the indirect table length, so a loop is
// detected rather than followed forever.
func WalkChain(mem Memory, table uint64, size uint16, head uint16, allowIndirect bool, c *Chain) error {
	if size == 0 {
		return invalid("empty queue")
	}
	if head >= size {
		return invalid("head index %d out of range (size %d)", head, size)
	}
	tbl, n := table, size
	idx := head
	budget := int(size) // descriptors we may still visit in the current table
	inIndirect := false
	seenWritable := false
	for {
		if budget == 0 {
			return invalid("descriptor chain from head %d is longer than its table (loop?)", head)
		}
		budget--
		d, err := readDesc(mem, tbl, idx)
		if err != nil {
			return err
		}
		if d.Flags&DescFIndirect != 0 {
			switch {
			case !allowIndirect:
				return invalid("indirect descriptor %d without VIRTIO_RING_F_INDIRECT_DESC", idx)
			case inIndirect:
				return invalid("nested indirect descriptor %d", idx)
			case d.Flags&DescFNext != 0:
				return invalid("indirect descriptor %d also has NEXT", idx)
			case d.Len == 0 || d.Len%descSize != 0:
				return invalid("indirect table length %d is not a non-zero multiple of %d", d.Len, descSize)
			case d.Len/descSize > MaxSize:
				return invalid("indirect table of %d descriptors exceeds %d", d.Len/descSize, MaxSize)
			}
			if _, err := mem.Slice(d.Addr, uint64(d.Len)); err != nil {
				return invalid("indirect table %#x+%d: %v", d.Addr, d.Len, err)
			}
			tbl, n = d.Addr, uint16(d.Len/descSize) // ≤ MaxSize fits
			idx = 0
			budget = int(d.Len / descSize)
			inIndirect = true
			continue
		}
		if d.Len > 0 {
			b, err := mem.Slice(d.Addr, uint64(d.Len))
			if err != nil {
				return invalid("buffer of descriptor %d %#x+%d: %v", idx, d.Addr, d.Len, err)
			}
			if d.Flags&DescFWrite != 0 {
				seenWritable = true
				c.Writable = append(c.Writable, b)
			} else {
				if seenWritable {
					return invalid("readable descriptor %d after a writable one", idx)
				}
				c.Readable = append(c.Readable, b)
			}
		} else if d.Flags&DescFWrite != 0 {
			seenWritable = true
		}
		if d.Flags&DescFNext == 0 {
			return nil
		}
		if d.Next >= n {
			return invalid("next index %d out of range (table of %d)", d.Next, n)
		}
		idx = d.Next
	}
}

// Push returns the chain with head to the driver, reporting written bytes.
func (q *Queue) Push(head uint16, written uint32) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pushLocked(head, written)
}

func (q *Queue) pushLocked(head uint16, written uint32) error {
	if q.mem == nil {
		return invalid("push on an inactive queue")
	}
	slot := uint64(q.nextUsed % q.Size)
	b, err := q.mem.Slice(q.DeviceAddr+4+8*slot, 8)
	if err != nil {
		return invalid("used ring entry %d: %v", slot, err)
	}
	binary.LittleEndian.PutUint32(b[0:], uint32(head))
	binary.LittleEndian.PutUint32(b[4:], written)
	q.nextUsed++
	q.pubNextUsed.Store(uint32(q.nextUsed))
	q.fence() // the element must be visible before the index
	return q.write16(q.DeviceAddr+2, q.nextUsed)
}

// Used is one completion for PushBatch.
type Used struct {
	Head    uint16
	Written uint32
}

// PushBatch returns several chains and reports whether the driver must be interrupted.
func (q *Queue) PushBatch(us []Used) (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, u := range us {
		if err := q.pushLocked(u.Head, u.Written); err != nil {
			return false, err
		}
	}
	return q.needInterruptLocked()
}

// PushAndCheck is Push followed by NeedInterrupt, atomically with respect to other completions.
func (q *Queue) PushAndCheck(head uint16, written uint32) (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.pushLocked(head, written); err != nil {
		return false, err
	}
	return q.needInterruptLocked()
}

// NeedInterrupt reports whether the driver wants an interrupt for the used entries pushed since the last
// time it returned true (VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event with VIRTIO_RING_F_EVENT_IDX).
func (q *Queue) NeedInterrupt() (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.needInterruptLocked()
}

func (q *Queue) needInterruptLocked() (bool, error) {
	if q.mem == nil {
		return false, nil
	}
	q.fence() // used idx store before reading the driver's suppression fields
	if !q.eventIdx {
		flags, err := q.read16(q.DriverAddr)
		if err != nil {
			return false, err
		}
		return flags&availFNoInterrupt == 0, nil
	}
	usedEvent, err := q.read16(q.DriverAddr + 4 + 2*uint64(q.Size))
	if err != nil {
		return false, err
	}
	newIdx, old := q.nextUsed, q.signalled
	valid := q.signalValid
	q.signalled, q.signalValid = newIdx, true
	if !valid {
		return true, nil
	}
	// vring_need_event: interrupt iff used_event lies in (old, new].
	return uint16(newIdx-usedEvent-1) < uint16(newIdx-old), nil
}

// EnableNotify tells the driver where the device will next look (avail_event, with EVENT_IDX) and reports
// whether more chains arrived meanwhile; the popper calls it when Pop returned nothing, and must pop again
// if it returns true, instead of sleeping until the next notification.
func (q *Queue) EnableNotify() (bool, error) {
	if q.mem == nil {
		return false, nil
	}
	if q.eventIdx {
		if err := q.write16(q.DeviceAddr+4+8*uint64(q.Size), q.lastAvail); err != nil {
			return false, err
		}
	}
	q.fence()
	return q.Pending()
}

// Snapshot is a diagnostic view of a queue: the device's indices and the driver-visible ring fields.
type Snapshot struct {
	Size                            uint16
	LastAvail, NextUsed             uint16 // device side
	AvailIdx, AvailFlags, UsedEvent uint16 // written by the driver
	UsedIdx, UsedFlags, AvailEvent  uint16 // written by the device
	EventIdx, Indirect, Active      bool
}

func (s Snapshot) String() string {
	return fmt.Sprintf("size=%d active=%v eventidx=%v lastAvail=%d availIdx=%d availFlags=%#x usedEvent=%d nextUsed=%d usedIdx=%d availEvent=%d",
		s.Size, s.Active, s.EventIdx, s.LastAvail, s.AvailIdx, s.AvailFlags, s.UsedEvent, s.NextUsed, s.UsedIdx, s.AvailEvent)
}

// Snapshot reads the queue's state for diagnostics; safe to call from any goroutine while the queue runs
// (the ring fields are read from guest memory as they are at that moment).
func (q *Queue) Snapshot(mem Memory) Snapshot {
	s := Snapshot{Size: q.Size, LastAvail: uint16(q.pubLastAvail.Load()), NextUsed: uint16(q.pubNextUsed.Load()),
		EventIdx: q.eventIdx, Indirect: q.indirect, Active: mem != nil}
	if mem == nil {
		return s
	}
	r := func(gpa uint64) uint16 {
		b, err := mem.Slice(gpa, 2)
		if err != nil {
			return 0xffff
		}
		return binary.LittleEndian.Uint16(b)
	}
	n := uint64(q.Size)
	s.AvailFlags, s.AvailIdx, s.UsedEvent = r(q.DriverAddr), r(q.DriverAddr+2), r(q.DriverAddr+4+2*n)
	s.UsedFlags, s.UsedIdx, s.AvailEvent = r(q.DeviceAddr), r(q.DeviceAddr+2), r(q.DeviceAddr+4+8*n)
	return s
}
