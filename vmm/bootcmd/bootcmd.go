// Package bootcmd is the `boot` command line: boot a Linux kernel directly on kvirt's VMM with the guest's
// serial console on the terminal. The lean kvirt-vmm binary and `virt-launcher boot` both run it, with the
// same flags and exit codes.
//
// It imports only the VMM, the device models and small libraries (no Kubernetes packages): the binary that
// boots a VM this way initialises in about a millisecond and touches few pages of its own code.
package bootcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/kvirt/kvirt/vmm"
	"github.com/kvirt/kvirt/vmm/cpuid"
)

// Exit codes.
const (
	ExitPoweredOff = 0 // the guest powered off
	ExitUsage      = 2 // bad flags or arguments
	ExitCrashed    = 3 // the guest crashed (triple fault, emulation failure)
	ExitVMMError   = 4 // the VMM failed (KVM unavailable, bad kernel, internal error)
	ExitStopped    = 5 // hard stop (second Ctrl-C / SIGTERM twice, or the shutdown timeout)
	ExitRebooted   = 6 // the guest rebooted and --on-reboot=exit
)

// Use is the synopsis after the command name.
const Use = "--kernel KERNEL [--initrd INITRD] [--append CMDLINE] [--memory 256Mi] [--cpus N] [--disk PATH[,ro][,serial=S]]... [--tap NAME[,mac=M]]..."

// Short is the one-line description.
const Short = "Boot a Linux kernel with the console on this terminal"

// Long is the help text (exit codes included).
const Long = `Boot a Linux kernel (vmlinux ELF or bzImage) directly on kvirt's VMM, with the guest's serial console
(COM1) on this terminal. Stdin is put in raw mode only when it is a terminal.

Ctrl-C (SIGINT) or SIGTERM presses the ACPI power button so the guest shuts down cleanly; a second one, or
--shutdown-timeout (30s) without the guest powering off (a guest still booting misses the button), stops
the machine at once. SIGUSR1 prints every vCPU's registers to stderr (diagnosing a hung guest).

Exit codes:
  0  the guest powered off
  2  bad flags or arguments
  3  the guest crashed (triple fault, emulation failure, failed VM entry); registers are printed
  4  VMM error (KVM unavailable, unreadable or invalid kernel, internal error)
  5  hard stop (second Ctrl-C or SIGTERM, or --shutdown-timeout after the first)
  6  the guest rebooted and --on-reboot=exit`

// DefaultShutdownTimeout is how long a guest has to power off after the first Ctrl-C or SIGTERM.
const DefaultShutdownTimeout = 30 * time.Second

// ExitError carries the exit code for an error.
type ExitError struct {
	Code int
	Err  error
}

func (e ExitError) Error() string { return e.Err.Error() }
func (e ExitError) Unwrap() error { return e.Err }

func usage(format string, args ...any) error {
	return ExitError{ExitUsage, fmt.Errorf(format, args...)}
}

// Flags are the command's options.
type Flags struct {
	Kernel, Initrd, Append string
	Memory                 string
	CPUs                   int
	NoACPI, PVH            bool
	Disable                []string
	UUID, Serial           string
	OnReboot, Compat       string
	Disks, Taps            []string
	RNG                    bool
	PrintStart             bool
	ShutdownTimeout        time.Duration
}

// AddFlags defines the command's flags on fs and returns where they land.
func AddFlags(fs *pflag.FlagSet) *Flags {
	f := &Flags{}
	fs.StringVar(&f.Kernel, "kernel", "", "kernel image: vmlinux (ELF64) or bzImage (required)")
	fs.StringVar(&f.Initrd, "initrd", "", "initramfs image")
	fs.StringVar(&f.Append, "append", vmm.DefaultCmdline, "kernel command line (on PVM hosts the CPU feature words are appended)")
	fs.StringVar(&f.Memory, "memory", "256Mi", "guest memory (Kubernetes quantity, e.g. 128Mi, 1Gi)")
	fs.IntVar(&f.CPUs, "cpus", 1, "number of vCPUs")
	fs.BoolVar(&f.NoACPI, "no-acpi", false, "boot without ACPI tables (MP table only; no clean poweroff)")
	fs.BoolVar(&f.PVH, "pvh", false, "enter a vmlinux through its PVH entry (32-bit, hvm_start_info) instead of the 64-bit one")
	fs.StringSliceVar(&f.Disable, "cpu-disable", nil, "CPU features to hide from the guest (e.g. avx,pcid)")
	fs.StringVar(&f.UUID, "uuid", "", "firmware (SMBIOS) UUID")
	fs.StringVar(&f.Serial, "serial", "", "firmware (SMBIOS) serial number")
	fs.StringVar(&f.OnReboot, "on-reboot", "reset", "what a guest reboot does: reset (in place) or exit")
	fs.StringVar(&f.Compat, "compat", "auto", "host compatibility policy: auto (PVM detected), pvm, off")
	fs.BoolVar(&f.PrintStart, "print-start-timing", false, "print the wall-clock times of the start-up steps and of the first KVM_RUN, and where guest RAM is mapped, to stderr (benchmarks)")
	_ = fs.MarkHidden("print-start-timing")
	fs.StringArrayVar(&f.Disks, "disk", nil, "virtio-blk disk PATH[,ro][,serial=S][,direct] (repeatable: /dev/vda, /dev/vdb, ...)")
	fs.StringArrayVar(&f.Taps, "tap", nil, "virtio-net NIC on tap NAME[,mac=M] in this network namespace, created if missing (repeatable)")
	fs.BoolVar(&f.RNG, "rng", true, "virtio-rng entropy device")
	fs.DurationVar(&f.ShutdownTimeout, "shutdown-timeout", DefaultShutdownTimeout, "after Ctrl-C or SIGTERM, how long the guest has to power off before the machine is stopped (0: wait for ever)")
	return f
}

// Config turns the flags into a VMM config (without console wiring); errors are usage errors.
func (f *Flags) Config() (vmm.Config, error) {
	if f.Kernel == "" {
		return vmm.Config{}, usage("--kernel is required")
	}
	mem, err := ParseMemory(f.Memory)
	if err != nil {
		return vmm.Config{}, usage("--memory: %v", err)
	}
	cfg := vmm.Config{Kernel: f.Kernel, Initrd: f.Initrd, Cmdline: f.Append, MemoryBytes: mem,
		CPUs: f.CPUs, NoACPI: f.NoACPI, PVH: f.PVH, CPUPolicy: cpuid.Policy{Disable: f.Disable}}
	cfg.SMBIOS.UUID, cfg.SMBIOS.Serial = f.UUID, f.Serial
	if f.CPUs < 1 {
		return cfg, usage("--cpus %d: want at least 1", f.CPUs)
	}
	switch f.OnReboot {
	case "reset":
		cfg.OnReboot = vmm.RebootReset
	case "exit":
		cfg.OnReboot = vmm.RebootExit
	default:
		return cfg, usage("--on-reboot %q: want reset or exit", f.OnReboot)
	}
	switch f.Compat {
	case "auto":
		cfg.Compat = vmm.CompatAuto
	case "pvm":
		cfg.Compat = vmm.CompatPVM
	case "off":
		cfg.Compat = vmm.CompatOff
	default:
		return cfg, usage("--compat %q: want auto, pvm or off", f.Compat)
	}
	if err := cfg.CPUPolicy.Validate(); err != nil {
		return cfg, usage("--cpu-disable: %v", err)
	}
	if _, _, err := f.devices(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// ExitCode maps a machine outcome to the process exit code.
func ExitCode(o vmm.Outcome) int {
	switch o {
	case vmm.PoweredOff:
		return ExitPoweredOff
	case vmm.Crashed:
		return ExitCrashed
	case vmm.Stopped:
		return ExitStopped
	case vmm.Rebooted:
		return ExitRebooted
	}
	return ExitVMMError
}

// Main runs the command as program name with args (without the program name) and returns the exit code.
func Main(name string, args []string) int {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SortFlags = false
	f := AddFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "%s\n\nUsage:\n  %s %s\n\n%s\n\nFlags:\n%s", Short, name, Use, Long, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "%s: %v (see %s --help)\n", name, err, name)
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "%s: unexpected argument %q (see %s --help)\n", name, fs.Arg(0), name)
		return ExitUsage
	}
	err := Run(f, name)
	if err == nil {
		return 0
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	var ee ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return ExitVMMError
}

// Run boots the machine and waits for it to end; logs are prefixed with name. The error is an ExitError
// unless the guest powered off (nil).
func Run(f *Flags, name string) error {
	// Catch signals before anything else, so one sent while the VMM starts is not lost (or ignored, for a
	// background job whose SIGINT started ignored); it is acted on once the machine runs.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	cfg, err := f.Config()
	if err != nil {
		return err
	}
	logger := log.New(os.Stderr, name+": ", 0)
	cfg.Logf = logger.Printf
	if f.PrintStart {
		cfg.OnFirstRun = func() { fmt.Fprintf(os.Stderr, "kvirt-bench: first-kvm-run %d\n", time.Now().UnixNano()) }
		cfg.Trace = func(step string) { fmt.Fprintf(os.Stderr, "kvirt-bench: step-%s %d\n", step, time.Now().UnixNano()) }
		fmt.Fprintf(os.Stderr, "kvirt-bench: step-main %d\n", mainStart.UnixNano())
		fmt.Fprintf(os.Stderr, "kvirt-bench: step-run %d\n", time.Now().UnixNano())
	}
	var out io.Writer = os.Stdout
	cfg.Console = out
	if _, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); err == nil {
		restore, err := RawTerminal(int(os.Stdin.Fd()))
		if err != nil {
			logger.Printf("cannot put the terminal in raw mode (%v); console input is line-buffered", err)
		} else {
			defer restore()
		}
		cfg.ConsoleInput = os.Stdin
	} else if !IsDevNull(os.Stdin) {
		cfg.ConsoleInput = os.Stdin
	}
	m, err := vmm.New(cfg)
	if err != nil {
		return ExitError{ExitVMMError, fmt.Errorf("%w (check --kernel/--initrd and that /dev/kvm is usable)", err)}
	}
	if f.PrintStart {
		// Where guest RAM lives in this process, so a benchmark can tell guest pages from the VMM's own.
		for _, r := range m.Memory().Regions() {
			fmt.Fprintf(os.Stderr, "kvirt-bench: guest-ram %#x %#x\n", uintptr(unsafe.Pointer(&r.Data[0])), len(r.Data))
		}
	}
	if err := f.addDevices(m); err != nil {
		m.Stop()
		return ExitError{ExitVMMError, err}
	}
	if err := m.Start(); err != nil {
		return ExitError{ExitVMMError, err}
	}
	dump := make(chan os.Signal, 1)
	signal.Notify(dump, syscall.SIGUSR1)
	defer signal.Stop(dump)
	go func() {
		n := 0
		var grace <-chan time.Time
		for {
			select {
			case <-grace:
				logger.Printf("the guest did not power off within --shutdown-timeout %v: stopping the machine", f.ShutdownTimeout)
				m.Stop()
				grace = nil
			case <-dump:
				st, err := m.DumpState()
				if err != nil {
					logger.Printf("dump state: %v", err)
				}
				logger.Printf("SIGUSR1: vCPU state:\n%s", st)
			case s := <-sigs:
				n++
				if n == 1 {
					logger.Printf("%v: asking the guest to power off (ACPI power button); repeat to stop at once", s)
					if err := m.RequestShutdown(); err != nil {
						logger.Printf("%v; stopping at once", err)
						m.Stop()
					} else if f.ShutdownTimeout > 0 {
						grace = time.After(f.ShutdownTimeout)
					}
				} else {
					logger.Printf("%v again: stopping the machine", s)
					m.Stop()
				}
			case <-m.Done():
				return
			}
		}
	}()
	o, err := m.Wait(context.Background())
	code := ExitCode(o)
	if err != nil {
		return ExitError{code, fmt.Errorf("machine ended (%v): %w", o, err)}
	}
	if code != 0 {
		return ExitError{code, fmt.Errorf("machine ended: %v", o)}
	}
	logger.Printf("guest powered off")
	return nil
}

// mainStart is when package initialisation reached this package (after its dependencies' init): with
// --print-start-timing it shows the cost of the runtime and of package initialisation.
var mainStart = time.Now()

// RawTerminal puts a terminal in raw-ish mode (no echo, no line editing) but keeps ISIG so Ctrl-C still
// reaches the process as SIGINT; it returns the restore function.
func RawTerminal(fd int) (func(), error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	t := *old
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

// IsDevNull reports whether f is /dev/null (or cannot be examined).
func IsDevNull(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return true
	}
	return fi.Mode()&os.ModeCharDevice != 0 && strings.Contains(f.Name(), "null")
}
