// Package kvm is a thin, typed wrapper over the Linux KVM API (/dev/kvm ioctls) built on
// golang.org/x/sys/unix, without cgo. It only wraps: policy lives in the vmm package.
package kvm

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

const kvmio = 0xAE

func io_(nr uintptr) uintptr        { return kvmio<<8 | nr }
func iow(nr, size uintptr) uintptr  { return 1<<30 | size<<16 | kvmio<<8 | nr }
func ior(nr, size uintptr) uintptr  { return 2<<30 | size<<16 | kvmio<<8 | nr }
func iowr(nr, size uintptr) uintptr { return 3<<30 | size<<16 | kvmio<<8 | nr }
func ioctl(fd int, req, arg uintptr) (uintptr, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if e == unix.EINTR && req != kvmRun {
			continue
		}
		if e != 0 {
			return r, e
		}
		return r, nil
	}
}

var (
	kvmGetAPIVersion       = io_(0x00)
	kvmCreateVM            = io_(0x01)
	kvmGetMSRIndexList     = iowr(0x02, 4)
	kvmCheckExtension      = io_(0x03)
	kvmGetVCPUMmapSize     = io_(0x04)
	kvmGetSupportedCPUID   = iowr(0x05, 8)
	kvmCreateVCPU          = io_(0x41)
	kvmSetUserMemoryRegion = iow(0x46, 32)
	kvmSetTSSAddr          = io_(0x47)
	kvmSetIdentityMapAddr  = iow(0x48, 8)
	kvmCreateIRQChip       = io_(0x60)
	kvmIRQLine             = iow(0x61, 8)
	kvmIRQFD               = iow(0x76, 32)
	kvmCreatePIT2          = iow(0x77, 64)
	kvmIOEventFD           = iow(0x79, 64)
	kvmSetClock            = iow(0x7b, 48)
	kvmGetClock            = ior(0x7c, 48)
	kvmRun                 = io_(0x80)
	kvmGetRegs             = ior(0x81, 144)
	kvmSetRegs             = iow(0x82, 144)
	kvmGetSregs            = ior(0x83, 312)
	kvmSetSregs            = iow(0x84, 312)
	kvmGetMSRs             = iowr(0x88, 8)
	kvmSetMSRs             = iow(0x89, 8)
	kvmGetFPU              = ior(0x8c, 416)
	kvmSetFPU              = iow(0x8d, 416)
	kvmGetLAPIC            = ior(0x8e, 1024)
	kvmSetLAPIC            = iow(0x8f, 1024)
	kvmSetCPUID2           = iow(0x90, 8)
	kvmGetMPState          = ior(0x98, 4)
	kvmSetMPState          = iow(0x99, 4)
	kvmSignalMSI           = iow(0xa5, 32)
)

// Capabilities (KVM_CAP_*).
const (
	CapIRQChip       = 0
	CapUserMemory    = 3
	CapSetTSSAddr    = 4
	CapExtCPUID      = 7
	CapNrVCPUs       = 9
	CapNrMemSlots    = 10
	CapIRQFD         = 32
	CapPIT2          = 33
	CapIOEventFD     = 36
	CapAdjustClock   = 39
	CapMaxVCPUs      = 66
	CapImmediateExit = 136
)

// System is an open /dev/kvm.
type System struct{ f *os.File }

// Open opens /dev/kvm and checks the API version.
func Open() (*System, error) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("kvm: open /dev/kvm: %w (is KVM available and is /dev/kvm read-write for this user?)", err)
	}
	s := &System{f: f}
	v, err := ioctl(s.fd(), kvmGetAPIVersion, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("kvm: KVM_GET_API_VERSION: %w", err)
	}
	if v != 12 {
		f.Close()
		return nil, fmt.Errorf("kvm: API version %d, want 12", v)
	}
	return s, nil
}

func (s *System) fd() int { return int(s.f.Fd()) }

// Close closes /dev/kvm.
func (s *System) Close() error { return s.f.Close() }

// CheckExtension returns KVM_CHECK_EXTENSION's answer for cap (0 = unsupported).
func (s *System) CheckExtension(cap int) int {
	r, err := ioctl(s.fd(), kvmCheckExtension, uintptr(cap))
	if err != nil {
		return 0
	}
	return int(r)
}

// VCPUMmapSize is the size of each vCPU's shared kvm_run area.
func (s *System) VCPUMmapSize() (int, error) {
	r, err := ioctl(s.fd(), kvmGetVCPUMmapSize, 0)
	if err != nil {
		return 0, fmt.Errorf("kvm: KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	return int(r), nil
}

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	for n := 64; n <= 4096; n *= 2 {
		buf := make([]byte, 8+n*int(unsafe.Sizeof(CPUIDEntry{})))
		*(*uint32)(unsafe.Pointer(&buf[0])) = uint32(n)
		_, err := ioctl(s.fd(), kvmGetSupportedCPUID, uintptr(unsafe.Pointer(&buf[0])))
		if err == unix.E2BIG {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("kvm: KVM_GET_SUPPORTED_CPUID: %w", err)
		}
		nent := *(*uint32)(unsafe.Pointer(&buf[0]))
		entries := unsafe.Slice((*CPUIDEntry)(unsafe.Pointer(&buf[8])), nent)
		return append([]CPUIDEntry(nil), entries...), nil
	}
	return nil, fmt.Errorf("kvm: KVM_GET_SUPPORTED_CPUID: too many entries")
}

// MSRIndexList returns the MSRs KVM saves and restores.
func (s *System) MSRIndexList() ([]uint32, error) {
	for n := 128; n <= 8192; n *= 2 {
		buf := make([]uint32, 1+n)
		buf[0] = uint32(n)
		_, err := ioctl(s.fd(), kvmGetMSRIndexList, uintptr(unsafe.Pointer(&buf[0])))
		if err == unix.E2BIG {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("kvm: KVM_GET_MSR_INDEX_LIST: %w", err)
		}
		return append([]uint32(nil), buf[1:1+buf[0]]...), nil
	}
	return nil, fmt.Errorf("kvm: KVM_GET_MSR_INDEX_LIST: too many entries")
}

// CreateVM creates a VM.
func (s *System) CreateVM() (*VM, error) {
	r, err := ioctl(s.fd(), kvmCreateVM, 0)
	if err != nil {
		return nil, fmt.Errorf("kvm: KVM_CREATE_VM: %w", err)
	}
	mm, err := s.VCPUMmapSize()
	if err != nil {
		unix.Close(int(r))
		return nil, err
	}
	return &VM{f: os.NewFile(r, "kvm-vm"), runSize: mm}, nil
}

// PVM reports whether the host's KVM is the PVM ("Pagetable-based Virtual Machine") module, which
// interprets guest ring-0 code and lacks some instructions.
func PVM() bool {
	_, err := os.Stat("/sys/module/kvm_pvm")
	return err == nil
}
