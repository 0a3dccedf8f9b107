// Package vmm is kvirt's virtual machine monitor: it assembles a KVM virtual machine from a Config (guest
// memory, in-kernel irqchip and PIT, legacy devices, ACPI/SMBIOS tables, virtio-mmio slots), boots a
// Linux kernel through the 64-bit boot protocol, runs one locked OS thread per vCPU, and drives the
// machine's lifecycle: Start, Pause/Resume, RequestShutdown (ACPI power button), Stop, Wait.
package vmm

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/kvirt/kvirt/vmm/cpuid"
	"github.com/kvirt/kvirt/vmm/smbios"
)

// RebootAction says what a guest reboot does.
type RebootAction int

const (
	// RebootReset resets the guest in place: the kernel is loaded again and the vCPUs restart (default).
	RebootReset RebootAction = iota
	// RebootExit ends the machine with outcome Rebooted.
	RebootExit
)

// Compat selects the host compatibility policy.
type Compat int

const (
	// CompatAuto applies the PVM policy when the host's KVM is PVM (default).
	CompatAuto Compat = iota
	// CompatOff applies no host policy.
	CompatOff
	// CompatPVM applies the PVM policy regardless of the host.
	CompatPVM
)

// Config describes a machine.
type Config struct {
	// Kernel is the path of a vmlinux (ELF64) or bzImage, read at every (re)boot straight into guest memory;
	// KernelImage, if set, is used instead.
	Kernel      string
	KernelImage []byte
	// PVH boots a vmlinux through its PVH entry (32-bit, hvm_start_info; Linux with CONFIG_PVH) instead of
	// the 64-bit Linux boot protocol entry; New fails at Start if the kernel declares none.
	PVH bool
	// Initrd is an optional initramfs path; InitrdImage, if set, is used instead.
	Initrd      string
	InitrdImage []byte
	// Cmdline is the kernel command line (host policy words are appended).
	Cmdline string
	// MemoryBytes is the guest RAM size (default 256 MiB; at least 16 MiB).
	MemoryBytes uint64
	// CPUs is the vCPU count (default 1, at most 64).
	CPUs int
	// Sockets, Cores (per socket) and Threads (per core) lay the vCPUs out (KubeVirt's
	// spec.domain.cpu): the guest sees them in CPUID and the MADT. All zero: CPUs cores in one socket.
	// Otherwise zeros count as 1, and CPUs (if set) must equal the product.
	Sockets, Cores, Threads int
	// StartPaused creates the machine with its vCPUs paused before their first instruction (KubeVirt's
	// startStrategy Paused); Resume runs the guest.
	StartPaused bool
	// Console receives the guest's COM1 output (nil discards); ConsoleInput feeds COM1 input (nil: none).
	Console      io.Writer
	ConsoleInput io.Reader
	// NoACPI leaves out the ACPI tables (the guest then cannot power off or see a power button).
	NoACPI bool
	// CPUPolicy disables CPU features (by name, see cpuid.Features); merged with the host policy.
	CPUPolicy cpuid.Policy
	// Compat selects the host compatibility policy (default: automatic PVM detection).
	Compat Compat
	// SMBIOS is the firmware identity (UUID, serial) the guest reads as DMI.
	SMBIOS smbios.Info
	// OnReboot selects what a guest reboot does (default: reset in place).
	OnReboot RebootAction
	// HugePages advises transparent huge pages for guest RAM.
	HugePages bool
	// Logf receives the VMM's diagnostic lines (nil: log.Printf).
	Logf func(format string, args ...any)
	// OnFirstRun, if set, is called once, on the boot vCPU's thread, just before its first KVM_RUN
	// (start-up latency measurements).
	OnFirstRun func()
	// Trace, if set, is called with the name of each start-up step as it completes (start-up latency
	// breakdowns; called from more than one goroutine).
	Trace func(step string)
}

const (
	defaultMemory = 256 << 20
	minMemory     = 16 << 20
	maxCPUs       = 64
)

func (c *Config) normalize() error {
	if c.MemoryBytes == 0 {
		c.MemoryBytes = defaultMemory
	}
	if c.MemoryBytes < minMemory {
		return fmt.Errorf("vmm: memory %d bytes is below the minimum of 16 MiB", c.MemoryBytes)
	}
	c.MemoryBytes = (c.MemoryBytes + 0x1fffff) &^ 0x1fffff
	if err := c.normalizeTopology(); err != nil {
		return err
	}
	if err := c.CPUPolicy.Validate(); err != nil {
		return err
	}
	if c.KernelImage == nil {
		if c.Kernel == "" {
			return fmt.Errorf("vmm: no kernel given")
		}
		if _, err := os.Stat(c.Kernel); err != nil {
			return fmt.Errorf("vmm: kernel: %w", err)
		}
	}
	if c.InitrdImage == nil && c.Initrd != "" {
		if _, err := os.Stat(c.Initrd); err != nil {
			return fmt.Errorf("vmm: initrd: %w", err)
		}
	}
	return nil
}

// PVMGuestArgs are appended to the command line on PVM hosts, where every guest kernel instruction is
// interpreted: a distribution boots in minutes where it would take seconds, and systemd's defaults (90 s
// start and device timeouts, 3 min service watchdogs, udev's 180 s event timeout) would kill services that
// are merely slow — udevd loading its rules, journald — and restart them in a loop that never ends. These
// words give them half an hour (the device timeout from systemd 254 on; older images need a drop-in, see
// images/os/customize.sh); a guest without systemd ignores them.
var PVMGuestArgs = []string{"systemd.default_timeout_start_sec=1800", "systemd.default_device_timeout_sec=1800", "systemd.service_watchdogs=0", "udev.event_timeout=1800"}

// DefaultCmdline is the kernel command line kvirt's guests boot with (see PLATFORM.md): serial console,
// keyboard-controller reboot (the VMM sees it as a reset), reboot at once on panic, no timer calibration,
// and Go programs in the guest told not to use AVX (some hosts do not preserve the AVX state for the guest).
const DefaultCmdline = "console=ttyS0 reboot=k panic=-1 tsc=reliable no_timer_check lpj=1000000 mitigations=off quiet rodata=off GODEBUG=cpu.avx=off,cpu.avx2=off"

// openImage returns a reader for an image given as bytes or as a path; done releases it.
func openImage(path string, data []byte) (r io.ReaderAt, size int64, done func(), err error) {
	if data != nil {
		return bytes.NewReader(data), int64(len(data)), func() {}, nil
	}
	if path == "" {
		return nil, 0, func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("vmm: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, nil, fmt.Errorf("vmm: %w", err)
	}
	return f, fi.Size(), func() { f.Close() }, nil
}
