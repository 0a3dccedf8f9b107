package control

import (
	"io"
	"sync"
	"time"
)

// DefaultPort is the control API's TCP port on the pod IP (controller.DefaultControlPort).
const DefaultPort = 8186

// DefaultSocket is the control API's Unix socket inside the launcher pod.
const DefaultSocket = "/var/run/kvirt/launcher.sock"

// Phase is the guest's lifecycle phase as the launcher sees it.
type Phase string

const (
	Starting  Phase = "Starting"  // preparing disks, network, booting the VMM
	Running   Phase = "Running"   // vCPUs run (or are paused: see Status.Paused)
	Succeeded Phase = "Succeeded" // the guest powered off, or was stopped as asked
	Failed    Phase = "Failed"    // crash, VMM failure, launcher failure, hard stop after the grace period
)

// Final reports whether the phase can no longer change.
func (p Phase) Final() bool { return p == Succeeded || p == Failed }

// Interface is a guest NIC as the launcher knows it.
type Interface struct {
	Name string   `json:"name"`          // spec.domain.devices.interfaces[].name
	MAC  string   `json:"mac,omitempty"` // guest MAC
	IP   string   `json:"ip,omitempty"`  // primary address (the DHCP lease)
	IPs  []string `json:"ips,omitempty"` // all addresses, primary first
}

// Status is what the launcher reports.
type Status struct {
	Phase Phase `json:"phase"`
	// BootMarkerSeen: the guest printed its boot-complete marker on the serial console.
	BootMarkerSeen bool `json:"bootMarkerSeen,omitempty"`
	Paused         bool `json:"paused,omitempty"`
	// ShuttingDown: a graceful shutdown is under way; Deadline is when the hard stop happens.
	ShuttingDown bool       `json:"shuttingDown,omitempty"`
	Deadline     *time.Time `json:"deadline,omitempty"`
	// GracePeriodSeconds is the grace period a shutdown gets: the VMI's terminationGracePeriodSeconds at
	// launch, or the shorter one the controller passed on since (nil: not known yet).
	GracePeriodSeconds *int64 `json:"gracePeriodSeconds,omitempty"`
	// Reason and Message explain a final phase (e.g. "Shutdown", "Crashed", "GracePeriodExpired").
	Reason     string      `json:"reason,omitempty"`
	Message    string      `json:"message,omitempty"`
	Interfaces []Interface `json:"interfaces,omitempty"`
	// Boot says which kernel the launcher booted and why (nil until it chose).
	Boot *Boot `json:"boot,omitempty"`
}

// BootKernel names the kernel a guest booted.
type BootKernel string

const (
	// ImageKernel: the OS image's own kernel and initrd, from its boot disk's default entry.
	ImageKernel BootKernel = "Image"
	// PlatformKernel: kvirt's platform kernel with the OS image's root filesystem and command line (hosts
	// that cannot run a stock kernel, PVM).
	PlatformKernel BootKernel = "Platform"
	// BuiltInGuest: kvirt's own kernel and initramfs, because no disk holds a bootable OS.
	BuiltInGuest BootKernel = "BuiltIn"
	// KernelBootKernel: spec.domain.firmware.kernelBoot's kernel.
	KernelBootKernel BootKernel = "KernelBoot"
	// OverrideKernel: the kernel given to virt-launcher with --kernel (debugging).
	OverrideKernel BootKernel = "Override"
)

// Boot is the launcher's boot decision.
type Boot struct {
	Kernel BootKernel `json:"kernel"`
	// Disk is the boot disk's name (spec.domain.devices.disks[].name), if one was read.
	Disk string `json:"disk,omitempty"`
	// Message says what booted, from where, and why, for the VMI's condition and event.
	Message string `json:"message"`
}

func (s Status) clone() Status {
	c := s
	if s.Boot != nil {
		b := *s.Boot
		c.Boot = &b
	}
	c.Interfaces = append([]Interface(nil), s.Interfaces...)
	for i := range c.Interfaces {
		c.Interfaces[i].IPs = append([]string(nil), s.Interfaces[i].IPs...)
	}
	if s.Deadline != nil {
		d := *s.Deadline
		c.Deadline = &d
	}
	if s.GracePeriodSeconds != nil {
		g := *s.GracePeriodSeconds
		c.GracePeriodSeconds = &g
	}
	return c
}

// VM is what the VMM side provides. Every method may be called from any goroutine.
type VM interface {
	Pause() error           // stop the vCPUs (devices and console keep working)
	Resume() error          // restart them
	RequestShutdown() error // press the ACPI power button
	Stop() error            // hard stop: the guest ends now
	// Console returns a new subscription to the serial output (from now on; closing it unsubscribes) and
	// the serial input. It works while paused.
	Console() (out io.ReadCloser, in io.Writer, err error)
}

// Shutdowner is the launcher's grace handling (launcher/grace). Shutdown starts a graceful shutdown with the
// given grace (negative: the grace period the launcher has); SetGrace lowers the grace period (a shutdown
// under way ends at its start plus grace if that is earlier; 0 stops the guest now).
type Shutdowner interface {
	Shutdown(grace time.Duration)
	SetGrace(grace time.Duration)
}

// Board holds the launcher's Status and tells watchers about every change.
type Board struct {
	mu      sync.Mutex
	st      Status
	version uint64
	changed chan struct{} // closed and replaced on every change
}

// NewBoard returns a board holding st.
func NewBoard(st Status) *Board { return &Board{st: st.clone(), changed: make(chan struct{})} }

// Get returns a copy of the current status.
func (b *Board) Get() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st.clone()
}

// Update changes the status under the board's lock and wakes watchers. A final phase never changes back.
func (b *Board) Update(f func(*Status)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	wasFinal := b.st.Phase.Final()
	old := b.st.clone()
	f(&b.st)
	if wasFinal {
		b.st.Phase, b.st.Reason, b.st.Message = old.Phase, old.Reason, old.Message
	}
	b.version++
	close(b.changed)
	b.changed = make(chan struct{})
}

// next returns the current status, its version and a channel closed at the next change.
func (b *Board) next() (Status, uint64, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st.clone(), b.version, b.changed
}
