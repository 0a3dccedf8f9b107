package mmio_test

import (
	"encoding/binary"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvirt/kvirt/devices/virtio/mmio"
	"github.com/kvirt/kvirt/devices/virtio/queue"
	"github.com/kvirt/kvirt/devices/virtio/rng"
	"github.com/kvirt/kvirt/devices/virtio/virtiotest"
)

// echo is a test device: 2 queues, 8 bytes of config, completes every chain with its readable length.
type echo struct {
	mu      sync.Mutex
	cfg     [8]byte
	resets  int
	env     *mmio.Env
	stop    chan struct{}
	done    chan struct{}
	started int
}

func (*echo) DeviceID() uint32        { return 42 }
func (*echo) Features() uint64        { return 1<<queue.FeatureEventIdx | 1<<3 | 1<<40 }
func (*echo) QueueMaxSizes() []uint16 { return []uint16{16, 8} }
func (*echo) ConfigSize() int         { return 8 }
func (e *echo) ReadConfig(off int, b []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	copy(b, e.cfg[off:])
}
func (e *echo) WriteConfig(off int, b []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	copy(e.cfg[off:], b)
}
func (e *echo) Activate(env *mmio.Env) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.env, e.stop, e.done = env, make(chan struct{}), make(chan struct{})
	e.started++
	ctx, cancel := contextWithStop(e.stop)
	go func() {
		defer close(e.done)
		defer cancel()
		env.Serve(ctx, 0, func(c *queue.Chain) error { return env.Complete(0, c.Head, uint32(c.ReadableLen())) })
	}()
	return nil
}
func (e *echo) Reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.resets++
	if e.stop != nil {
		close(e.stop)
		<-e.done
		e.stop = nil
	}
}

func newEcho(t *testing.T) (*echo, *mmio.Transport, *virtiotest.Driver) {
	t.Helper()
	dev := &echo{}
	d, tr := virtiotest.Plug(t, dev, 1<<20)
	return dev, tr, d
}

func r32(tr *mmio.Transport, off uint64) uint32 {
	var b [4]byte
	tr.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func w32(tr *mmio.Transport, off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	tr.Write(off, b[:])
}

func TestIdentity(t *testing.T) {
	_, tr, d := newEcho(t)
	if r32(tr, mmio.RegMagic) != mmio.Magic || r32(tr, mmio.RegVersion) != 2 || r32(tr, mmio.RegDeviceID) != 42 {
		t.Fatal("identity registers wrong")
	}
	want := uint64(1<<queue.FeatureEventIdx|1<<3|1<<40) | 1<<queue.FeatureVersion1
	if got := d.DeviceFeatures(); got != want {
		t.Fatalf("features %#x, want %#x", got, want)
	}
	w32(tr, mmio.RegQueueSel, 1)
	if r32(tr, mmio.RegQueueNumMax) != 8 {
		t.Fatal("queue 1 NumMax")
	}
	w32(tr, mmio.RegQueueSel, 2)
	if r32(tr, mmio.RegQueueNumMax) != 0 {
		t.Fatal("queue 2 should not exist")
	}
	// Sub-word register reads return zero and do not crash.
	b := []byte{0xff, 0xff}
	tr.Read(mmio.RegMagic, b)
	if b[0] != 0 || b[1] != 0 {
		t.Fatal("2-byte register read not zero")
	}
}

func TestFeatureNegotiation(t *testing.T) {
	_, tr, d := newEcho(t)
	// Without VERSION_1 the device refuses FEATURES_OK (no legacy interface).
	if err := d.Init(1<<3, 0); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("init without VERSION_1: %v", err)
	}
	// Accepting a feature that was not offered is refused as well.
	w32(tr, mmio.RegStatus, 0)
	w32(tr, mmio.RegStatus, mmio.StatusAcknowledge|mmio.StatusDriver)
	w32(tr, mmio.RegDriverFeatSel, 1)
	w32(tr, mmio.RegDriverFeatures, 1|1<<2) // VERSION_1 and bit 34 (not offered)
	w32(tr, mmio.RegStatus, mmio.StatusAcknowledge|mmio.StatusDriver|mmio.StatusFeaturesOK)
	if r32(tr, mmio.RegStatus)&mmio.StatusFeaturesOK != 0 {
		t.Fatal("FEATURES_OK accepted with an unoffered feature")
	}
	if err := d.Init(^uint64(0), 0); err != nil {
		t.Fatal(err)
	}
	if d.Features != uint64(1<<queue.FeatureEventIdx|1<<3|1<<40)|1<<queue.FeatureVersion1 {
		t.Fatalf("negotiated %#x", d.Features)
	}
}

func TestQueueAndReset(t *testing.T) {
	dev, tr, d := newEcho(t)
	if err := d.Init(^uint64(0), 0); err != nil {
		t.Fatal(err)
	}
	// Queue registers are frozen while live.
	w32(tr, mmio.RegQueueSel, 0)
	w32(tr, mmio.RegQueueDescLow, 0x1234)
	if r32(tr, mmio.RegQueueDescLow) == 0x1234 {
		t.Fatal("descriptor address changed on a live queue")
	}
	q := d.Queues[0]
	a := d.Mem.Put([]byte("hello"))
	h, _ := q.Add([]virtiotest.Buf{{Addr: a, Len: 5}})
	q.Kick()
	us, err := q.Wait(1, 10*time.Second)
	if err != nil || us[0].Head != h || us[0].Len != 5 {
		t.Fatalf("used %+v %v", us, err)
	}
	if r32(tr, mmio.RegInterruptStatus) != 0 {
		t.Fatal("interrupt status not acknowledged")
	}
	// Reset: status 0 stops the device and clears queue state.
	w32(tr, mmio.RegStatus, 0)
	if r32(tr, mmio.RegStatus) != 0 || r32(tr, mmio.RegQueueReady) != 0 {
		t.Fatal("reset did not clear status/queue")
	}
	if dev.resets == 0 {
		t.Fatal("device Reset not called")
	}
	// And it comes back.
	if err := d.Init(^uint64(0), 0); err != nil {
		t.Fatal(err)
	}
	q = d.Queues[0]
	h, _ = q.Add([]virtiotest.Buf{{Addr: a, Len: 3}})
	q.Kick()
	if us, err := q.Wait(1, 10*time.Second); err != nil || us[0].Head != h || us[0].Len != 3 {
		t.Fatalf("after reset: used %+v %v", us, err)
	}
}

func TestConfigSpace(t *testing.T) {
	_, tr, _ := newEcho(t)
	tr.Write(mmio.RegConfig+2, []byte{1, 2, 3, 4})
	b := make([]byte, 8)
	tr.Read(mmio.RegConfig, b)
	if string(b) != "\x00\x00\x01\x02\x03\x04\x00\x00" {
		t.Fatalf("config % x", b)
	}
	// Out of bounds: ignored / zero.
	tr.Write(mmio.RegConfig+6, []byte{9, 9, 9, 9})
	tr.Read(mmio.RegConfig+6, b[:4])
	if b[0]|b[1]|b[2]|b[3] != 0 {
		t.Fatal("out-of-bounds config read not zero")
	}
	tr.Read(mmio.RegConfig+0x1000, b)
	tr.Write(^uint64(0)-2, b)
	tr.Read(^uint64(0)-2, b)
}

func TestBrokenChainNeedsReset(t *testing.T) {
	var logs []string
	var mu sync.Mutex
	old := mmio.Logf
	mmio.Logf = func(f string, a ...any) { mu.Lock(); logs = append(logs, f); mu.Unlock() }
	t.Cleanup(func() { mmio.Logf = old })
	_, tr, d := newEcho(t)
	if err := d.Init(^uint64(0), 0); err != nil {
		t.Fatal(err)
	}
	q := d.Queues[0]
	q.RawDesc(0, d.Mem.Alloc(8, 8), 8, 1, 0) // NEXT to itself: a loop
	q.RawPublish(0)
	q.Kick()
	deadline := time.Now().Add(10 * time.Second)
	for !tr.NeedsReset() {
		select {
		case <-d.IRQ.C:
		case <-time.After(time.Until(deadline)):
			t.Fatal("device not flagged DEVICE_NEEDS_RESET")
		}
	}
	if r32(tr, mmio.RegStatus)&mmio.StatusDeviceNeedsReset == 0 {
		t.Fatal("status lacks DEVICE_NEEDS_RESET")
	}
	if r32(tr, mmio.RegInterruptStatus)&mmio.IntConfigChange == 0 {
		t.Fatal("no config-change interrupt")
	}
	mu.Lock()
	n := len(logs)
	mu.Unlock()
	if n != 1 {
		t.Fatalf("%d log lines, want 1", n)
	}
	w32(tr, mmio.RegStatus, 0)
	if tr.NeedsReset() {
		t.Fatal("reset did not clear DEVICE_NEEDS_RESET")
	}
}

func TestBadQueueAddressFailsActivation(t *testing.T) {
	_, tr, d := newEcho(t)
	w32(tr, mmio.RegStatus, 0)
	w32(tr, mmio.RegStatus, 3)
	w32(tr, mmio.RegDriverFeatSel, 1)
	w32(tr, mmio.RegDriverFeatures, 1)
	w32(tr, mmio.RegStatus, 3|mmio.StatusFeaturesOK)
	w32(tr, mmio.RegQueueSel, 0)
	w32(tr, mmio.RegQueueNum, 16)
	w32(tr, mmio.RegQueueDescHigh, 0x100) // far outside RAM
	w32(tr, mmio.RegQueueReady, 1)
	w32(tr, mmio.RegStatus, 3|mmio.StatusFeaturesOK|mmio.StatusDriverOK)
	if !tr.NeedsReset() {
		t.Fatal("activation with a queue outside RAM did not flag DEVICE_NEEDS_RESET")
	}
	_ = d
}

// FuzzRegisters drives random register accesses at a live transport: nothing may panic or hang.
func FuzzRegisters(f *testing.F) {
	f.Add([]byte{0x70, 0, 0, 0, 3, 0, 0, 0, 0x70, 0, 0, 0, 0xf, 0, 0, 0})
	f.Add([]byte{0x30, 0, 0, 0, 0, 0, 0, 0, 0x38, 0, 0, 0, 8, 0, 0, 0, 0x44, 0, 0, 0, 1, 0, 0, 0, 0x50, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		mem, err := virtiotest.NewMem(0, 1<<16)
		if err != nil {
			t.Fatal(err)
		}
		defer mem.Close()
		tr, err := mmio.New("rng", rng.New(), mem, virtiotest.NewIRQ())
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		for len(ops) >= 8 {
			off := uint64(binary.LittleEndian.Uint16(ops)) % 0x210
			width := []int{1, 2, 4, 8}[ops[2]%4]
			v := ops[4:8]
			buf := make([]byte, width)
			copy(buf, v)
			if ops[3]&1 == 0 {
				tr.Write(off, buf)
			} else {
				tr.Read(off, buf)
			}
			ops = ops[8:]
		}
	})
}

func TestKernelParam(t *testing.T) {
	if got := mmio.KernelParam(0xd0000000, 5); got != "virtio_mmio.device=512@0xd0000000:5" {
		t.Fatal(got)
	}
}

func TestHardReset(t *testing.T) {
	dev, tr, d := newEcho(t)
	if err := d.Init(^uint64(0), 0); err != nil {
		t.Fatal(err)
	}
	if len(tr.NotifyFiles()) != 2 {
		t.Fatal("want 2 notify files")
	}
	tr.Reset()
	if r32(tr, mmio.RegStatus) != 0 || dev.resets == 0 {
		t.Fatal("Reset did not reset the device")
	}
	tr.Close()
	tr.Reset() // after Close: no effect, no panic
}

// Each 64-bit ring address is written and read back as two 32-bit halves, per queue, and only while the
// queue is not live.
func TestQueueAddressHalves(t *testing.T) {
	_, tr, _ := newEcho(t)
	pairs := []struct{ lo, hi uint64 }{
		{mmio.RegQueueDescLow, mmio.RegQueueDescHigh},
		{mmio.RegQueueDriverLow, mmio.RegQueueDriverHigh},
		{mmio.RegQueueDeviceLow, mmio.RegQueueDeviceHigh},
	}
	for qi := uint32(0); qi < 2; qi++ {
		w32(tr, mmio.RegQueueSel, qi)
		for i, p := range pairs {
			w32(tr, p.lo, 0x1000*uint32(i+1)+qi)
			w32(tr, p.hi, 0xa0+uint32(i)+qi)
		}
	}
	for qi := uint32(0); qi < 2; qi++ {
		w32(tr, mmio.RegQueueSel, qi)
		for i, p := range pairs {
			if lo, hi := r32(tr, p.lo), r32(tr, p.hi); lo != 0x1000*uint32(i+1)+qi || hi != 0xa0+uint32(i)+qi {
				t.Errorf("queue %d pair %#x: read %#x/%#x, want %#x/%#x", qi, p.lo, lo, hi, 0x1000*uint32(i+1)+qi, 0xa0+uint32(i)+qi)
			}
		}
	}
	// A ready queue's addresses are frozen.
	w32(tr, mmio.RegQueueSel, 0)
	w32(tr, mmio.RegQueueReady, 1)
	w32(tr, mmio.RegQueueDescHigh, 0x55)
	if hi := r32(tr, mmio.RegQueueDescHigh); hi != 0xa0 {
		t.Errorf("descriptor address high half changed on a ready queue: %#x", hi)
	}
	// Feature words: select 0 and 1 give the two halves, others read zero.
	want := uint64(1<<queue.FeatureEventIdx|1<<3|1<<40) | 1<<queue.FeatureVersion1
	for sel, w := range []uint32{uint32(want), uint32(want >> 32), 0} {
		w32(tr, mmio.RegDeviceFeatSel, uint32(sel))
		if got := r32(tr, mmio.RegDeviceFeatures); got != w {
			t.Errorf("device features word %d = %#x, want %#x", sel, got, w)
		}
	}
}

// Every notification is counted (also when the eventfd coalesces several), per queue.
func TestCounters(t *testing.T) {
	_, tr, _ := newEcho(t)
	for i := 0; i < 5; i++ {
		w32(tr, mmio.RegQueueNotify, 1)
	}
	w32(tr, mmio.RegQueueNotify, 7) // no such queue: ignored
	deadline := time.Now().Add(10 * time.Second)
	for c := tr.Counters(); c.Kicks[1] != 5; c = tr.Counters() {
		if time.Now().After(deadline) {
			t.Fatalf("counters %+v, want 5 kicks on queue 1", c)
		}
		time.Sleep(time.Millisecond)
	}
	if c := tr.Counters(); len(c.Kicks) != 2 || c.Kicks[0] != 0 || c.Interrupts != 0 {
		t.Fatalf("counters %+v, want kicks [0 5] and no interrupts", c)
	}
	if !strings.Contains(tr.Debug(), "kicks=[0 5] interrupts=0") {
		t.Errorf("Debug lacks the counters: %s", tr.Debug())
	}
}

// A raise while the guest has not acknowledged the previous interrupt sends no new edge (the guest reads the
// rings after acknowledging, so it sees the new entries), unless that edge is older than the re-raise bound.
func TestInterruptCoalescing(t *testing.T) {
	dev, tr, d := newEcho(t)
	if err := d.Init(^uint64(0), 0); err != nil {
		t.Fatal(err)
	}
	dev.mu.Lock()
	env := dev.env
	dev.mu.Unlock()
	base := d.IRQ.Count()
	for i := 0; i < 3; i++ {
		if err := env.Interrupt(); err != nil {
			t.Fatal(err)
		}
	}
	if got := d.IRQ.Count() - base; got != 1 {
		t.Fatalf("3 raises without acknowledgment sent %d edges, want 1", got)
	}
	if c := tr.Counters(); c.Coalesced != 2 {
		t.Fatalf("counters %+v, want 2 coalesced", c)
	}
	w32(tr, mmio.RegInterruptACK, r32(tr, mmio.RegInterruptStatus))
	_ = env.Interrupt()
	if got := d.IRQ.Count() - base; got != 2 {
		t.Fatalf("a raise after the acknowledgment sent %d edges in all, want 2", got)
	}
	// Never acknowledged (an edge the guest lost): a later raise sends a new edge after the bound.
	time.Sleep(60 * time.Millisecond)
	_ = env.Interrupt()
	if got := d.IRQ.Count() - base; got != 3 {
		t.Fatalf("a raise 60 ms after an unacknowledged edge sent %d edges in all, want 3", got)
	}
	if r32(tr, mmio.RegInterruptStatus)&mmio.IntUsedBuffer == 0 {
		t.Fatal("used-buffer bit not set")
	}
}
