// Package virtiotest is a fake guest for testing virtio devices without a VM: guest memory backed by an
// anonymous mapping (like the VMM's), and a small virtio-mmio driver that negotiates features, lays out split
// virtqueues, posts descriptor chains (direct or indirect), kicks and reaps completions — the same steps
// Linux's virtio_mmio and virtio_ring drivers take. Attach wires a device model to both in one call.
package virtiotest

import (
	"encoding/binary"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvirt/kvirt/devices/virtio/mmio"
)

// MemBase is the guest-physical address of the RAM Plug and Attach map: not 0, so a device that mixes up
// guest addresses and offsets into RAM fails.
const MemBase = 0x100000

// Plug puts dev behind a virtio-mmio transport over memSize bytes of fresh fake guest RAM and a fake
// interrupt line, and returns a driver for it that has not touched the device yet (for tests of the
// initialisation itself; Attach also initialises). The transport (and with it the device) and the memory
// are closed when the test ends.
func Plug(t testing.TB, dev mmio.Device, memSize uint64) (*Driver, *mmio.Transport) {
	t.Helper()
	mem, err := NewMem(MemBase, memSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	irq := NewIRQ()
	tr, err := mmio.New(t.Name(), dev, mem, irq)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return &Driver{Regs: tr, Mem: mem, IRQ: irq}, tr
}

// Attach is Plug followed by the driver's Init: the device is live, with features ∩ offered negotiated and
// every queue at its maximum size.
func Attach(t testing.TB, dev mmio.Device, features, memSize uint64) (*Driver, *mmio.Transport) {
	t.Helper()
	d, tr := Plug(t, dev, memSize)
	if err := d.Init(features, 0); err != nil {
		t.Fatal(err)
	}
	return d, tr
}

// Mem is fake guest RAM at guest-physical address Base, with a bump allocator. Like the VMM's memory it is
// an mmap'd region, so devices and the fake driver may touch it concurrently the way a guest and a VMM do.
type Mem struct {
	Base uint64
	buf  []byte

	mu   sync.Mutex
	next uint64
}

// NewMem maps size bytes of fake guest RAM at base.
func NewMem(base, size uint64) (*Mem, error) {
	b, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("virtiotest: mmap %d bytes: %w", size, err)
	}
	return &Mem{Base: base, buf: b, next: base}, nil
}

// Close unmaps the memory.
func (m *Mem) Close() error { return unix.Munmap(m.buf) }

// Slice is the bounds-checked view devices use.
func (m *Mem) Slice(gpa, n uint64) ([]byte, error) {
	if gpa < m.Base || gpa-m.Base > uint64(len(m.buf)) || n > uint64(len(m.buf))-(gpa-m.Base) {
		return nil, fmt.Errorf("guest range %#x+%#x outside RAM %#x+%#x", gpa, n, m.Base, len(m.buf))
	}
	off := gpa - m.Base
	return m.buf[off : off+n : off+n], nil
}

// Bytes is Slice that panics: for test code addressing memory it allocated itself.
func (m *Mem) Bytes(gpa, n uint64) []byte {
	b, err := m.Slice(gpa, n)
	if err != nil {
		panic(err)
	}
	return b
}

// Alloc reserves n bytes aligned to align (a power of two) and returns their guest address.
func (m *Mem) Alloc(n, align uint64) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := (m.next + align - 1) &^ (align - 1)
	if a+n > m.Base+uint64(len(m.buf)) {
		panic(fmt.Sprintf("virtiotest: out of fake guest memory allocating %d bytes", n))
	}
	m.next = a + n
	return a
}

// Put copies b into freshly allocated memory and returns its address.
func (m *Mem) Put(b []byte) uint64 {
	a := m.Alloc(uint64(max(len(b), 1)), 16)
	copy(m.Bytes(a, uint64(len(b))), b)
	return a
}

// Regs is a virtio-mmio register window (a *mmio.Transport).
type Regs interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// IRQ is a fake interrupt line: Trigger makes C readable.
type IRQ struct {
	C     chan struct{}
	mu    sync.Mutex
	count int
}

// NewIRQ returns an untriggered line.
func NewIRQ() *IRQ { return &IRQ{C: make(chan struct{}, 1)} }

// Trigger raises the line.
func (i *IRQ) Trigger() error {
	i.mu.Lock()
	i.count++
	i.mu.Unlock()
	select {
	case i.C <- struct{}{}:
	default:
	}
	return nil
}

// Count is how many times the line was raised.
func (i *IRQ) Count() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.count
}

// Driver is a virtio-mmio driver over Regs.
type Driver struct {
	Regs     Regs
	Mem      *Mem
	IRQ      *IRQ
	Features uint64 // negotiated
	Queues   []*VQ
}

func (d *Driver) r32(off uint64) uint32 {
	var b [4]byte
	d.Regs.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (d *Driver) w32(off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	d.Regs.Write(off, b[:])
}

// Register offsets used by the driver, written out from the virtio spec (§4.2.2) rather than taken from
// package mmio, so that a wrong constant there shows up as a test failure here.
const (
	regMagic        = 0x000
	regVersion      = 0x004
	regDevFeatures  = 0x010
	regDevFeatSel   = 0x014
	regDrvFeatures  = 0x020
	regDrvFeatSel   = 0x024
	regQueueSel     = 0x030
	regQueueNumMax  = 0x034
	regQueueNum     = 0x038
	regQueueReady   = 0x044
	regQueueNotify  = 0x050
	regIntStatus    = 0x060
	regIntACK       = 0x064
	regStatus       = 0x070
	regDescLow      = 0x080
	regDescHigh     = 0x084
	regDriverLow    = 0x090
	regDriverHigh   = 0x094
	regDeviceLow    = 0x0a0
	regDeviceHigh   = 0x0a4
	regConfig       = 0x100
	statusAck       = 1
	statusDriver    = 2
	statusDriverOK  = 4
	statusFeatureOK = 8
	featEventIdx    = 29
)

// Status reads the device status register.
func (d *Driver) Status() uint32 { return d.r32(regStatus) }

// DeviceFeatures reads the 64 offered feature bits.
func (d *Driver) DeviceFeatures() uint64 {
	d.w32(regDevFeatSel, 0)
	lo := d.r32(regDevFeatures)
	d.w32(regDevFeatSel, 1)
	hi := d.r32(regDevFeatures)
	return uint64(hi)<<32 | uint64(lo)
}

// Init resets the device, accepts want ∩ offered features, sets up every queue with size qsize (0: NumMax)
// and sets DRIVER_OK, the sequence of virtio spec §3.1.1.
func (d *Driver) Init(want uint64, qsize uint16) error {
	if m := d.r32(regMagic); m != 0x74726976 {
		return fmt.Errorf("bad magic %#x", m)
	}
	if v := d.r32(regVersion); v != 2 {
		return fmt.Errorf("version %d, want 2", v)
	}
	d.w32(regStatus, 0)
	d.w32(regStatus, statusAck)
	d.w32(regStatus, statusAck|statusDriver)
	d.Features = d.DeviceFeatures() & want
	d.w32(regDrvFeatSel, 0)
	d.w32(regDrvFeatures, uint32(d.Features))
	d.w32(regDrvFeatSel, 1)
	d.w32(regDrvFeatures, uint32(d.Features>>32))
	d.w32(regStatus, statusAck|statusDriver|statusFeatureOK)
	if d.Status()&statusFeatureOK == 0 {
		return fmt.Errorf("device refused features %#x", d.Features)
	}
	d.Queues = nil
	for i := 0; ; i++ {
		d.w32(regQueueSel, uint32(i))
		max := d.r32(regQueueNumMax)
		if max == 0 {
			break
		}
		n := uint16(max)
		if qsize != 0 && uint32(qsize) < max {
			n = qsize
		}
		q := &VQ{d: d, Index: i, Size: n, eventIdx: d.Features&(1<<featEventIdx) != 0}
		q.desc = d.Mem.Alloc(16*uint64(n), 4096)
		q.avail = d.Mem.Alloc(6+2*uint64(n), 4096)
		q.used = d.Mem.Alloc(6+8*uint64(n), 4096)
		for j := uint16(0); j < n; j++ {
			q.free = append(q.free, j)
		}
		d.w32(regQueueNum, uint32(n))
		d.w32(regDescLow, uint32(q.desc))
		d.w32(regDescHigh, uint32(q.desc>>32))
		d.w32(regDriverLow, uint32(q.avail))
		d.w32(regDriverHigh, uint32(q.avail>>32))
		d.w32(regDeviceLow, uint32(q.used))
		d.w32(regDeviceHigh, uint32(q.used>>32))
		d.w32(regQueueReady, 1)
		d.Queues = append(d.Queues, q)
	}
	d.w32(regStatus, statusAck|statusDriver|statusFeatureOK|statusDriverOK)
	return nil
}

// ReadConfig reads n bytes of device config at off (one access of n ≤ 8 bytes).
func (d *Driver) ReadConfig(off uint64, n int) []byte {
	b := make([]byte, n)
	d.Regs.Read(regConfig+off, b)
	return b
}

// Buf is one descriptor of a chain to post.
type Buf struct {
	Addr  uint64
	Len   uint32
	Write bool // device-writable
}

// VQ is the driver side of one split virtqueue.
type VQ struct {
	d        *Driver
	Index    int
	Size     uint16
	desc     uint64
	avail    uint64
	used     uint64
	eventIdx bool

	mu       sync.Mutex
	free     []uint16
	chains   map[uint16][]uint16
	availIdx uint16
	lastUsed uint16
}

func putDesc(b []byte, addr uint64, n uint32, flags, next uint16) {
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

func flagsOf(b Buf, last bool) uint16 {
	var f uint16
	if b.Write {
		f |= 2
	}
	if !last {
		f |= 1
	}
	return f
}

// Add posts a chain of direct descriptors and returns its head. It does not kick.
func (q *VQ) Add(bufs []Buf) (uint16, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(bufs) == 0 || len(bufs) > len(q.free) {
		return 0, fmt.Errorf("queue %d: %d descriptors requested, %d free", q.Index, len(bufs), len(q.free))
	}
	ids := append([]uint16(nil), q.free[:len(bufs)]...)
	q.free = q.free[len(bufs):]
	for i, b := range bufs {
		next := uint16(0)
		if i+1 < len(bufs) {
			next = ids[i+1]
		}
		putDesc(q.d.Mem.Bytes(q.desc+16*uint64(ids[i]), 16), b.Addr, b.Len, flagsOf(b, i+1 == len(bufs)), next)
	}
	q.publish(ids)
	return ids[0], nil
}

// AddIndirect posts a chain as one indirect descriptor pointing at a table holding bufs.
func (q *VQ) AddIndirect(bufs []Buf) (uint16, error) {
	tbl := q.d.Mem.Alloc(16*uint64(len(bufs)), 16)
	for i, b := range bufs {
		putDesc(q.d.Mem.Bytes(tbl+16*uint64(i), 16), b.Addr, b.Len, flagsOf(b, i+1 == len(bufs)), uint16(i+1))
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.free) == 0 {
		return 0, fmt.Errorf("queue %d full", q.Index)
	}
	id := q.free[0]
	q.free = q.free[1:]
	putDesc(q.d.Mem.Bytes(q.desc+16*uint64(id), 16), tbl, uint32(16*len(bufs)), 4, 0)
	q.publish([]uint16{id})
	return id, nil
}

// RawDesc writes descriptor i verbatim (for malformed-chain tests) and RawPublish makes head available.
func (q *VQ) RawDesc(i uint16, addr uint64, n uint32, flags, next uint16) {
	putDesc(q.d.Mem.Bytes(q.desc+16*uint64(i), 16), addr, n, flags, next)
}

// RawPublish makes head available without bookkeeping.
func (q *VQ) RawPublish(head uint16) {
	q.mu.Lock()
	defer q.mu.Unlock()
	binary.LittleEndian.PutUint16(q.d.Mem.Bytes(q.avail+4+2*uint64(q.availIdx%q.Size), 2), head)
	q.availIdx++
	binary.LittleEndian.PutUint16(q.d.Mem.Bytes(q.avail+2, 2), q.availIdx)
}

func (q *VQ) publish(ids []uint16) {
	if q.chains == nil {
		q.chains = map[uint16][]uint16{}
	}
	q.chains[ids[0]] = ids
	binary.LittleEndian.PutUint16(q.d.Mem.Bytes(q.avail+4+2*uint64(q.availIdx%q.Size), 2), ids[0])
	q.availIdx++
	binary.LittleEndian.PutUint16(q.d.Mem.Bytes(q.avail+2, 2), q.availIdx)
}

// Kick notifies the device through an MMIO write to QueueNotify.
func (q *VQ) Kick() { q.d.w32(regQueueNotify, uint32(q.Index)) }

// SuppressInterrupts sets or clears VIRTQ_AVAIL_F_NO_INTERRUPT (meaningful without EVENT_IDX).
func (q *VQ) SuppressInterrupts(on bool) {
	v := uint16(0)
	if on {
		v = 1
	}
	binary.LittleEndian.PutUint16(q.d.Mem.Bytes(q.avail, 2), v)
}

// SetUsedEvent writes used_event (EVENT_IDX).
func (q *VQ) SetUsedEvent(v uint16) {
	binary.LittleEndian.PutUint16(q.d.Mem.Bytes(q.avail+4+2*uint64(q.Size), 2), v)
}

// AvailEvent reads the device's avail_event (EVENT_IDX).
func (q *VQ) AvailEvent() uint16 {
	return binary.LittleEndian.Uint16(q.d.Mem.Bytes(q.used+4+8*uint64(q.Size), 2))
}

// Used is one completion.
type Used struct {
	Head uint16
	Len  uint32
}

// Reap returns completions the device has pushed since the last call, freeing their descriptors.
func (q *VQ) Reap() []Used {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Used
	for {
		idx := binary.LittleEndian.Uint16(q.d.Mem.Bytes(q.used+2, 2))
		for q.lastUsed != idx {
			e := q.d.Mem.Bytes(q.used+4+8*uint64(q.lastUsed%q.Size), 8)
			u := Used{Head: uint16(binary.LittleEndian.Uint32(e)), Len: binary.LittleEndian.Uint32(e[4:])}
			q.lastUsed++
			if ids, ok := q.chains[u.Head]; ok {
				q.free = append(q.free, ids...)
				delete(q.chains, u.Head)
			}
			out = append(out, u)
		}
		if !q.eventIdx {
			return out
		}
		// As Linux's virtqueue_enable_cb: publish used_event, then look again. An entry the device
		// pushed before it could see the new used_event earns no interrupt (it checked the old one),
		// so a driver that slept now would wait for the next completion.
		q.SetUsedEvent(q.lastUsed)
		if binary.LittleEndian.Uint16(q.d.Mem.Bytes(q.used+2, 2)) == q.lastUsed {
			return out
		}
	}
}

// Wait reaps until at least n completions arrived or the timeout passes, sleeping on the interrupt line
// between looks like a driver does (so a missing interrupt makes it time out).
func (q *VQ) Wait(n int, timeout time.Duration) ([]Used, error) {
	deadline := time.Now().Add(timeout)
	var all []Used
	for {
		all = append(all, q.Reap()...)
		if len(all) >= n {
			q.d.w32(regIntACK, q.d.r32(regIntStatus))
			return all, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return all, fmt.Errorf("queue %d: %d of %d completions after %v", q.Index, len(all), n, timeout)
		}
		select {
		case <-q.d.IRQ.C:
			q.d.w32(regIntACK, q.d.r32(regIntStatus))
		case <-time.After(left):
			all = append(all, q.Reap()...)
			return all, fmt.Errorf("queue %d: %d of %d completions and no further interrupt within %v", q.Index, len(all), n, timeout)
		}
	}
}
