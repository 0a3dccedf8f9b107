package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kvirt/kvirt/vmm"
	"github.com/kvirt/kvirt/vmm/cpuid"
)

// mainStart is when package initialisation reached this package (after every dependency's init).
var mainStart = time.Now()

// Exit codes of `virt-launcher boot`.
const (
	ExitPoweredOff = 0 // the guest powered off
	ExitUsage      = 2 // bad flags or arguments
	ExitCrashed    = 3 // the guest crashed (triple fault, emulation failure)
	ExitVMMError   = 4 // the VMM failed (KVM unavailable, bad kernel, internal error)
	ExitStopped    = 5 // hard stop (second Ctrl-C / SIGTERM twice)
	ExitRebooted   = 6 // the guest rebooted and --on-reboot=exit
)

type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

type bootFlags struct {
	kernel, initrd, appendLine string
	memory                     string
	cpus                       int
	noACPI                     bool
	disable                    []string
	uuid, serial               string
	onReboot, compat           string
	virtio                     virtioFlags
	printStart                 bool
}

func newBootCommand() *cobra.Command {
	var f bootFlags
	cmd := &cobra.Command{
		Use:   "boot --kernel KERNEL [--initrd INITRD] [--append CMDLINE] [--memory 256Mi] [--cpus N] [--disk PATH[,ro][,serial=S]]... [--tap NAME[,mac=M]]...",
		Short: "Boot a Linux kernel with the console on this terminal",
		Long: `Boot a Linux kernel (vmlinux ELF or bzImage) directly on kvirt's VMM, with the guest's serial console
(COM1) on this terminal. Stdin is put in raw mode only when it is a terminal.

Ctrl-C (SIGINT) or SIGTERM presses the ACPI power button so the guest shuts down cleanly; a second one stops
the machine at once. SIGUSR1 prints every vCPU's registers to stderr (diagnosing a hung guest).

Exit codes:
  0  the guest powered off
  2  bad flags or arguments
  3  the guest crashed (triple fault, emulation failure, failed VM entry); registers are printed
  4  VMM error (KVM unavailable, unreadable or invalid kernel, internal error)
  5  hard stop (second Ctrl-C or SIGTERM)
  6  the guest rebooted and --on-reboot=exit`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runBoot(f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.kernel, "kernel", "", "kernel image: vmlinux (ELF64) or bzImage (required)")
	fl.StringVar(&f.initrd, "initrd", "", "initramfs image")
	fl.StringVar(&f.appendLine, "append", vmm.DefaultCmdline, "kernel command line (on PVM hosts the CPU feature words are appended)")
	fl.StringVar(&f.memory, "memory", "256Mi", "guest memory (Kubernetes quantity, e.g. 128Mi, 1Gi)")
	fl.IntVar(&f.cpus, "cpus", 1, "number of vCPUs")
	fl.BoolVar(&f.noACPI, "no-acpi", false, "boot without ACPI tables (MP table only; no clean poweroff)")
	fl.StringSliceVar(&f.disable, "cpu-disable", nil, "CPU features to hide from the guest (e.g. avx,pcid)")
	fl.StringVar(&f.uuid, "uuid", "", "firmware (SMBIOS) UUID")
	fl.StringVar(&f.serial, "serial", "", "firmware (SMBIOS) serial number")
	fl.StringVar(&f.onReboot, "on-reboot", "reset", "what a guest reboot does: reset (in place) or exit")
	fl.StringVar(&f.compat, "compat", "auto", "host compatibility policy: auto (PVM detected), pvm, off")
	fl.BoolVar(&f.printStart, "print-start-timing", false, "print the wall-clock time of the first KVM_RUN to stderr (benchmarks)")
	_ = fl.MarkHidden("print-start-timing")
	fl.StringArrayVar(&f.virtio.disks, "disk", nil, "virtio-blk disk PATH[,ro][,serial=S][,direct] (repeatable: /dev/vda, /dev/vdb, ...)")
	fl.StringArrayVar(&f.virtio.taps, "tap", nil, "virtio-net NIC on tap NAME[,mac=M] in this network namespace, created if missing (repeatable)")
	fl.BoolVar(&f.virtio.rng, "rng", true, "virtio-rng entropy device")
	_ = cmd.MarkFlagRequired("kernel")
	return cmd
}

func usage(format string, args ...any) error {
	return exitError{ExitUsage, fmt.Errorf(format, args...)}
}

// buildConfig turns flags into a VMM config (without console wiring).
func buildConfig(f bootFlags) (vmm.Config, error) {
	q, err := resource.ParseQuantity(f.memory)
	if err != nil || q.Sign() <= 0 {
		return vmm.Config{}, usage("--memory %q: want a positive quantity like 256Mi", f.memory)
	}
	cfg := vmm.Config{Kernel: f.kernel, Initrd: f.initrd, Cmdline: f.appendLine, MemoryBytes: uint64(q.Value()),
		CPUs: f.cpus, NoACPI: f.noACPI, CPUPolicy: cpuid.Policy{Disable: f.disable}}
	cfg.SMBIOS.UUID, cfg.SMBIOS.Serial = f.uuid, f.serial
	if f.cpus < 1 {
		return cfg, usage("--cpus %d: want at least 1", f.cpus)
	}
	switch f.onReboot {
	case "reset":
		cfg.OnReboot = vmm.RebootReset
	case "exit":
		cfg.OnReboot = vmm.RebootExit
	default:
		return cfg, usage("--on-reboot %q: want reset or exit", f.onReboot)
	}
	switch f.compat {
	case "auto":
		cfg.Compat = vmm.CompatAuto
	case "pvm":
		cfg.Compat = vmm.CompatPVM
	case "off":
		cfg.Compat = vmm.CompatOff
	default:
		return cfg, usage("--compat %q: want auto, pvm or off", f.compat)
	}
	if err := cfg.CPUPolicy.Validate(); err != nil {
		return cfg, usage("--cpu-disable: %v", err)
	}
	if _, _, err := f.virtio.parse(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// exitCode maps a machine outcome to the process exit code.
func exitCode(o vmm.Outcome) int {
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

// rawTerminal puts a terminal in raw-ish mode (no echo, no line editing) but keeps ISIG so Ctrl-C still
// reaches us as SIGINT; it returns the restore function.
func rawTerminal(fd int) (func(), error) {
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

func runBoot(f bootFlags) error {
	// Catch signals before anything else, so one sent while the VMM starts is not lost (or ignored, for a
	// background job whose SIGINT started ignored); it is acted on once the machine runs.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	cfg, err := buildConfig(f)
	if err != nil {
		return err
	}
	logger := log.New(os.Stderr, "virt-launcher: ", 0)
	cfg.Logf = logger.Printf
	if f.printStart {
		cfg.OnFirstRun = func() { fmt.Fprintf(os.Stderr, "kvirt-bench: first-kvm-run %d\n", time.Now().UnixNano()) }
		cfg.Trace = func(step string) { fmt.Fprintf(os.Stderr, "kvirt-bench: step-%s %d\n", step, time.Now().UnixNano()) }
		fmt.Fprintf(os.Stderr, "kvirt-bench: step-main %d\n", mainStart.UnixNano())
		fmt.Fprintf(os.Stderr, "kvirt-bench: step-runboot %d\n", time.Now().UnixNano())
	}
	var out io.Writer = os.Stdout
	cfg.Console = out
	if _, err := unix.IoctlGetTermios(int(os.Stdin.Fd()), unix.TCGETS); err == nil {
		restore, err := rawTerminal(int(os.Stdin.Fd()))
		if err != nil {
			logger.Printf("cannot put the terminal in raw mode (%v); console input is line-buffered", err)
		} else {
			defer restore()
			// The guest prints \n; with the terminal's output processing kept, that is fine.
		}
		cfg.ConsoleInput = os.Stdin
	} else if !isDevNull(os.Stdin) {
		cfg.ConsoleInput = os.Stdin
	}
	m, err := vmm.New(cfg)
	if err != nil {
		return exitError{ExitVMMError, fmt.Errorf("%w (check --kernel/--initrd and that /dev/kvm is usable)", err)}
	}
	if err := addVirtioDevices(m, f.virtio); err != nil {
		m.Stop()
		return exitError{ExitVMMError, err}
	}
	if err := m.Start(); err != nil {
		return exitError{ExitVMMError, err}
	}
	dump := make(chan os.Signal, 1)
	signal.Notify(dump, syscall.SIGUSR1)
	defer signal.Stop(dump)
	go func() {
		n := 0
		for {
			select {
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
	code := exitCode(o)
	if err != nil {
		return exitError{code, fmt.Errorf("machine ended (%v): %w", o, err)}
	}
	if code != 0 {
		return exitError{code, fmt.Errorf("machine ended: %v", o)}
	}
	logger.Printf("guest powered off")
	return nil
}

func isDevNull(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return true
	}
	return fi.Mode()&os.ModeCharDevice != 0 && strings.Contains(f.Name(), "null")
}
