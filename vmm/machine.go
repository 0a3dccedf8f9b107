package vmm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"os"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/kvirt/kvirt/devices/acpipm"
	"github.com/kvirt/kvirt/devices/bus"
	"github.com/kvirt/kvirt/devices/i8042"
	"github.com/kvirt/kvirt/devices/rtc"
	"github.com/kvirt/kvirt/devices/serial"
	"github.com/kvirt/kvirt/devices/virtio/mmio"
	"github.com/kvirt/kvirt/vmm/cpuid"
	"github.com/kvirt/kvirt/vmm/kvm"
	"github.com/kvirt/kvirt/vmm/layout"
	"github.com/kvirt/kvirt/vmm/memory"
)

// Outcome is how a machine ended.
type Outcome int

const (
	// Running means the machine has not ended (never returned by Wait without an error).
	Running Outcome = iota
	// PoweredOff: the guest powered off (ACPI S5).
	PoweredOff
	// Rebooted: the guest asked for a reset and Config.OnReboot is RebootExit.
	Rebooted
	// Crashed: triple fault, KVM internal/emulation error or entry failure; the error holds the registers.
	Crashed
	// Stopped: Stop was called (hard stop).
	Stopped
	// Error: the VMM failed.
	Error
)

func (o Outcome) String() string {
	return [...]string{"Running", "PoweredOff", "Rebooted", "Crashed", "Stopped", "Error"}[o]
}

// Machine is one virtual machine. Create it with New, add devices, then Start.
type Machine struct {
	cfg     Config
	logf    func(string, ...any)
	sys     *kvm.System
	mem     *memory.GuestMemory
	policy  cpuid.Policy
	cmdline string
	cpuids  []kvm.CPUIDEntry

	PIO  *bus.Bus // I/O ports
	MMIO *bus.Bus // memory-mapped I/O

	Serial *serial.Serial
	PM     *acpipm.PM

	mu       sync.Mutex
	cond     *sync.Cond
	started  bool
	paused   bool
	parked   int
	board    *board
	irqfds   []*IRQFD
	ioevents []ioevent
	virtio   []VirtioSlot
	// virtioDevs are the transports AddVirtioMMIO mapped (reset on reboot, closed at the end).
	virtioDevs []bus.Device
	nextGSI    int
	nextMMIO   uint64
	reboots    int
	exitReq    *exitRequest
	outcome    Outcome
	outErr     error
	done       chan struct{}
	stopInput  chan struct{}
}

type exitRequest struct {
	outcome Outcome
	err     error
}

type ioevent struct {
	addr, datamatch uint64
	efd             *os.File
}

// VirtioSlot is a virtio-mmio device position: its register window and interrupt line.
type VirtioSlot struct {
	Base uint64
	GSI  uint32
	Size uint64 // register window declared to the guest
}

// New validates cfg and prepares guest memory and the legacy devices. Nothing runs until Start.
func New(cfg Config) (*Machine, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	m := &Machine{cfg: cfg, logf: cfg.Logf, done: make(chan struct{}), stopInput: make(chan struct{}),
		nextMMIO: layout.VirtioMMIOBase}
	if m.logf == nil {
		m.logf = log.Printf
	}
	m.cond = sync.NewCond(&m.mu)
	m.PIO, m.MMIO = bus.New("pio"), bus.New("mmio")
	m.PIO.Logf, m.MMIO.Logf = m.logf, m.logf

	sys, err := kvm.Open()
	if err != nil {
		return nil, err
	}
	m.sys = sys
	m.trace("kvm-open")
	for _, c := range []struct {
		cap  int
		name string
	}{{kvm.CapIRQChip, "IRQCHIP"}, {kvm.CapUserMemory, "USER_MEMORY"}, {kvm.CapIRQFD, "IRQFD"},
		{kvm.CapIOEventFD, "IOEVENTFD"}, {kvm.CapPIT2, "PIT2"}, {kvm.CapImmediateExit, "IMMEDIATE_EXIT"}} {
		if sys.CheckExtension(c.cap) == 0 {
			sys.Close()
			return nil, fmt.Errorf("vmm: host KVM lacks KVM_CAP_%s", c.name)
		}
	}
	m.policy = cfg.CPUPolicy
	var slow []string
	if cfg.Compat == CompatPVM || (cfg.Compat == CompatAuto && kvm.PVM()) {
		m.policy = m.policy.Merge(cpuid.PVMPolicy())
		slow = PVMGuestArgs
		m.logf("vmm: host KVM is PVM: applying the PVM compatibility policy (CPU features off in CPUID and on the kernel command line, systemd's timeouts lengthened)")
	}
	m.cmdline = strings.TrimSpace(strings.Join(append(append([]string{cfg.Cmdline}, m.policy.KernelArgs()...), slow...), " "))
	if m.cpuids, err = sys.SupportedCPUID(); err != nil {
		sys.Close()
		return nil, err
	}
	m.trace("supported-cpuid")

	low := min(cfg.MemoryBytes, uint64(layout.MMIOStart))
	ranges := [][2]uint64{{0, low}}
	if cfg.MemoryBytes > low {
		ranges = append(ranges, [2]uint64{layout.FourGiB, cfg.MemoryBytes - low})
	}
	if m.mem, err = memory.New(ranges, memory.Options{HugePages: cfg.HugePages}); err != nil {
		sys.Close()
		return nil, err
	}
	m.trace("guest-memory")

	// Legacy devices.
	com1IRQ, err := m.NewIRQFD(layout.IRQCOM1)
	if err != nil {
		m.closeAll()
		return nil, err
	}
	m.Serial = serial.New(cfg.Console, com1IRQ)
	m.PM = acpipm.New(sciLine{m}, func() { m.requestExit(PoweredOff, nil) })
	kbd := i8042.New(m.guestReset)
	rt := rtc.New(low, cfg.MemoryBytes-low, nil)
	for _, d := range []struct {
		base, size uint64
		dev        bus.Device
	}{
		{layout.PortCOM1, 8, m.Serial},
		{layout.PortI8042, i8042.Size, kbd},
		{layout.PortCMOS, rtc.Size, rt},
		{layout.PortPM1aEvt, acpipm.EvtLen, m.PM.Event()},
		{layout.PortPM1aCnt, acpipm.CntLen, m.PM.Control()},
	} {
		if err := m.PIO.Insert(d.base, d.size, d.dev); err != nil {
			m.closeAll()
			return nil, err
		}
	}
	// Ports Linux pokes during boot that need no model: POST/delay port, PIC/PIT/DMA leftovers, COM2-4, LPT.
	for _, r := range [][2]uint64{{0x80, 1}, {0xed, 1}, {0x2f8, 8}, {0x3e8, 8}, {0x2e8, 8}, {0x378, 3}, {0x278, 3}, {0x3bc, 3}, {0x87, 1}, {0xcf8, 8}} {
		if err := m.PIO.Insert(r[0], r[1], silent{}); err != nil {
			m.closeAll()
			return nil, err
		}
	}
	m.trace("devices")
	return m, nil
}

func (m *Machine) trace(step string) {
	if m.cfg.Trace != nil {
		m.cfg.Trace(step)
	}
}

// silent ignores writes and reads all-ones: ports that exist on PCs but that we don't model.
type silent struct{}

func (silent) Read(_ uint64, d []byte) {
	for i := range d {
		d[i] = 0xff
	}
}
func (silent) Write(uint64, []byte) {}

// Memory returns guest RAM (valid until the machine ended).
func (m *Machine) Memory() *memory.GuestMemory { return m.mem }

// Cmdline is the kernel command line actually passed (with host policy words).
func (m *Machine) Cmdline() string { return m.cmdline }

// Reboots counts the guest resets done in place.
func (m *Machine) Reboots() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reboots
}

// IRQFD is an edge-triggered interrupt line backed by an eventfd bound to a GSI with KVM_IRQFD.
type IRQFD struct {
	GSI uint32
	efd *os.File
}

// Trigger injects one edge on the line.
func (q *IRQFD) Trigger() error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	if _, err := q.efd.Write(b[:]); err != nil && !errors.Is(err, unix.EAGAIN) {
		return fmt.Errorf("vmm: irqfd gsi %d: %w", q.GSI, err)
	}
	return nil
}

// NewIRQFD returns an interrupt line for gsi. Call before Start.
func (m *Machine) NewIRQFD(gsi uint32) (*IRQFD, error) {
	if gsi > layout.IRQMax {
		return nil, fmt.Errorf("vmm: GSI %d beyond the IOAPIC's %d lines", gsi, layout.IRQMax)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return nil, errors.New("vmm: NewIRQFD after Start")
	}
	f, err := kvm.EventFD()
	if err != nil {
		return nil, err
	}
	q := &IRQFD{GSI: gsi, efd: f}
	m.irqfds = append(m.irqfds, q)
	return q, nil
}

// AllocateGSI hands out the next free interrupt line for a device.
func (m *Machine) AllocateGSI() (uint32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.nextGSI >= len(layout.UsableGSIs) {
		return 0, errors.New("vmm: no free GSI left for another device")
	}
	g := layout.UsableGSIs[m.nextGSI]
	m.nextGSI++
	return g, nil
}

// RegisterIOEvent makes 4-byte guest writes of datamatch to MMIO address addr signal efd (KVM_IOEVENTFD)
// instead of exiting to the VMM. Call before Start; efd stays owned by the caller.
func (m *Machine) RegisterIOEvent(addr, datamatch uint64, efd *os.File) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return errors.New("vmm: RegisterIOEvent after Start")
	}
	m.ioevents = append(m.ioevents, ioevent{addr, datamatch, efd})
	return nil
}

// AddVirtioMMIO allocates a virtio-mmio slot (MMIO window and GSI), maps the device returned by mk there
// and declares it to the guest in the DSDT (LNRO0005) and, with NoACPI, on the kernel command line.
// mk receives the slot and an irqfd bound to its GSI; it returns the transport (a bus.Device whose
// registers start at offset 0) and the queue-notify eventfds to register at Base+0x50 with datamatch =
// queue index (nil entries are skipped).
func (m *Machine) AddVirtioMMIO(mk func(slot VirtioSlot, irq *IRQFD) (bus.Device, []*os.File, error)) (VirtioSlot, error) {
	gsi, err := m.AllocateGSI()
	if err != nil {
		return VirtioSlot{}, err
	}
	m.mu.Lock()
	slot := VirtioSlot{Base: m.nextMMIO, GSI: gsi, Size: 0x200}
	m.nextMMIO += layout.VirtioMMIOSize
	m.mu.Unlock()
	irq, err := m.NewIRQFD(gsi)
	if err != nil {
		return slot, err
	}
	dev, notifiers, err := mk(slot, irq)
	if err != nil {
		return slot, fmt.Errorf("vmm: create virtio device at %#x: %w", slot.Base, err)
	}
	if err := m.MMIO.Insert(slot.Base, layout.VirtioMMIOSize, dev); err != nil {
		return slot, err
	}
	for i, f := range notifiers {
		if f == nil {
			continue
		}
		if err := m.RegisterIOEvent(slot.Base+0x50, uint64(i), f); err != nil {
			return slot, err
		}
	}
	m.mu.Lock()
	m.virtio = append(m.virtio, slot)
	m.virtioDevs = append(m.virtioDevs, dev)
	m.mu.Unlock()
	return slot, nil
}

// AttachVirtio maps dev behind a new virtio-mmio transport on a new slot (see AddVirtioMMIO) and returns
// the transport. name labels the transport's log lines and errors. The machine resets the transport on a
// reboot and closes it, which stops and closes the device (syncing a disk), before it reports its end.
func (m *Machine) AttachVirtio(name string, dev mmio.Device) (*mmio.Transport, error) {
	var tr *mmio.Transport
	_, err := m.AddVirtioMMIO(func(_ VirtioSlot, irq *IRQFD) (bus.Device, []*os.File, error) {
		var err error
		tr, err = mmio.New(name, dev, m.Memory(), irq)
		if err != nil {
			return nil, nil, err
		}
		return tr, tr.NotifyFiles(), nil
	})
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", name, err)
	}
	return tr, nil
}

// resetVirtio resets the virtio devices that can be (Reset()) before a reboot in place reuses guest memory;
// closeVirtio closes those that can be (Close() error) before guest memory is unmapped, so no device
// worker touches guest RAM afterwards.
func (m *Machine) resetVirtio() {
	m.mu.Lock()
	devs := append([]bus.Device(nil), m.virtioDevs...)
	m.mu.Unlock()
	for _, d := range devs {
		if r, ok := d.(interface{ Reset() }); ok {
			r.Reset()
		}
	}
}

func (m *Machine) closeVirtio() {
	m.mu.Lock()
	devs := append([]bus.Device(nil), m.virtioDevs...)
	m.mu.Unlock()
	for _, d := range devs {
		if c, ok := d.(interface{ Close() error }); ok {
			if err := c.Close(); err != nil {
				m.logf("vmm: close virtio device: %v", err)
			}
		}
	}
}

// sciLine drives the SCI (level-triggered) on the current board.
type sciLine struct{ m *Machine }

func (s sciLine) SetLevel(high bool) error {
	s.m.mu.Lock()
	b := s.m.board
	s.m.mu.Unlock()
	if b == nil {
		return nil
	}
	return b.vm.IRQLine(layout.IRQSCI, high)
}

// guestReset is the i8042 reset line.
func (m *Machine) guestReset() {
	if m.cfg.OnReboot == RebootExit {
		m.requestExit(Rebooted, nil)
		return
	}
	m.requestExit(resetInPlace, nil)
}

// resetInPlace is an internal outcome: rebuild the board and boot again.
const resetInPlace Outcome = -1

// requestExit records the first reason the current board must end and kicks every vCPU.
func (m *Machine) requestExit(o Outcome, err error) {
	m.mu.Lock()
	// The first request wins, except that a reset in place is overridden by any final outcome (a Stop
	// during a reboot must not be lost).
	if m.exitReq == nil || (m.exitReq.outcome == resetInPlace && o != resetInPlace) {
		m.exitReq = &exitRequest{o, err}
	}
	b := m.board
	m.cond.Broadcast()
	m.mu.Unlock()
	if b != nil {
		b.kickAll()
	}
}

// Start boots the guest. It returns once the vCPUs run; use Wait for the outcome.
func (m *Machine) Start() error {
	m.mu.Lock()
	if m.started {
		m.mu.Unlock()
		return errors.New("vmm: machine already started")
	}
	m.started = true
	m.paused = m.cfg.StartPaused // the vCPU threads park before their first KVM_RUN
	m.mu.Unlock()
	b, err := m.newBoard()
	if err != nil {
		m.finish(Error, err)
		return err
	}
	if m.cfg.ConsoleInput != nil {
		go func() { _ = m.Serial.Pump(m.cfg.ConsoleInput, m.stopInput) }()
	}
	go m.supervise(b)
	return nil
}

// supervise runs boards until the machine ends.
func (m *Machine) supervise(b *board) {
	for {
		b.start()
		// Wait for an exit request.
		m.mu.Lock()
		for m.exitReq == nil {
			m.cond.Wait()
		}
		m.mu.Unlock()
		b.kickAll()
		b.wg.Wait()
		m.mu.Lock()
		m.board = nil
		req := *m.exitReq
		m.mu.Unlock()
		b.close()
		if req.outcome != resetInPlace {
			m.finish(req.outcome, req.err)
			return
		}
		m.mu.Lock()
		if m.exitReq.outcome != resetInPlace { // upgraded while closing
			req = *m.exitReq
			m.mu.Unlock()
			m.finish(req.outcome, req.err)
			return
		}
		m.reboots++
		m.exitReq = nil
		n := m.reboots
		m.mu.Unlock()
		m.logf("vmm: guest reset: rebooting in place (reboot %d)", n)
		m.resetVirtio()
		m.PM.Reset()
		if err := m.mem.Discard(); err != nil {
			m.finish(Error, err)
			return
		}
		nb, err := m.newBoard()
		if err != nil {
			m.finish(Error, fmt.Errorf("vmm: reboot: %w", err))
			return
		}
		b = nb
	}
}

func (m *Machine) finish(o Outcome, err error) {
	m.mu.Lock()
	if m.outcome != Running {
		m.mu.Unlock()
		return
	}
	m.outcome, m.outErr = o, err
	m.mu.Unlock()
	close(m.stopInput)
	m.closeVirtio()
	m.closeAll()
	close(m.done)
}

func (m *Machine) closeAll() {
	for _, q := range m.irqfds {
		q.efd.Close()
	}
	if m.mem != nil {
		m.mem.Close()
	}
	if m.sys != nil {
		m.sys.Close()
	}
}

// Pause stops every vCPU outside KVM_RUN and returns when all are parked. The guest's clock keeps running.
func (m *Machine) Pause() error {
	m.mu.Lock()
	if !m.started || m.outcome != Running {
		m.mu.Unlock()
		return errors.New("vmm: pause: machine not running")
	}
	m.paused = true
	b := m.board
	m.mu.Unlock()
	if b != nil {
		b.kickAll()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.board != nil && m.parked < len(m.board.vcpus) && m.exitReq == nil && m.outcome == Running {
		m.cond.Wait()
	}
	return nil
}

// Resume lets paused vCPUs run again.
func (m *Machine) Resume() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.started || m.outcome != Running {
		return errors.New("vmm: resume: machine not running")
	}
	m.paused = false
	m.cond.Broadcast()
	return nil
}

// Paused reports whether the machine is paused.
func (m *Machine) Paused() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.paused
}

// RequestShutdown presses the ACPI power button; a guest with ACPI powers off cleanly.
func (m *Machine) RequestShutdown() error {
	m.mu.Lock()
	running := m.started && m.outcome == Running
	m.mu.Unlock()
	if !running {
		return errors.New("vmm: shutdown request: machine not running")
	}
	if m.cfg.NoACPI {
		return errors.New("vmm: shutdown request: the machine has no ACPI, so the guest cannot see a power button")
	}
	m.PM.PressPowerButton()
	return nil
}

// Stop ends the machine at once (outcome Stopped) if it has not ended yet.
func (m *Machine) Stop() {
	m.mu.Lock()
	started := m.started
	m.mu.Unlock()
	if !started {
		m.finish(Stopped, nil)
		return
	}
	m.requestExit(Stopped, nil)
}

// Done is closed when the machine has ended.
func (m *Machine) Done() <-chan struct{} { return m.done }

// Wait blocks until the machine ends or ctx is done.
func (m *Machine) Wait(ctx context.Context) (Outcome, error) {
	select {
	case <-m.done:
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.outcome, m.outErr
	case <-ctx.Done():
		return Running, ctx.Err()
	}
}

// runtimeLock pins the calling goroutine to its OS thread for KVM_RUN.
func runtimeLock() func() {
	runtime.LockOSThread()
	return runtime.UnlockOSThread
}

// DumpState pauses the machine, returns every vCPU's registers (for diagnosing a hung guest), and resumes
// it unless it was already paused.
func (m *Machine) DumpState() (string, error) {
	wasPaused := m.Paused()
	if err := m.Pause(); err != nil {
		return "", err
	}
	m.mu.Lock()
	b := m.board
	m.mu.Unlock()
	var sb strings.Builder
	if b != nil {
		b.life.RLock()
		if !b.closed {
			for _, c := range b.vcpus {
				fmt.Fprintf(&sb, "vCPU %d: %s\n", c.ID, dumpRegs(c))
			}
		}
		b.life.RUnlock()
	}
	if !wasPaused {
		if err := m.Resume(); err != nil {
			return sb.String(), err
		}
	}
	return sb.String(), nil
}
