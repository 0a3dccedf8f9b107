package kvm

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Exit reasons (KVM_EXIT_*).
const (
	ExitUnknown       = 0
	ExitException     = 1
	ExitIO            = 2
	ExitHypercall     = 3
	ExitDebug         = 4
	ExitHLT           = 5
	ExitMMIO          = 6
	ExitIRQWindowOpen = 7
	ExitShutdown      = 8
	ExitFailEntry     = 9
	ExitIntr          = 10
	ExitSetTPR        = 11
	ExitTPRAccess     = 12
	ExitNMI           = 16
	ExitInternalError = 17
	ExitSystemEvent   = 24
)

// System event types (KVM_SYSTEM_EVENT_*).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
)

// IO directions.
const (
	IOIn  = 0
	IOOut = 1
)

// Run is the start of struct kvm_run, shared with the kernel.
type Run struct {
	RequestInterruptWindow uint8
	ImmediateExit          uint8
	_                      [6]uint8
	ExitReason             uint32
	ReadyForInjection      uint8
	IFFlag                 uint8
	Flags                  uint16
	CR8                    uint64
	APICBase               uint64
	exit                   [256]byte // the exit-reason union
}

// IO describes a KVM_EXIT_IO exit.
type IO struct {
	Direction  uint8
	Size       uint8
	Port       uint16
	Count      uint32
	DataOffset uint64
}

// IO returns the port I/O exit details.
func (r *Run) IO() IO { return *(*IO)(unsafe.Pointer(&r.exit[0])) }

// MMIO returns the MMIO exit details: address, data buffer (8 bytes, first len used) and direction.
func (r *Run) MMIO() (addr uint64, data []byte, isWrite bool) {
	addr = binary.LittleEndian.Uint64(r.exit[0:8])
	n := binary.LittleEndian.Uint32(r.exit[16:20])
	if n > 8 {
		n = 8
	}
	return addr, r.exit[8 : 8+n], r.exit[20] != 0
}

// InternalError returns suberror and data words of a KVM_EXIT_INTERNAL_ERROR exit.
func (r *Run) InternalError() (suberror uint32, data []uint64) {
	sub := binary.LittleEndian.Uint32(r.exit[0:4])
	n := binary.LittleEndian.Uint32(r.exit[4:8])
	if n > 16 {
		n = 16
	}
	for i := uint32(0); i < n; i++ {
		data = append(data, binary.LittleEndian.Uint64(r.exit[8+8*i:]))
	}
	return sub, data
}

// FailEntry returns the hardware entry failure reason.
func (r *Run) FailEntry() uint64 { return binary.LittleEndian.Uint64(r.exit[0:8]) }

// SystemEvent returns the type of a KVM_EXIT_SYSTEM_EVENT exit.
func (r *Run) SystemEvent() uint32 { return binary.LittleEndian.Uint32(r.exit[0:4]) }

// VCPU is a KVM virtual CPU.
type VCPU struct {
	ID  int
	f   *os.File
	run []byte
	Run *Run // the shared kvm_run area (valid until Close)

	tid atomic.Int32 // OS thread running KVM_RUN, for Kick
}

func (c *VCPU) fd() int { return int(c.f.Fd()) }

// Close unmaps kvm_run and closes the vCPU fd.
func (c *VCPU) Close() error {
	if c.run != nil {
		unix.Munmap(c.run)
		c.run, c.Run = nil, nil
	}
	return c.f.Close()
}

// RunData returns the kvm_run area as bytes (port I/O data lives at IO().DataOffset).
func (c *VCPU) RunData() []byte { return c.run }

// KickSignal is the signal Kick sends to a vCPU thread. The Go runtime always handles SIGURG (it uses it
// for goroutine preemption and tolerates spurious ones), so it interrupts KVM_RUN without any signal
// handling of ours.
const KickSignal = unix.SIGURG

// BindThread records the calling OS thread as this vCPU's runner; call after runtime.LockOSThread.
func (c *VCPU) BindThread() { c.tid.Store(int32(unix.Gettid())) }

// UnbindThread forgets the runner thread.
func (c *VCPU) UnbindThread() { c.tid.Store(0) }

// Kick makes the vCPU leave KVM_RUN soon: it sets immediate_exit (so an entry about to happen returns at
// once) and signals the runner thread (so a running guest exits with EINTR).
func (c *VCPU) Kick() {
	if c.Run != nil {
		// Bytes 0-3 of kvm_run: request_interrupt_window (unused by us), immediate_exit, padding.
		atomic.StoreUint32((*uint32)(unsafe.Pointer(c.Run)), 1<<8)
	}
	if tid := c.tid.Load(); tid != 0 {
		_ = unix.Tgkill(unix.Getpid(), int(tid), KickSignal)
	}
}

// ClearImmediateExit resets immediate_exit; call on the runner thread after KVM_RUN returned.
func (c *VCPU) ClearImmediateExit() { atomic.StoreUint32((*uint32)(unsafe.Pointer(c.Run)), 0) }

// RunOnce enters the guest (KVM_RUN). EINTR (a kick or a stray signal) is returned as unix.EINTR.
func (c *VCPU) RunOnce() error {
	_, err := ioctl(c.fd(), kvmRun, 0)
	return err
}

// Regs is struct kvm_regs.
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// Segment is struct kvm_segment.
type Segment struct {
	Base                           uint64
	Limit                          uint32
	Selector                       uint16
	Type                           uint8
	Present, DPL, DB, S, L, G, AVL uint8
	Unusable                       uint8
	_                              uint8
}

// DTable is struct kvm_dtable.
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs is struct kvm_sregs.
type Sregs struct {
	CS, DS, ES, FS, GS, SS, TR, LDT Segment
	GDT, IDT                        DTable
	CR0, CR2, CR3, CR4, CR8         uint64
	EFER, APICBase                  uint64
	InterruptBitmap                 [4]uint64
}

// FPU is struct kvm_fpu.
type FPU struct {
	FPR        [8][16]uint8
	FCW, FSW   uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]uint8
	MXCSR      uint32
	_          uint32
}

func (c *VCPU) get(req uintptr, p unsafe.Pointer, what string) error {
	if _, err := ioctl(c.fd(), req, uintptr(p)); err != nil {
		return fmt.Errorf("kvm: vCPU %d %s: %w", c.ID, what, err)
	}
	return nil
}

// GetRegs reads the general registers.
func (c *VCPU) GetRegs() (Regs, error) {
	var r Regs
	return r, c.get(kvmGetRegs, unsafe.Pointer(&r), "KVM_GET_REGS")
}

// SetRegs writes the general registers.
func (c *VCPU) SetRegs(r Regs) error { return c.get(kvmSetRegs, unsafe.Pointer(&r), "KVM_SET_REGS") }

// GetSregs reads the special registers.
func (c *VCPU) GetSregs() (Sregs, error) {
	var s Sregs
	return s, c.get(kvmGetSregs, unsafe.Pointer(&s), "KVM_GET_SREGS")
}

// SetSregs writes the special registers.
func (c *VCPU) SetSregs(s Sregs) error {
	return c.get(kvmSetSregs, unsafe.Pointer(&s), "KVM_SET_SREGS")
}

// SetFPU writes the FPU state.
func (c *VCPU) SetFPU(f FPU) error { return c.get(kvmSetFPU, unsafe.Pointer(&f), "KVM_SET_FPU") }

// GetFPU reads the FPU state.
func (c *VCPU) GetFPU() (FPU, error) {
	var f FPU
	return f, c.get(kvmGetFPU, unsafe.Pointer(&f), "KVM_GET_FPU")
}

// LAPICState is struct kvm_lapic_state (the 1 KiB register page).
type LAPICState struct{ Regs [1024]byte }

// GetLAPIC reads the local APIC registers.
func (c *VCPU) GetLAPIC() (LAPICState, error) {
	var l LAPICState
	return l, c.get(kvmGetLAPIC, unsafe.Pointer(&l), "KVM_GET_LAPIC")
}

// SetLAPIC writes the local APIC registers.
func (c *VCPU) SetLAPIC(l LAPICState) error {
	return c.get(kvmSetLAPIC, unsafe.Pointer(&l), "KVM_SET_LAPIC")
}

// CPUIDEntry is struct kvm_cpuid_entry2.
type CPUIDEntry struct {
	Function, Index, Flags uint32
	EAX, EBX, ECX, EDX     uint32
	_                      [3]uint32
}

// CPUID entry flags.
const (
	CPUIDFlagSignificantIndex = 1 << 0
)

// SetCPUID2 sets the CPUID the guest sees.
func (c *VCPU) SetCPUID2(entries []CPUIDEntry) error {
	es := int(unsafe.Sizeof(CPUIDEntry{}))
	buf := make([]byte, 8+len(entries)*es)
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(len(entries))
	if len(entries) > 0 {
		copy(buf[8:], unsafe.Slice((*byte)(unsafe.Pointer(&entries[0])), len(entries)*es))
	}
	return c.get(kvmSetCPUID2, unsafe.Pointer(&buf[0]), "KVM_SET_CPUID2")
}

// MSR is one model-specific register value.
type MSR struct {
	Index uint32
	_     uint32
	Data  uint64
}

// SetMSRs writes MSRs; it fails unless all were written.
func (c *VCPU) SetMSRs(msrs []MSR) error {
	if len(msrs) == 0 {
		return nil
	}
	buf := make([]MSR, 1+len(msrs)) // header is 8 bytes = one MSR slot
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(len(msrs))
	copy(buf[1:], msrs)
	n, err := ioctl(c.fd(), kvmSetMSRs, uintptr(unsafe.Pointer(&buf[0])))
	if err != nil {
		return fmt.Errorf("kvm: vCPU %d KVM_SET_MSRS: %w", c.ID, err)
	}
	if int(n) != len(msrs) {
		return fmt.Errorf("kvm: vCPU %d KVM_SET_MSRS: set %d of %d (first failing index %#x)", c.ID, n, len(msrs), msrs[n].Index)
	}
	return nil
}

// GetMSRs reads the MSRs with the given indexes.
func (c *VCPU) GetMSRs(idx []uint32) ([]MSR, error) {
	buf := make([]MSR, 1+len(idx))
	*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(len(idx))
	for i, x := range idx {
		buf[1+i].Index = x
	}
	n, err := ioctl(c.fd(), kvmGetMSRs, uintptr(unsafe.Pointer(&buf[0])))
	if err != nil {
		return nil, fmt.Errorf("kvm: vCPU %d KVM_GET_MSRS: %w", c.ID, err)
	}
	return buf[1 : 1+n], nil
}

// MP states.
const (
	MPStateRunnable      = 0
	MPStateUninitialized = 1
	MPStateHalted        = 3
)

// GetMPState returns the vCPU's multiprocessing state.
func (c *VCPU) GetMPState() (uint32, error) {
	var s uint32
	return s, c.get(kvmGetMPState, unsafe.Pointer(&s), "KVM_GET_MP_STATE")
}

// SetMPState sets the vCPU's multiprocessing state.
func (c *VCPU) SetMPState(s uint32) error {
	return c.get(kvmSetMPState, unsafe.Pointer(&s), "KVM_SET_MP_STATE")
}
