// Package mmio implements the virtio-mmio transport, version 2 ("modern", virtio 1.x), for a device model.
//
// A Transport is a bus device (Read/Write at offsets from its MMIO base, window Size bytes) exposing the
// register layout of the virtio spec §4.2.2: magic, version, device/vendor id, 64-bit feature negotiation
// through select registers, the device status state machine (FEATURES_OK is refused if the driver accepted
// features the device did not offer or left out VIRTIO_F_VERSION_1; writing 0 resets), per-queue setup
// (QueueSel/NumMax/Num/Ready and descriptor/driver/device addresses), InterruptStatus/InterruptACK,
// ConfigGeneration and the device-specific config space from offset 0x100.
//
// # Notifications (ioeventfd)
//
// Each queue has an eventfd owned by the transport. QueueNotifiers lists them: the VMM registers each with
// KVM_IOEVENTFD at base+NotifyOffset, 4 bytes, datamatch = queue index, so a guest kick never reaches the vCPU
// thread's device code. Without that registration a plain MMIO write to QueueNotify is handled here by
// signalling the same eventfd, so both paths look the same to the device.
//
// # Interrupts (irqfd)
//
// The transport takes an Interrupt (Trigger() error), normally an irqfd bound to the device's GSI
// (edge-triggered). InterruptStatus records why (used buffer, config change); the guest acknowledges
// through InterruptACK. While a bit is still unacknowledged a new raise sends no further edge (for up to
// 50 ms), as with a level-triggered line: this relies on the driver acknowledging before it reads the
// rings, which Linux's and FreeBSD's virtio-mmio interrupt handlers do.
//
// # Device lifecycle
//
// When the driver sets DRIVER_OK the transport activates every ready queue against guest memory and calls
// Device.Activate with an Env; the device starts its worker goroutines, which must stop when Device.Reset
// returns (called on a driver reset and from Close). A device that finds the guest's queue malformed calls
// Env.Fail: the transport sets DEVICE_NEEDS_RESET, raises a config-change interrupt and logs the error once.
//
// In the guest's firmware tables the VMM declares each transport as an ACPI device _HID "LNRO0005" with its
// MMIO window (Size bytes) and GSI, or on the kernel command line as virtio_mmio.device=512@base:gsi.
package mmio

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvirt/kvirt/devices/virtio/queue"
)

// Size is the MMIO window of one transport.
const Size = 0x200

// Register offsets (virtio spec 1.2 §4.2.2).
const (
	RegMagic           = 0x000
	RegVersion         = 0x004
	RegDeviceID        = 0x008
	RegVendorID        = 0x00c
	RegDeviceFeatures  = 0x010
	RegDeviceFeatSel   = 0x014
	RegDriverFeatures  = 0x020
	RegDriverFeatSel   = 0x024
	RegQueueSel        = 0x030
	RegQueueNumMax     = 0x034
	RegQueueNum        = 0x038
	RegQueueReady      = 0x044
	RegQueueNotify     = 0x050
	RegInterruptStatus = 0x060
	RegInterruptACK    = 0x064
	RegStatus          = 0x070
	RegQueueDescLow    = 0x080
	RegQueueDescHigh   = 0x084
	RegQueueDriverLow  = 0x090
	RegQueueDriverHigh = 0x094
	RegQueueDeviceLow  = 0x0a0
	RegQueueDeviceHigh = 0x0a4
	RegSHMSel          = 0x0ac
	RegSHMLenLow       = 0x0b0
	RegSHMLenHigh      = 0x0b4
	RegConfigGen       = 0x0fc
	RegConfig          = 0x100

	// NotifyOffset is where the VMM registers the queue ioeventfds.
	NotifyOffset = RegQueueNotify
)

// Magic is "virt" little-endian.
const Magic = 0x74726976

// VendorID is what the transport reports in VendorID ("KVRT").
const VendorID = 0x5452564b

// Device status bits.
const (
	StatusAcknowledge      = 1
	StatusDriver           = 2
	StatusDriverOK         = 4
	StatusFeaturesOK       = 8
	StatusDeviceNeedsReset = 0x40
	StatusFailed           = 0x80
)

// Interrupt status bits.
const (
	IntUsedBuffer   = 1
	IntConfigChange = 2
)

// Interrupt raises the device's interrupt line (an irqfd in the VMM).
type Interrupt interface {
	Trigger() error
}

// Env is what an activated device works with.
type Env struct {
	Mem    queue.Memory
	Queues []*queue.Queue // index = queue number
	// Enabled[i] says whether the driver enabled queue i (QueueReady) before DRIVER_OK; only those are active.
	Enabled  []bool
	Features uint64 // negotiated
	// Kicks[i] receives a value when the driver notifies queue i (coalesced: capacity 1).
	Kicks []<-chan struct{}
	// Interrupt signals used buffers to the driver.
	Interrupt func() error
	// ConfigChanged bumps ConfigGeneration and raises a config-change interrupt.
	ConfigChanged func()
	// Fail marks the device DEVICE_NEEDS_RESET after a guest protocol error (logged once).
	Fail func(err error)
}

// Device is a virtio device model behind the transport.
type Device interface {
	// DeviceID is the virtio device type (1 net, 2 block, 4 entropy, ...).
	DeviceID() uint32
	// Features are the offered feature bits; the transport adds VIRTIO_F_VERSION_1.
	Features() uint64
	// QueueMaxSizes gives the number of queues and the largest size of each.
	QueueMaxSizes() []uint16
	// ReadConfig/WriteConfig access the device config space; the transport has bounds-checked the access
	// against ConfigSize.
	ConfigSize() int
	ReadConfig(offset int, data []byte)
	WriteConfig(offset int, data []byte)
	// Activate starts the device after DRIVER_OK.
	Activate(env *Env) error
	// Reset stops the device's workers and returns it to its initial state; when it returns no worker
	// touches guest memory any more. It is called for a driver reset and on Close, also if never activated.
	Reset()
}

// Logf is where the transport logs; replaceable for tests.
var Logf = log.Printf

// Transport is one virtio-mmio device window.
type Transport struct {
	dev  Device
	mem  queue.Memory
	irq  Interrupt
	name string

	mu           sync.Mutex
	status       uint32
	devFeatSel   uint32
	drvFeatSel   uint32
	drvFeatures  uint64
	queueSel     uint32
	queues       []*queue.Queue
	active       bool
	configGen    atomic.Uint32
	intStatus    atomic.Uint32
	needsReset   atomic.Bool
	failLogged   atomic.Bool
	notifyFiles  []*os.File
	kicks        []chan struct{}
	readers      sync.WaitGroup
	closed       bool
	notifyLogged bool

	kickCount []atomic.Uint64 // guest notifications per queue (eventfd counts, not wake-ups)
	irqCount  atomic.Uint64   // interrupts raised
	coalesced atomic.Uint64   // raises covered by an unacknowledged interrupt (no new edge)
	lastEdge  atomic.Int64    // time of the last edge, UnixNano
}

// New builds a transport for dev. name prefixes log messages (e.g. "virtio-blk vda").
func New(name string, dev Device, mem queue.Memory, irq Interrupt) (*Transport, error) {
	sizes := dev.QueueMaxSizes()
	t := &Transport{dev: dev, mem: mem, irq: irq, name: name, kickCount: make([]atomic.Uint64, len(sizes))}
	for i, s := range sizes {
		if s == 0 || s > queue.MaxSize || s&(s-1) != 0 {
			t.Close()
			return nil, fmt.Errorf("%s: queue %d max size %d is not a power of two ≤ %d", name, i, s, queue.MaxSize)
		}
		t.queues = append(t.queues, queue.New(s))
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("%s: eventfd for queue %d: %w", name, i, err)
		}
		f := os.NewFile(uintptr(fd), fmt.Sprintf("%s-notify-%d", name, i))
		kick := make(chan struct{}, 1)
		t.notifyFiles = append(t.notifyFiles, f)
		t.kicks = append(t.kicks, kick)
		t.readers.Add(1)
		go t.forwardKicks(f, kick, &t.kickCount[i])
	}
	return t, nil
}

// forwardKicks turns eventfd signals into channel sends until the transport closes.
func (t *Transport) forwardKicks(f *os.File, kick chan<- struct{}, count *atomic.Uint64) {
	defer t.readers.Done()
	var buf [8]byte
	for {
		if _, err := f.Read(buf[:]); err != nil {
			return // closed
		}
		count.Add(binary.LittleEndian.Uint64(buf[:]))
		select {
		case kick <- struct{}{}:
		default:
		}
	}
}

// Notifier is one queue's ioeventfd: the VMM registers FD for a 4-byte write of Datamatch at base+Offset.
type Notifier struct {
	Queue     int
	Offset    uint64
	Datamatch uint64
	FD        int
}

// QueueNotifiers lists the eventfds the VMM should register as ioeventfds. They stay valid until Close.
func (t *Transport) QueueNotifiers() []Notifier {
	var ns []Notifier
	for i, f := range t.notifyFiles {
		ns = append(ns, Notifier{Queue: i, Offset: NotifyOffset, Datamatch: uint64(i), FD: int(f.Fd())})
	}
	return ns
}

// NotifyFiles are the queue eventfds, index = queue (the shape vmm.Machine.AddVirtioMMIO takes).
func (t *Transport) NotifyFiles() []*os.File { return append([]*os.File(nil), t.notifyFiles...) }

// Reset returns the device to its power-on state, stopping its workers: the VMM calls it when the guest
// resets in place (before guest memory is reused), as a hardware reset line would.
func (t *Transport) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.resetLocked()
	}
}

// Close resets the device (stopping its workers), closes the device too if it has a Close method (a disk
// then syncs its image: writes the guest saw complete are durable when Close returns), and releases the
// eventfds.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.resetLocked()
	t.mu.Unlock()
	var err error
	if c, ok := t.dev.(interface{ Close() error }); ok {
		err = c.Close()
	}
	for _, f := range t.notifyFiles {
		f.Close()
	}
	t.readers.Wait()
	return err
}

func (t *Transport) selectedQueue() *queue.Queue {
	if int(t.queueSel) < len(t.queues) {
		return t.queues[t.queueSel]
	}
	return nil
}

// Read handles a guest load from the window.
func (t *Transport) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
	if offset >= RegConfig {
		t.readConfig(offset-RegConfig, data)
		return
	}
	if len(data) != 4 || offset%4 != 0 {
		return // registers are 32-bit; other widths read as zero
	}
	binary.LittleEndian.PutUint32(data, t.readReg(offset))
}

func (t *Transport) readReg(offset uint64) uint32 {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch offset {
	case RegMagic:
		return Magic
	case RegVersion:
		return 2
	case RegDeviceID:
		return t.dev.DeviceID()
	case RegVendorID:
		return VendorID
	case RegDeviceFeatures:
		if t.devFeatSel < 2 {
			return half(t.offered(), uint64(t.devFeatSel)*4)
		}
		return 0
	case RegQueueNumMax:
		if q := t.selectedQueue(); q != nil {
			return uint32(q.MaxSize)
		}
		return 0
	case RegQueueNum:
		if q := t.selectedQueue(); q != nil {
			return uint32(q.Size)
		}
	case RegQueueReady:
		if q := t.selectedQueue(); q != nil && q.Ready {
			return 1
		}
	case RegInterruptStatus:
		return t.intStatus.Load()
	case RegStatus:
		s := t.status
		if t.needsReset.Load() {
			s |= StatusDeviceNeedsReset
		}
		return s
	case RegQueueDescLow, RegQueueDescHigh, RegQueueDriverLow, RegQueueDriverHigh, RegQueueDeviceLow, RegQueueDeviceHigh:
		if q := t.selectedQueue(); q != nil {
			return half(*queueAddr(q, offset), offset)
		}
	case RegSHMLenLow, RegSHMLenHigh:
		return 0xffffffff // no shared memory regions
	case RegConfigGen:
		return t.configGen.Load()
	}
	return 0
}

// queueAddr is the 64-bit ring address of q that the register pair holding offset (low or high half) sets.
func queueAddr(q *queue.Queue, offset uint64) *uint64 {
	switch offset &^ 4 {
	case RegQueueDescLow:
		return &q.DescAddr
	case RegQueueDriverLow:
		return &q.DriverAddr
	}
	return &q.DeviceAddr
}

// half is the 32-bit half of v that a register pair exposes at offset: bit 2 of the offset selects the high
// half (the pairs are at …0 and …4), as with the two 32-bit feature words.
func half(v, offset uint64) uint32 { return uint32(v >> (offset & 4 * 8)) }

// setHalf replaces the half of *v that offset selects (see half) with x.
func setHalf(v *uint64, offset uint64, x uint32) {
	shift := offset & 4 * 8
	*v = *v&^(0xffffffff<<shift) | uint64(x)<<shift
}

func (t *Transport) offered() uint64 {
	return t.dev.Features() | 1<<queue.FeatureVersion1
}

func (t *Transport) readConfig(off uint64, data []byte) {
	n := uint64(t.dev.ConfigSize())
	if off >= n || uint64(len(data)) > n-off {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dev.ReadConfig(int(off), data)
}

// Write handles a guest store to the window.
func (t *Transport) Write(offset uint64, data []byte) {
	if offset >= RegConfig {
		off := offset - RegConfig
		n := uint64(t.dev.ConfigSize())
		if off >= n || uint64(len(data)) > n-off {
			return
		}
		t.mu.Lock()
		t.dev.WriteConfig(int(off), data)
		t.mu.Unlock()
		return
	}
	if len(data) != 4 || offset%4 != 0 {
		return
	}
	v := binary.LittleEndian.Uint32(data)
	if offset == RegQueueNotify {
		t.notify(v)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	q := t.selectedQueue()
	// Queue registers may only change while the queue is not live.
	queueWritable := q != nil && !q.Ready && t.status&StatusDriverOK == 0
	switch offset {
	case RegDeviceFeatSel:
		t.devFeatSel = v
	case RegDriverFeatures:
		if t.status&StatusFeaturesOK != 0 {
			return // frozen once FEATURES_OK is set
		}
		if t.drvFeatSel < 2 {
			setHalf(&t.drvFeatures, uint64(t.drvFeatSel)*4, v)
		}
	case RegDriverFeatSel:
		t.drvFeatSel = v
	case RegQueueSel:
		t.queueSel = v
	case RegQueueNum:
		if queueWritable {
			q.Size = uint16(min(v, 0xffff))
			if v > uint32(q.MaxSize) {
				q.Size = 0 // rejected at activation
			}
		}
	case RegQueueReady:
		if q == nil {
			return
		}
		if v == 0 {
			// The driver stops using the queue (Linux does so when deleting queues, normally after a
			// reset); the device's workers keep their snapshot (Env.Enabled) until the next reset.
			q.Ready = false
			return
		}
		if t.status&StatusDriverOK == 0 {
			q.Ready = true
		}
	case RegQueueDescLow, RegQueueDescHigh, RegQueueDriverLow, RegQueueDriverHigh, RegQueueDeviceLow, RegQueueDeviceHigh:
		if queueWritable {
			setHalf(queueAddr(q, offset), offset, v)
		}
	case RegInterruptACK:
		t.intStatus.And(^v)
	case RegStatus:
		t.setStatus(v)
	case RegSHMSel:
	}
}

// notify is the fallback path of a QueueNotify write that no ioeventfd caught.
func (t *Transport) notify(v uint32) {
	// With VIRTIO_F_NOTIFICATION_DATA (not offered) the value would carry more; here it is the queue index.
	i := int(v & 0xffff)
	if i >= len(t.notifyFiles) {
		return
	}
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	// os.File.Write is safe against a concurrent Close (it then fails with ErrClosed instead of writing to a
	// reused descriptor number).
	if _, err := t.notifyFiles[i].Write(one[:]); err != nil && !errors.Is(err, os.ErrClosed) {
		t.mu.Lock()
		logged := t.notifyLogged
		t.notifyLogged = true
		t.mu.Unlock()
		if !logged {
			Logf("%s: queue %d notify: %v", t.name, i, err)
		}
	}
}

func (t *Transport) setStatus(v uint32) {
	if v == 0 {
		t.resetLocked()
		return
	}
	old := t.status
	if v&^old&^uint32(StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK|StatusFailed) != 0 {
		return // unknown bits (or DEVICE_NEEDS_RESET, which only the device sets)
	}
	if old&^v != 0 {
		return // the driver may not clear bits except by writing 0
	}
	if v&StatusFeaturesOK != 0 && old&StatusFeaturesOK == 0 {
		if t.drvFeatures&^t.offered() != 0 || t.drvFeatures&(1<<queue.FeatureVersion1) == 0 {
			// Refuse: FEATURES_OK stays clear, the driver reads it back and gives up.
			v &^= StatusFeaturesOK
		}
	}
	if v&StatusDriverOK != 0 && old&StatusDriverOK == 0 {
		if v&StatusFeaturesOK == 0 {
			return
		}
		t.status = v
		t.activateLocked()
		return
	}
	t.status = v
}

func (t *Transport) activateLocked() {
	env := &Env{
		Mem:           t.mem,
		Queues:        t.queues,
		Features:      t.drvFeatures,
		Interrupt:     func() error { return t.raise(IntUsedBuffer) },
		ConfigChanged: t.configChanged,
		Fail:          t.fail,
	}
	for _, k := range t.kicks {
		env.Kicks = append(env.Kicks, k)
	}
	for i, q := range t.queues {
		env.Enabled = append(env.Enabled, q.Ready)
		if !q.Ready {
			continue
		}
		if err := q.Activate(t.mem, t.drvFeatures); err != nil {
			t.failLocked(fmt.Errorf("queue %d: %w", i, err))
			return
		}
	}
	if err := t.dev.Activate(env); err != nil {
		t.failLocked(fmt.Errorf("activate: %w", err))
		return
	}
	t.active = true
}

// raise sets bit in InterruptStatus and sends an edge, unless the bit was still set from an edge sent less
// than reraiseAfter ago: the guest has not acknowledged that interrupt yet, and since it acknowledges before
// it looks at the rings (Linux's vm_interrupt), it will see what this call reports — what a level-triggered
// line (QEMU's) gives for free. Each edge the guest takes with nothing left to do costs an interrupted
// guest two register exits and its handler (~ms when ring 0 is interpreted). After reraiseAfter the edge is
// sent anyway, so an edge the guest lost (a masked pin) cannot stall the device.
func (t *Transport) raise(bit uint32) error {
	now := time.Now().UnixNano()
	if t.intStatus.Or(bit)&bit != 0 && now-t.lastEdge.Load() < int64(reraiseAfter) {
		t.coalesced.Add(1)
		return nil
	}
	t.lastEdge.Store(now)
	t.irqCount.Add(1)
	if t.irq == nil {
		return nil
	}
	return t.irq.Trigger()
}

// reraiseAfter bounds interrupt coalescing (see raise).
const reraiseAfter = 50 * time.Millisecond

func (t *Transport) configChanged() {
	t.configGen.Add(1)
	if err := t.raise(IntConfigChange); err != nil {
		Logf("%s: config interrupt: %v", t.name, err)
	}
}

func (t *Transport) fail(err error) {
	if t.needsReset.Swap(true) {
		return
	}
	if !t.failLogged.Swap(true) {
		Logf("%s: device needs reset: %v", t.name, err)
	}
	if err := t.raise(IntConfigChange); err != nil {
		Logf("%s: config interrupt: %v", t.name, err)
	}
}

func (t *Transport) failLocked(err error) { t.fail(err) }

// Debug describes the transport and its queues (diagnostics for a stalled device).
func (t *Transport) Debug() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var mem queue.Memory
	if t.active {
		mem = t.mem
	}
	c := t.Counters()
	out := fmt.Sprintf("%s: status=%#x features=%#x intStatus=%#x needsReset=%v kicks=%v interrupts=%d coalesced=%d", t.name,
		t.status, t.drvFeatures, t.intStatus.Load(), t.needsReset.Load(), c.Kicks, c.Interrupts, c.Coalesced)
	for i, q := range t.queues {
		out += fmt.Sprintf("\n  queue %d: %s", i, q.Snapshot(mem))
	}
	return out
}

// Counters are the guest's notifications per queue and the interrupts raised since New: with the device's
// own counts they show how well notification and interrupt suppression (EVENT_IDX) work.
type Counters struct {
	Kicks      []uint64
	Interrupts uint64 // edges sent
	Coalesced  uint64 // raises that needed no new edge: the guest had not acknowledged the previous one
}

// Counters reads the transport's counters.
func (t *Transport) Counters() Counters {
	c := Counters{Interrupts: t.irqCount.Load(), Coalesced: t.coalesced.Load()}
	for i := range t.kickCount {
		c.Kicks = append(c.Kicks, t.kickCount[i].Load())
	}
	return c
}

// NeedsReset reports whether the device flagged DEVICE_NEEDS_RESET (for tests and diagnostics).
func (t *Transport) NeedsReset() bool { return t.needsReset.Load() }

func (t *Transport) resetLocked() {
	t.dev.Reset()
	t.active = false
	t.status = 0
	t.devFeatSel, t.drvFeatSel, t.drvFeatures, t.queueSel = 0, 0, 0, 0
	for _, q := range t.queues {
		q.Reset()
	}
	t.intStatus.Store(0)
	t.needsReset.Store(false)
	// Drop kicks that arrived for the old incarnation.
	for _, k := range t.kicks {
		select {
		case <-k:
		default:
		}
	}
}

// Serve runs the standard device loop for queue qi until ctx ends: wait for a kick, pop every available
// chain and hand it to handle (which completes it, now or later, with Queue.Push and Env.Interrupt), and
// re-enable notifications before sleeping. A malformed queue, or an error from handle, marks the device
// DEVICE_NEEDS_RESET and ends the loop.
func (e *Env) Serve(ctx context.Context, qi int, handle func(*queue.Chain) error) {
	q := e.Queues[qi]
	if !e.Enabled[qi] {
		return
	}
	kick := e.Kicks[qi]
	for {
		for {
			c, err := q.Pop()
			if err != nil {
				e.Fail(fmt.Errorf("queue %d: %w", qi, err))
				return
			}
			if c == nil {
				more, err := q.EnableNotify()
				if err != nil {
					e.Fail(fmt.Errorf("queue %d: %w", qi, err))
					return
				}
				if !more {
					break
				}
				continue
			}
			if err := handle(c); err != nil {
				e.Fail(fmt.Errorf("queue %d: %w", qi, err))
				return
			}
			if ctx.Err() != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
	}
}

// Complete pushes one used chain and interrupts the driver if it asked for it.
func (e *Env) Complete(qi int, head uint16, written uint32) error {
	need, err := e.Queues[qi].PushAndCheck(head, written)
	if err != nil {
		return err
	}
	if need {
		return e.Interrupt()
	}
	return nil
}

// KernelParam is the Linux command-line declaration of a transport at base with interrupt gsi
// (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), an alternative to the ACPI LNRO0005 device.
func KernelParam(base uint64, gsi uint32) string {
	return fmt.Sprintf("virtio_mmio.device=%d@%#x:%d", Size, base, gsi)
}
