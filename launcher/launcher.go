// Package launcher runs one VirtualMachineInstance: it translates the spec (launcher/spec), prepares the
// disks (launcher/volumes), plumbs the pod network (launcher/network), boots the guest on kvirt's VMM with
// virtio-blk, virtio-net and virtio-rng devices, serves the control API (launcher/control) and follows the
// grace-period rules (launcher/grace) until the guest ends. cmd/virt-launcher calls Run in pod mode and in
// `virt-launcher run -f vmi.yaml` (local mode).
package launcher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/containernetworking/plugins/pkg/ns"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/devices/virtio/blk"
	"github.com/kvirt/kvirt/devices/virtio/rng"
	"github.com/kvirt/kvirt/devices/virtio/virtionet"
	"github.com/kvirt/kvirt/images"
	"github.com/kvirt/kvirt/launcher/containerdisk"
	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/launcher/grace"
	"github.com/kvirt/kvirt/launcher/network"
	"github.com/kvirt/kvirt/launcher/spec"
	"github.com/kvirt/kvirt/vmm"
	"github.com/kvirt/kvirt/vmm/cpuid"
	"github.com/kvirt/kvirt/vmm/kvm"
)

// Pod-mode defaults (the controller mounts these; see controller/doc.go).
const (
	DefaultVMIFile   = "/var/run/kvirt/vmi.json"
	DefaultTokenFile = "/var/run/kvirt/secret/token"
	DefaultWorkDir   = "/var/run/kvirt/disks"
	// DefaultImagesDir holds kvirt's guest kernel and initramfs in the launcher image.
	DefaultImagesDir = "/usr/share/kvirt/images"
	// DefaultBootMarker is the line kvirt's guest init prints once userspace runs.
	DefaultBootMarker = "kvirt-guest: ready"
)

// NetworkMode says where the guest NIC goes.
type NetworkMode struct {
	// Kind: "pod" (plumb the launcher's own network namespace, the pod mode), "netns" (plumb the named
	// namespace, /run/netns/<Name> or a path), "tap" (attach to an existing tap device Name), "none".
	Kind string
	Name string
	// NS, if set with Kind "netns", is the namespace itself (tests create unnamed ones).
	NS ns.NetNS
}

// Options configure Run.
type Options struct {
	VMI *v1.VirtualMachineInstance
	// Dirs: where disks are prepared and where PVCs/hostDisks are found.
	Dirs spec.Dirs
	// ImagesDir holds images.Vmlinux and images.Initramfs, booted when the VMI names no kernel.
	ImagesDir string
	// Kernel, Initrd, Append override the guest kernel, initramfs and command line (debugging).
	Kernel, Initrd, Append string
	// NoACPI boots without ACPI tables (debugging): virtio devices are declared on the kernel command line,
	// but the guest sees no power button and cannot power off.
	NoACPI  bool
	Network NetworkMode

	// ControlAddr is the TCP address of the control API (":8186" in the pod; empty: none); Token is required
	// there. ControlSocket is the Unix socket path (empty: none).
	ControlAddr   string
	Token         string
	ControlSocket string

	// TerminationLog receives the outcome (empty: not written).
	TerminationLog string
	// Console and ConsoleInput connect the serial console locally (nil: only through the control API).
	Console      io.Writer
	ConsoleInput io.Reader
	// BootMarker is the console text that sets Status.BootMarkerSeen (DefaultBootMarker when empty).
	BootMarker string
	// Signals start a graceful shutdown (SIGTERM, SIGINT); a second one stops the guest.
	Signals <-chan os.Signal
	// Ready, if set, is called once the control API is listening (with its TCP address, if any).
	Ready func(controlAddr net.Addr)
	Log   *slog.Logger
}

// Run runs the VMI until the guest ends and returns the outcome; it writes the termination message. Bad
// input or a failure before the guest starts gives grace.LauncherFailed with the reason.
func Run(ctx context.Context, o Options) grace.Outcome {
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	r := &runner{o: o, log: o.Log, board: control.NewBoard(control.Status{Phase: control.Starting}),
		hub: control.NewConsoleHub(0)}
	out := r.run(ctx)
	if o.TerminationLog != "" {
		if err := grace.WriteTerminationMessage(o.TerminationLog, out); err != nil {
			r.log.Error("termination message", "path", o.TerminationLog, "err", err)
		}
	}
	return out
}

type runner struct {
	o     Options
	log   *slog.Logger
	board *control.Board
	hub   *control.ConsoleHub

	srv      *control.Server
	srvWG    sync.WaitGroup
	ctlPort  int // the control API's TCP port, from its listener (0: no TCP listener)
	closers  []func() error
	guest    atomic.Pointer[guest]
	shutdown *grace.Manager
}

func (r *runner) fail(err error) grace.Outcome {
	out := grace.LauncherFailed(err)
	r.board.Update(func(s *control.Status) { s.Phase, s.Reason, s.Message = out.Phase, out.Reason, out.Message })
	r.log.Error("launcher failed", "err", err)
	return out
}

func (r *runner) run(ctx context.Context) grace.Outcome {
	defer r.cleanup()
	if r.o.VMI == nil {
		return r.fail(errors.New("no VMI given"))
	}
	m, warnings, err := spec.Translate(r.o.VMI)
	for _, w := range warnings {
		r.log.Warn("VMI field not fully honoured", "detail", w)
	}
	if err != nil {
		return r.fail(fmt.Errorf("unsupported or invalid VMI: %w", err))
	}
	if err := (cpuid.Policy{Disable: m.CPUDisable}).Validate(); err != nil {
		return r.fail(fmt.Errorf("spec.domain.cpu.features: %w", err))
	}
	r.shutdown = &grace.Manager{Grace: m.TerminationGrace, Board: r.board, Log: r.log}
	r.shutdown.Publish()
	if err := r.serve(); err != nil {
		return r.fail(err)
	}
	disks, err := spec.PrepareDisks(ctx, m, r.o.Dirs)
	if err != nil {
		return r.fail(err)
	}
	r.closers = append(r.closers, func() error { return spec.CloseDisks(disks) })
	for _, d := range disks {
		if d.Path != "" { // a persistent disk (volumes/persistent.go)
			r.log.Info("persistent disk", "volume", d.Name, "path", d.Path, "cache", d.Cache, "bytes", d.Backend.Size())
			for _, w := range d.Warnings {
				r.log.Warn("persistent disk", "volume", d.Name, "detail", w)
			}
		}
	}
	tap, iface, err := r.network(m)
	if err != nil {
		return r.fail(err)
	}
	for flag, f := range map[string]string{"--kernel": r.o.Kernel, "--initrd": r.o.Initrd} {
		if _, err := os.Stat(f); f != "" && err != nil {
			return r.fail(fmt.Errorf("%s: %w", flag, err))
		}
	}
	cfg, err := r.vmmConfig(ctx, m, disks)
	if err != nil {
		return r.fail(err)
	}
	g, err := newGuest(cfg, r.hub, r.o.ConsoleInput)
	if err != nil {
		return r.fail(fmt.Errorf("create the VM: %w (check that /dev/kvm is usable)", err))
	}
	r.guest.Store(g)
	r.shutdown.VM = g
	for i, d := range disks {
		name := blk.DiskName(i)
		dev, err := blk.New(blk.Config{Backend: d.Backend, Size: d.Backend.Size(), ReadOnly: d.ReadOnly, Serial: d.Serial, Name: name, BlockSize: d.BlockSize})
		if err != nil {
			g.abort()
			return r.fail(fmt.Errorf("%s: disk %q: %w", d.VolumeField, d.Name, err))
		}
		if _, err := g.m.AttachVirtio(name, dev); err != nil {
			g.abort()
			return r.fail(err)
		}
	}
	if tap != nil {
		dev, err := virtionet.New(virtionet.Config{Backend: tap, MAC: iface.MAC, OwnBackend: true, Name: "eth0"})
		if err != nil {
			tap.Close()
			g.abort()
			return r.fail(err)
		}
		if _, err := g.m.AttachVirtio("net0", dev); err != nil {
			g.abort()
			return r.fail(err)
		}
		r.board.Update(func(s *control.Status) {
			s.Interfaces = []control.Interface{{Name: iface.Name, MAC: iface.MAC.String(), IP: iface.IP, IPs: nonEmpty(iface.IP)}}
		})
	}
	// KubeVirt attaches virtio-rng only when devices.rng is set. On PVM hosts the compatibility policy hides
	// RDRAND from the guest, whose getrandom() then blocks for minutes (DHCP clients stall), so the launcher
	// supplies the entropy there too.
	if m.RNG || kvm.PVM() {
		if _, err := g.m.AttachVirtio("rng", rng.New()); err != nil {
			g.abort()
			return r.fail(err)
		}
	}
	// startStrategy Paused: the VMM creates the vCPUs parked before their first instruction (cfg.StartPaused),
	// and the status says Running + Paused at once, as KubeVirt's VMI shows Paused=True (PausedByUser).
	exits, err := g.start()
	if err != nil {
		return r.fail(fmt.Errorf("start the VM: %w", err))
	}
	r.board.Update(func(s *control.Status) { s.Phase, s.Paused = control.Running, m.StartPaused })
	r.log.Info("guest started", "vmi", m.Namespace+"/"+m.Name, "vcpus", cfg.CPUs, "sockets", cfg.Sockets,
		"cores", cfg.Cores, "threads", cfg.Threads, "memory", cfg.MemoryBytes, "disks", len(disks), "paused", m.StartPaused)
	if m.StartPaused {
		r.log.Info("guest paused before its first instruction (startStrategy: Paused)", "unpause", unpauseHint(r.o.ControlSocket))
	}
	return r.shutdown.Run(ctx, r.o.Signals, exits)
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// serve starts the control API listeners.
func (r *runner) serve() error {
	r.srv = &control.Server{VM: vmRef{r}, Board: r.board, Shutdown: r.shutdown, Token: r.o.Token, Log: r.log}
	var tcpAddr net.Addr
	if r.o.ControlAddr != "" {
		if r.o.Token == "" {
			return errors.New("control API: no token (the controller mounts it at " + DefaultTokenFile + ")")
		}
		l, err := net.Listen("tcp", r.o.ControlAddr)
		if err != nil {
			return fmt.Errorf("control API: %w", err)
		}
		tcpAddr = l.Addr()
		if a, ok := tcpAddr.(*net.TCPAddr); ok {
			r.ctlPort = a.Port
		}
		r.srvWG.Add(1)
		go func() { defer r.srvWG.Done(); r.srv.Serve(l, false) }()
	}
	if r.o.ControlSocket != "" {
		os.MkdirAll(filepath.Dir(r.o.ControlSocket), 0o700)
		os.Remove(r.o.ControlSocket)
		l, err := net.Listen("unix", r.o.ControlSocket)
		if err != nil {
			return fmt.Errorf("control socket: %w", err)
		}
		os.Chmod(r.o.ControlSocket, 0o600)
		r.srvWG.Add(1)
		go func() { defer r.srvWG.Done(); r.srv.Serve(l, true) }()
	}
	if r.o.Ready != nil {
		r.o.Ready(tcpAddr)
	}
	return nil
}

func (r *runner) cleanup() {
	if r.srv != nil {
		r.srv.Close()
		r.srvWG.Wait()
		if r.o.ControlSocket != "" {
			os.Remove(r.o.ControlSocket)
		}
	}
	r.hub.Close()
	if g := r.guest.Load(); g != nil {
		g.wait()
	}
	for i := len(r.closers) - 1; i >= 0; i-- {
		if err := r.closers[i](); err != nil {
			r.log.Warn("cleanup", "err", err)
		}
	}
}

// reservedPorts are the TCP ports the guest must never receive: the control API's, taken from its real
// listener, so that a non-default --control-addr port (virt-controller --launcher-control-port) is not
// DNATed to the guest, who would then receive the controller's bearer token. Without a TCP listener the
// default port stays reserved, as the controller may still try it.
func (r *runner) reservedPorts() []int {
	if r.ctlPort != 0 {
		return []int{r.ctlPort}
	}
	return []int{control.DefaultPort}
}

// ifaceInfo is what the status reports about the NIC.
type ifaceInfo struct {
	Name string
	MAC  net.HardwareAddr
	IP   string
}

// network plumbs the NIC and attaches to its tap (nil when the VMI has no interface or the mode is none).
func (r *runner) network(m *spec.Machine) (*virtionet.Tap, ifaceInfo, error) {
	if len(m.Interfaces) == 0 || r.o.Network.Kind == "none" {
		if len(m.Interfaces) > 0 {
			r.log.Warn("network mode none: the guest gets no NIC", "interface", m.Interfaces[0].Name)
		}
		return nil, ifaceInfo{}, nil
	}
	in := m.Interfaces[0]
	info := ifaceInfo{Name: in.Name, MAC: in.MAC}
	switch r.o.Network.Kind {
	case "tap":
		tap, err := virtionet.OpenTap(r.o.Network.Name)
		if err != nil {
			return nil, info, err
		}
		if info.MAC == nil {
			info.MAC = randomMAC()
		}
		return tap, info, nil
	case "pod", "netns", "":
		var target ns.NetNS
		var err error
		switch {
		case r.o.Network.Kind == "netns" && r.o.Network.NS != nil:
			target = r.o.Network.NS // owned by the caller
		case r.o.Network.Kind == "netns":
			p := r.o.Network.Name
			if !strings.Contains(p, "/") {
				p = "/run/netns/" + p
			}
			target, err = ns.GetNS(p)
			if err == nil {
				r.closers = append(r.closers, target.Close)
			}
		default:
			target, err = ns.GetCurrentNS()
			if err == nil {
				r.closers = append(r.closers, target.Close)
			}
		}
		if err != nil {
			return nil, info, fmt.Errorf("network namespace: %w", err)
		}
		pn, err := network.Setup(target, network.Config{Binding: in.Binding, MAC: in.MAC, Ports: in.Ports,
			ReservedPorts: r.reservedPorts(), Hostname: m.Hostname, Log: r.log})
		if err != nil {
			return nil, info, fmt.Errorf("spec.domain.devices.interfaces[0] (%s): %w", in.Name, err)
		}
		r.closers = append(r.closers, pn.Close)
		info.MAC, info.IP = pn.GuestMAC, pn.PodIP.IP.String()
		var tap *virtionet.Tap
		err = network.Do(target, func() error { // no setns when target is ours (a pod has no CAP_SYS_ADMIN)
			var err error
			tap, err = virtionet.OpenTap(pn.Tap)
			return err
		})
		return tap, info, err
	default:
		return nil, info, fmt.Errorf("network mode %q: want pod, netns, tap or none", r.o.Network.Kind)
	}
}

// vmmConfig chooses the kernel and builds the VMM configuration.
func (r *runner) vmmConfig(ctx context.Context, m *spec.Machine, disks []spec.PreparedDisk) (vmm.Config, error) {
	cfg := vmm.Config{
		MemoryBytes: m.MemoryBytes, CPUs: m.VCPUs(), Sockets: m.Sockets, Cores: m.Cores, Threads: m.Threads,
		StartPaused: m.StartPaused, CPUPolicy: cpuid.Policy{Disable: m.CPUDisable},
		HugePages: m.HugePages, NoACPI: r.o.NoACPI, Logf: func(f string, a ...any) { r.log.Info(fmt.Sprintf(f, a...)) },
	}
	cfg.SMBIOS.UUID, cfg.SMBIOS.Serial = m.FirmwareUUID, m.FirmwareSerial
	var boot control.Boot
	switch {
	case r.o.Kernel != "":
		cfg.Kernel, cfg.Initrd = r.o.Kernel, r.o.Initrd
		cfg.Cmdline = vmm.DefaultCmdline
		boot = control.Boot{Kernel: control.OverrideKernel, Message: "booted the kernel given with --kernel " + r.o.Kernel}
	case m.Kernel != nil:
		paths := []string{m.Kernel.KernelPath}
		if m.Kernel.InitrdPath != "" {
			paths = append(paths, m.Kernel.InitrdPath)
		}
		if k, i, ok := containerdisk.LocalKernelBoot(r.o.Dirs.ContainerDisks); ok {
			// Pulled by the kubelet and copied by the pod's kernel-boot init container.
			if m.Kernel.InitrdPath != "" && i == "" {
				return cfg, fmt.Errorf("spec.domain.firmware.kernelBoot.container.initrdPath: the pod's kernel-boot init container copied no initrd")
			}
			cfg.Kernel, cfg.Initrd = k, i
		} else {
			files, err := volumesExtract(ctx, m.Kernel.Image, m.Kernel.PullSecret, paths, filepath.Join(r.o.Dirs.Work, ".kernel"), r.o.Dirs)
			if err != nil {
				return cfg, err
			}
			cfg.Kernel, cfg.Initrd = files[m.Kernel.KernelPath], files[m.Kernel.InitrdPath]
		}
		cfg.Cmdline = vmm.DefaultCmdline
		if m.Kernel.Cmdline != "" {
			cfg.Cmdline = m.Kernel.Cmdline
		}
		boot = control.Boot{Kernel: control.KernelBootKernel,
			Message: fmt.Sprintf("booted %s from spec.domain.firmware.kernelBoot image %s", m.Kernel.KernelPath, m.Kernel.Image)}
	default:
		plan, fromDisk, err := r.diskBoot(m, disks, &cfg)
		if err != nil {
			return cfg, err
		}
		boot = control.Boot{Kernel: plan.kernel, Message: plan.message}
		if len(disks) > 0 {
			boot.Disk = disks[min(m.BootDisk, len(disks)-1)].Name
		}
		if fromDisk {
			if plan.kernel == control.PlatformKernel {
				if _, err := os.Stat(cfg.Kernel); err != nil {
					return cfg, fmt.Errorf("kvirt's platform kernel: %w (build it with `just images` or pass --kernel)", err)
				}
			}
			break
		}
		dir := r.o.ImagesDir
		if dir == "" {
			dir = DefaultImagesDir
		}
		cfg.Kernel, cfg.Initrd = filepath.Join(dir, images.Vmlinux), filepath.Join(dir, images.Initramfs)
		cfg.Cmdline = vmm.DefaultCmdline
		for _, f := range []string{cfg.Kernel, cfg.Initrd} {
			if _, err := os.Stat(f); err != nil {
				return cfg, fmt.Errorf("kvirt's guest kernel: %w (build it with `just images` or pass --kernel)", err)
			}
		}
	}
	r.log.Info("kernel chosen", "kernel", boot.Kernel, "disk", boot.Disk, "detail", boot.Message)
	r.board.Update(func(s *control.Status) { b := boot; s.Boot = &b })
	if r.o.Initrd != "" {
		cfg.Initrd = r.o.Initrd
	}
	if r.o.Append != "" {
		cfg.Cmdline = r.o.Append
	}
	marker := r.o.BootMarker
	if marker == "" {
		marker = DefaultBootMarker
	}
	outs := []io.Writer{r.hub, newMarkerWatcher(marker, func() {
		r.log.Info("boot marker seen", "marker", marker)
		r.board.Update(func(s *control.Status) { s.BootMarkerSeen = true })
	})}
	if r.o.Console != nil {
		outs = append(outs, r.o.Console)
	}
	cfg.Console = io.MultiWriter(outs...)
	return cfg, nil
}

// platformKernel is kvirt's own kernel (the built-in guest's, booted without its initramfs).
func (r *runner) platformKernel() string {
	return filepath.Join(cmp.Or(r.o.ImagesDir, DefaultImagesDir), images.Vmlinux)
}

// vmRef lets the control server reach the guest once it exists.
type vmRef struct{ r *runner }

func (v vmRef) g() (*guest, error) {
	g := v.r.guest.Load()
	if g == nil {
		return nil, errors.New("VM is not running")
	}
	return g, nil
}

func (v vmRef) Pause() error {
	g, err := v.g()
	if err != nil {
		return err
	}
	return g.Pause()
}

func (v vmRef) Resume() error {
	g, err := v.g()
	if err != nil {
		return err
	}
	return g.Resume()
}

func (v vmRef) RequestShutdown() error {
	g, err := v.g()
	if err != nil {
		return err
	}
	return g.RequestShutdown()
}

func (v vmRef) Stop() error {
	g, err := v.g()
	if err != nil {
		return err
	}
	return g.Stop()
}

func (v vmRef) Console() (io.ReadCloser, io.Writer, error) {
	g, err := v.g()
	if err != nil {
		return nil, nil, err
	}
	return g.Console()
}

// unpauseHint tells how to run a guest that started paused.
func unpauseHint(socket string) string {
	if socket == "" {
		return "virtctl unpause vmi NAME (in a cluster); locally, run with --control-socket PATH and then: virt-launcher unpause --socket PATH"
	}
	return "virt-launcher unpause --socket " + socket + " (in a cluster: virtctl unpause vmi NAME)"
}
