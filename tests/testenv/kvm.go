package testenv

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// The two ioctls the probe needs, written out here so that it does not depend on the VMM it gates:
// a bug in vmm/kvm must fail the KVM tests, not make the probe call KVM unusable.
const (
	kvmGetAPIVersion = 0xAE00 // _IO(KVMIO, 0x00)
	kvmCreateVM      = 0xAE01 // _IO(KVMIO, 0x01)
)

// ProbeKVM reports why the host's KVM cannot run guests, or nil when it can: /dev/kvm must open
// read-write, answer API version 12 and create a VM. The error says what is missing and what to do.
func ProbeKVM() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no /dev/kvm on this host%s", kvmModulesHint())
	}
	if err != nil {
		return fmt.Errorf("open /dev/kvm: %w (give this user read-write access, e.g. the kvm group)", err)
	}
	defer f.Close()
	v, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), kvmGetAPIVersion, 0)
	if errno != 0 {
		return fmt.Errorf("/dev/kvm: KVM_GET_API_VERSION: %w", errno)
	}
	if v != 12 {
		return fmt.Errorf("/dev/kvm: KVM API version %d, want 12", v)
	}
	vm, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), kvmCreateVM, 0)
	if errno != 0 {
		return fmt.Errorf("/dev/kvm: KVM_CREATE_VM: %w (virtualization disabled or in use by another hypervisor?)", errno)
	}
	unix.Close(int(vm))
	return nil
}

// kvmModulesHint says which kvm modules are loaded when the device node is missing: with modules but no
// node, the host (or the sandbox around it) does not expose the device, and nothing inside can create it.
func kvmModulesHint() string {
	var loaded []string
	for _, m := range []string{"kvm", "kvm_intel", "kvm_amd", "kvm_pvm"} {
		if _, err := os.Stat("/sys/module/" + m); err == nil {
			loaded = append(loaded, m)
		}
	}
	if len(loaded) == 0 {
		return " (no kvm module loaded: load kvm_intel or kvm_amd, or run on a host with virtualization)"
	}
	return " (modules " + strings.Join(loaded, ", ") + " are loaded but the host exposes no device node)"
}
