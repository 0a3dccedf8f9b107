// Command kvirt-init is PID 1 (/init) of kvirt's guest initramfs.
//
// It is PID 1 itself, rather than a u-root "uinit" started by u-root's init, because the kernel's tiny
// ACPI power-button driver (CONFIG_ACPI_TINY_POWER_BUTTON) signals only PID 1: kvirt-init turns that signal
// (SIGPWR; also SIGTERM, SIGINT and the driver's default 38) into sync + ACPI poweroff, which is how a
// guest answers a graceful shutdown from the VMM.
//
// At start it mounts /proc, /sys, /dev, /dev/pts and /tmp, prints "kvirt-guest: ready" on the console
// (ttyS0), then runs the comma-separated actions of kvirt.test= from the kernel command line, printing
// "kvirt-guest: ..." result lines (see images/README.md). Without kvirt.test it starts an interactive
// shell on the console and powers off when the shell exits. It reaps every orphaned process.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// The console every marker line goes to. Each line is written with one write(2) so lines from different
// goroutines never interleave.
var (
	consoleMu sync.Mutex
	console   = os.Stdout
)

func say(format string, args ...any) {
	line := "kvirt-guest: " + fmt.Sprintf(format, args...) + "\n"
	consoleMu.Lock()
	defer consoleMu.Unlock()
	_, _ = console.WriteString(line)
}

func main() {
	isInit := os.Getpid() == 1
	if isInit {
		setupSystem()
	}
	os.Setenv("PATH", "/bin:/bbin:/sbin:/usr/bin:/usr/sbin")

	rp := newReaper(isInit)
	handleShutdownSignals()

	say("ready")

	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		say("error cmdline: %v", err)
	}
	cfg, err := parseCmdline(string(raw))
	if err != nil {
		say("error cmdline: %v", err)
	}
	if isInit {
		cloudInitAtBoot() // cidata.go: NoCloud meta-data (hostname), when a cidata disk is attached
	}
	if len(cfg.Actions) == 0 {
		interactiveShell(rp)
		powerOff("shell exited")
		return
	}
	for _, a := range cfg.Actions {
		if err := run(a, cfg, rp); err != nil {
			say("error %s: %v", a, err)
		}
	}
	// Every action ran and none powered off: stay up (an init that exits panics the kernel), serving the
	// power button and reaping.
	select {}
}

// setupSystem mounts the kernel filesystems and makes sure stdin/stdout/stderr are the console.
func setupSystem() {
	mounts := []struct {
		src, dir, fstype string
		flags            uintptr
		data             string
	}{
		{"proc", "/proc", "proc", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", syscall.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", syscall.MS_NOSUID | syscall.MS_NOEXEC, "ptmxmode=0666,mode=0620"},
		{"tmpfs", "/tmp", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=1777"},
		// As every init does: /run is a tmpfs, so the cloud-init data can be mounted there even when the
		// root filesystem is a disk mounted read-only (a boot entry's "ro").
		{"tmpfs", "/run", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=0755"},
	}
	for _, m := range mounts {
		_ = os.MkdirAll(m.dir, 0o755)
		if err := syscall.Mount(m.src, m.dir, m.fstype, m.flags, m.data); err != nil && err != syscall.EBUSY {
			// Printed before the console check below: it may be lost if there is no console yet.
			fmt.Fprintf(os.Stderr, "kvirt-guest: error mount %s: %v\n", m.dir, err)
		}
	}
	// The kernel opens /dev/console as fds 0-2 for init only if the initramfs has that node; after
	// devtmpfs is mounted it exists, so reopen when the inherited fds are unusable.
	var st syscall.Stat_t
	if syscall.Fstat(1, &st) != nil {
		if f, err := os.OpenFile("/dev/console", os.O_RDWR, 0); err == nil {
			for fd := 0; fd <= 2; fd++ {
				_ = syscall.Dup3(int(f.Fd()), fd, 0)
			}
			f.Close()
		}
	}
	_ = os.MkdirAll("/mnt", 0o755)
}

// handleShutdownSignals powers the guest off on the ACPI power button (SIGPWR from the tiny power-button
// driver, or its default signal 38) and on SIGTERM/SIGINT.
func handleShutdownSignals() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGPWR, syscall.SIGTERM, syscall.SIGINT, syscall.Signal(38))
	go func() {
		sig := <-ch
		if sig == syscall.SIGPWR || sig == syscall.Signal(38) {
			say("power button")
		} else {
			say("signal %v", sig)
		}
		powerOff("power button")
	}()
}

// powerOff syncs and powers off (ACPI S5 through the kernel). It does not return when PID 1.
func powerOff(why string) {
	say("poweroff (%s)", why)
	syscall.Sync()
	if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		say("error poweroff: %v", err)
		if os.Getpid() != 1 {
			os.Exit(0)
		}
	}
	select {}
}

func reboot() {
	say("reboot")
	syscall.Sync()
	if err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART); err != nil {
		say("error reboot: %v", err)
		if os.Getpid() != 1 {
			os.Exit(0)
		}
	}
	select {}
}

// interactiveShell runs the default shell on the console as a new session with the console as its
// controlling terminal, so Ctrl-C reaches the shell's commands, not init.
func interactiveShell(rp *reaper) {
	shell := "/bin/defaultsh"
	if _, err := os.Stat(shell); err != nil {
		shell = "/bin/sh"
	}
	say("starting %s (exit it to power off)", shell)
	attr := &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if _, err := rp.run(shell, []string{shell}, attr); err != nil {
		say("error shell: %v", err)
	}
}

// tick prints wall-clock and CLOCK_MONOTONIC nanoseconds every 250 ms, forever.
func tick() {
	t := time.NewTicker(250 * time.Millisecond)
	for {
		say("tick %d %d", time.Now().UnixNano(), monotonicNanos())
		<-t.C
	}
}

// monotonicNanos reads CLOCK_MONOTONIC (time.Now's monotonic reading is only usable relatively).
func monotonicNanos() int64 {
	var ts syscall.Timespec
	const clockMonotonic = 1
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		return -1
	}
	return ts.Nano()
}

// firstLine returns the first line of s without surrounding spaces.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}
