package kvm

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine file descriptor.
type VM struct {
	f       *os.File
	runSize int
}

func (v *VM) fd() int { return int(v.f.Fd()) }

// Close closes the VM fd (vCPUs hold their own references).
func (v *VM) Close() error { return v.f.Close() }

// CheckExtension asks the VM fd about a capability.
func (v *VM) CheckExtension(cap int) int {
	r, err := ioctl(v.fd(), kvmCheckExtension, uintptr(cap))
	if err != nil {
		return 0
	}
	return int(r)
}

type userspaceMemoryRegion struct {
	Slot, Flags               uint32
	GuestPhysAddr, MemorySize uint64
	UserspaceAddr             uint64
}

// SetUserMemoryRegion maps host memory mem at guest-physical gpa into slot.
func (v *VM) SetUserMemoryRegion(slot uint32, gpa uint64, mem []byte) error {
	if len(mem) == 0 {
		return fmt.Errorf("kvm: empty memory region for slot %d", slot)
	}
	r := userspaceMemoryRegion{Slot: slot, GuestPhysAddr: gpa, MemorySize: uint64(len(mem)),
		UserspaceAddr: uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if _, err := ioctl(v.fd(), kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&r))); err != nil {
		return fmt.Errorf("kvm: KVM_SET_USER_MEMORY_REGION slot %d at %#x: %w", slot, gpa, err)
	}
	return nil
}

// SetTSSAddr sets the 3-page TSS area KVM needs on Intel hosts.
func (v *VM) SetTSSAddr(addr uint64) error {
	if _, err := ioctl(v.fd(), kvmSetTSSAddr, uintptr(addr)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_TSS_ADDR: %w", err)
	}
	return nil
}

// SetIdentityMapAddr sets the one-page identity map area KVM needs on Intel hosts.
func (v *VM) SetIdentityMapAddr(addr uint64) error {
	if _, err := ioctl(v.fd(), kvmSetIdentityMapAddr, uintptr(unsafe.Pointer(&addr))); err != nil {
		return fmt.Errorf("kvm: KVM_SET_IDENTITY_MAP_ADDR: %w", err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC, IOAPIC and LAPICs.
func (v *VM) CreateIRQChip() error {
	if _, err := ioctl(v.fd(), kvmCreateIRQChip, 0); err != nil {
		return fmt.Errorf("kvm: KVM_CREATE_IRQCHIP: %w", err)
	}
	return nil
}

// PITSpeakerDummy makes KVM emulate the PC speaker port (0x61) in kernel.
const PITSpeakerDummy = 1

// CreatePIT2 creates the in-kernel i8254 timer.
func (v *VM) CreatePIT2(flags uint32) error {
	var cfg [16]uint32
	cfg[0] = flags
	if _, err := ioctl(v.fd(), kvmCreatePIT2, uintptr(unsafe.Pointer(&cfg))); err != nil {
		return fmt.Errorf("kvm: KVM_CREATE_PIT2: %w", err)
	}
	return nil
}

// IRQLine sets the level of an interrupt line on the in-kernel irqchip.
func (v *VM) IRQLine(irq uint32, level bool) error {
	a := [2]uint32{irq, 0}
	if level {
		a[1] = 1
	}
	if _, err := ioctl(v.fd(), kvmIRQLine, uintptr(unsafe.Pointer(&a))); err != nil {
		return fmt.Errorf("kvm: KVM_IRQ_LINE %d: %w", irq, err)
	}
	return nil
}

type irqfd struct {
	FD, GSI, Flags, ResampleFD uint32
	_                          [16]byte
}

// IRQFD flags.
const (
	IRQFDDeassign = 1 << 0
	IRQFDResample = 1 << 1
)

// IRQFD attaches eventfd efd to gsi: each write to the eventfd injects an edge on gsi.
func (v *VM) IRQFD(efd int, gsi uint32, flags uint32) error {
	a := irqfd{FD: uint32(efd), GSI: gsi, Flags: flags}
	if _, err := ioctl(v.fd(), kvmIRQFD, uintptr(unsafe.Pointer(&a))); err != nil {
		return fmt.Errorf("kvm: KVM_IRQFD gsi %d: %w", gsi, err)
	}
	return nil
}

type ioeventfd struct {
	DataMatch, Addr uint64
	Len             uint32
	FD              int32
	Flags           uint32
	_               [36]byte
}

// IOEventFD flags.
const (
	IOEventFDDataMatch = 1 << 0
	IOEventFDPIO       = 1 << 1
	IOEventFDDeassign  = 1 << 2
)

// IOEventFD makes guest writes of length size at addr (MMIO, or a port with IOEventFDPIO) signal efd
// instead of exiting to userspace; with IOEventFDDataMatch only writes of datamatch do.
func (v *VM) IOEventFD(efd int, addr uint64, size uint32, datamatch uint64, flags uint32) error {
	a := ioeventfd{DataMatch: datamatch, Addr: addr, Len: size, FD: int32(efd), Flags: flags}
	if _, err := ioctl(v.fd(), kvmIOEventFD, uintptr(unsafe.Pointer(&a))); err != nil {
		return fmt.Errorf("kvm: KVM_IOEVENTFD at %#x: %w", addr, err)
	}
	return nil
}

// ClockData is struct kvm_clock_data.
type ClockData struct {
	Clock    uint64
	Flags    uint32
	_        uint32
	Realtime uint64
	HostTSC  uint64
	_        [4]uint32
}

// GetClock returns the VM's kvmclock.
func (v *VM) GetClock() (ClockData, error) {
	var c ClockData
	if _, err := ioctl(v.fd(), kvmGetClock, uintptr(unsafe.Pointer(&c))); err != nil {
		return c, fmt.Errorf("kvm: KVM_GET_CLOCK: %w", err)
	}
	return c, nil
}

// SetClock sets the VM's kvmclock.
func (v *VM) SetClock(c ClockData) error {
	if _, err := ioctl(v.fd(), kvmSetClock, uintptr(unsafe.Pointer(&c))); err != nil {
		return fmt.Errorf("kvm: KVM_SET_CLOCK: %w", err)
	}
	return nil
}

// SignalMSI injects a message-signalled interrupt.
func (v *VM) SignalMSI(addr uint64, data uint32) error {
	var m struct {
		AddrLo, AddrHi, Data, Flags, DevID uint32
		_                                  [12]byte
	}
	m.AddrLo, m.AddrHi, m.Data = uint32(addr), uint32(addr>>32), data
	if _, err := ioctl(v.fd(), kvmSignalMSI, uintptr(unsafe.Pointer(&m))); err != nil {
		return fmt.Errorf("kvm: KVM_SIGNAL_MSI: %w", err)
	}
	return nil
}

// CreateVCPU creates vCPU id and maps its kvm_run area.
func (v *VM) CreateVCPU(id int) (*VCPU, error) {
	r, err := ioctl(v.fd(), kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("kvm: KVM_CREATE_VCPU %d: %w", id, err)
	}
	run, err := unix.Mmap(int(r), 0, v.runSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(int(r))
		return nil, fmt.Errorf("kvm: mmap kvm_run of vCPU %d: %w", id, err)
	}
	return &VCPU{ID: id, f: os.NewFile(r, fmt.Sprintf("kvm-vcpu-%d", id)), run: run,
		Run: (*Run)(unsafe.Pointer(&run[0]))}, nil
}

// EventFD creates a non-blocking, close-on-exec eventfd.
func EventFD() (*os.File, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("kvm: eventfd: %w", err)
	}
	return os.NewFile(uintptr(fd), "eventfd"), nil
}
