package guesttest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/kvirt/kvirt/devices/virtio/blk"
	"github.com/kvirt/kvirt/devices/virtio/mmio"
	"github.com/kvirt/kvirt/devices/virtio/rng"
	"github.com/kvirt/kvirt/devices/virtio/virtionet"
	"github.com/kvirt/kvirt/tests/testenv"
	"github.com/kvirt/kvirt/vmm"
	"github.com/kvirt/kvirt/vmm/bootcmd"
)

// diskOption is one virtio-blk disk, /dev/vda, /dev/vdb, ... in order.
type diskOption struct {
	Path     string
	ReadOnly bool
	Serial   string
	Direct   bool // kvirt: O_DIRECT, as QEMU's cache=none (QEMU always runs with cache=none)
}

// vmOptions describe a guest run.
type vmOptions struct {
	Disks   []diskOption
	Tap     string         // tap interface name, inside NetNS
	NetNS   netns.NsHandle // namespace holding Tap
	MAC     net.HardwareAddr
	MemMiB  int
	Cmdline string // kvirt.* words for the guest's init
}

// baseCmdline is the guest kernel command line for PVM hosts (see images/README.md).
const baseCmdline = "console=ttyS0 reboot=k panic=-1 tsc=reliable no_timer_check lpj=1000000 mitigations=off quiet rodata=off" +
	" noxsave nopku nofsgsbase nopcid noinvpcid clearcpuid=141,297,580,151,158,306,59,534,308,514,200,311,312,296,291" +
	" GODEBUG=cpu.avx=off,cpu.avx2=off"

// guest is a running guest with its console captured.
type guest struct {
	name    string
	mu      sync.Mutex
	out     bytes.Buffer
	changed chan struct{} // closed and replaced on every console write
	exited  chan struct{}
	exitErr error
	started time.Time
	// kvirt only: the virtio transports, for counters and diagnostics.
	transports []*mmio.Transport
}

func newGuest(name string) *guest {
	return &guest{name: name, changed: make(chan struct{}), exited: make(chan struct{}), started: time.Now()}
}

func (g *guest) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.out.Write(p)
	close(g.changed)
	g.changed = make(chan struct{})
	return len(p), nil
}

func (g *guest) console() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.out.String()
}

func (g *guest) exit(err error) {
	g.exitErr = err
	close(g.exited)
}

// expectAny waits until the console shows one of subs and returns it. A "kvirt-guest: error" line fails
// at once unless an error is what the caller waits for.
func (g *guest) expectAny(t *testing.T, subs []string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	wantError := false
	for _, sub := range subs {
		wantError = wantError || strings.HasPrefix(sub, "kvirt-guest: error")
	}
	for {
		g.mu.Lock()
		s, ch := g.out.String(), g.changed
		g.mu.Unlock()
		for _, sub := range subs {
			if strings.Contains(s, sub) {
				return sub
			}
		}
		if !wantError && strings.Contains(s, "kvirt-guest: error") {
			t.Fatalf("%s reported an error while we waited for %q; console tail:\n%s", g.name, subs, tail(s, 3000))
		}
		select {
		case <-ch:
		case <-g.exited:
			g.mu.Lock()
			s = g.out.String()
			g.mu.Unlock()
			for _, sub := range subs {
				if strings.Contains(s, sub) {
					return sub
				}
			}
			t.Fatalf("%s exited (%v) before printing %q; console tail:\n%s", g.name, g.exitErr, subs, tail(s, 3000))
		case <-deadline:
			t.Fatalf("%s: no %q on the console after %v; console tail:\n%s", g.name, subs, timeout, tail(g.console(), 3000))
		}
	}
}

func (g *guest) expect(t *testing.T, sub string, timeout time.Duration) {
	t.Helper()
	g.expectAny(t, []string{sub}, timeout)
	t.Logf("%s: saw %q after %v", g.name, sub, time.Since(g.started).Round(time.Second))
}

// waitExit waits for the guest to power off.
func (g *guest) waitExit(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-g.exited:
		if g.exitErr != nil {
			t.Fatalf("%s ended with %v; console tail:\n%s", g.name, g.exitErr, tail(g.console(), 3000))
		}
	case <-time.After(timeout):
		t.Fatalf("%s did not power off within %v; console tail:\n%s", g.name, timeout, tail(g.console(), 3000))
	}
}

// startGuest boots the test guest on kvirt's VMM, or on QEMU (the reference) when KVIRT_GUEST_VMM=qemu.
func startGuest(t *testing.T, o vmOptions) *guest {
	t.Helper()
	testenv.RequireKVM(t)
	kernel := testenv.Image(t, "vmlinux")
	initrd := testenv.Image(t, "initramfs.cpio")
	if o.MemMiB == 0 {
		o.MemMiB = 256
	}
	if os.Getenv("KVIRT_GUEST_VMM") == "qemu" {
		return startQEMU(t, kernel, initrd, o)
	}
	return startKvirt(t, kernel, initrd, o)
}

// startQEMU runs the same guest on QEMU microvm with its own virtio-mmio devices.
func startQEMU(t *testing.T, kernel, initrd string, o vmOptions) *guest {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
	}
	args := []string{"-enable-kvm", "-M", "microvm,acpi=on,rtc=on", "-cpu", "host,-arch-capabilities",
		"-m", fmt.Sprint(o.MemMiB), "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", baseCmdline + " " + o.Cmdline}
	for i, d := range o.Disks {
		drive := fmt.Sprintf("id=d%d,file=%s,format=raw,if=none,cache=none,aio=threads", i, d.Path)
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		dev := fmt.Sprintf("virtio-blk-device,drive=d%d", i)
		if d.Serial != "" {
			dev += ",serial=" + d.Serial
		}
		args = append(args, "-drive", drive, "-device", dev)
	}
	if o.Tap != "" {
		args = append(args, "-netdev", "tap,id=n0,ifname="+o.Tap+",script=no,downscript=no,vhost=off",
			"-device", "virtio-net-device,netdev=n0,mac="+o.MAC.String())
	}
	g := newGuest("qemu guest")
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Stdout, cmd.Stderr = g, g
	start := cmd.Start
	if o.Tap == "" {
		// Dies with the test binary (a timed-out test never runs its cleanups). Not for the netns case:
		// the parent death signal follows the forking thread, which inNs discards at once.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if o.Tap != "" {
		// QEMU opens the tap by name: start it inside the tap's namespace.
		start = func() error { return inNs(o.NetNS, cmd.Start) }
	}
	if err := start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	go func() { g.exit(cmd.Wait()) }()
	t.Cleanup(func() {
		select {
		case <-g.exited:
		default:
			_ = cmd.Process.Kill()
			<-g.exited
		}
	})
	return g
}

// startKvirt boots the guest on kvirt's VMM with this package's devices.
func startKvirt(t *testing.T, kernel, initrd string, o vmOptions) *guest {
	t.Helper()
	g := newGuest("kvirt guest")
	cfg := vmm.Config{Kernel: kernel, Initrd: initrd, Cmdline: vmm.DefaultCmdline + " " + o.Cmdline,
		MemoryBytes: uint64(o.MemMiB) << 20, Console: g, Logf: t.Logf}
	// KVIRT_GUEST_NOACPI=1: devices declared on the command line instead of the DSDT; without ACPI the
	// guest cannot power off, so it reboots instead and the machine exits.
	noACPI := os.Getenv("KVIRT_GUEST_NOACPI") == "1"
	if noACPI {
		cfg.NoACPI, cfg.OnReboot = true, vmm.RebootExit
		cfg.Cmdline = strings.ReplaceAll(cfg.Cmdline, "poweroff", "reboot")
	}
	m, err := vmm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var transports []*mmio.Transport
	var nic *virtionet.Device
	attach := func(name string, dev mmio.Device) {
		t.Helper()
		tr, err := m.AttachVirtio(name, dev)
		if err != nil {
			t.Fatal(err)
		}
		transports = append(transports, tr)
	}
	for i, d := range o.Disks {
		name := blk.DiskName(i)
		dev, err := bootcmd.DiskSpec{Path: d.Path, ReadOnly: d.ReadOnly, Serial: d.Serial, Direct: d.Direct}.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		attach("virtio-blk "+name, dev)
	}
	if o.Tap != "" {
		var dev *virtionet.Device
		// The tap lives in the test's namespace: open it from a thread inside it.
		if err := inNs(o.NetNS, func() error {
			var err error
			dev, err = bootcmd.TapSpec{Name: o.Tap, MAC: o.MAC}.Open()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		attach("virtio-net "+o.Tap, dev)
		nic = dev
	}
	attach("virtio-rng", rng.New())
	g.transports = transports
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		out, err := m.Wait(context.Background())
		if err == nil && out != vmm.PoweredOff && !(noACPI && out == vmm.Rebooted) {
			err = fmt.Errorf("outcome %v", out)
		}
		g.exit(err)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			for _, tr := range transports {
				t.Logf("device state: %s", tr.Debug())
			}
			if nic != nil {
				st := &nic.Stats
				t.Logf("virtio-net stats: rx %d frames %d bytes %d dropped; tx %d frames %d bytes %d dropped",
					st.RxFrames.Load(), st.RxBytes.Load(), st.RxDropped.Load(), st.TxFrames.Load(), st.TxBytes.Load(), st.TxDropped.Load())
			}
		}
		m.Stop()
		select {
		case <-g.exited:
		case <-time.After(time.Minute):
			t.Error("machine did not stop within a minute")
		}
	})
	return g
}
