package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/kvirt/kvirt/images"
	"github.com/kvirt/kvirt/launcher"
	"github.com/kvirt/kvirt/launcher/containerdisk"
	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/launcher/grace"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// escapeByte (Ctrl-]) detaches the local console, as in virtctl console.
const escapeByte = 0x1d

type runFlags struct {
	file                   string
	network                string
	kernel, initrd, append string
	imagesDir              string
	workDir, root          string
	containerDisks         string
	pvcs                   []string
	tokenFile, controlAddr string
	controlSocket          string
	terminationLog         string
	noACPI                 bool
	quiet                  bool
}

// inPod reports whether the launcher runs in a launcher pod (the controller sets POD_NAME).
func inPod() bool { return os.Getenv("POD_NAME") != "" }

func newRunCommand() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run -f VMI.yaml [--network none|pod|tap:NAME|netns:NAME] [--kernel K --initrd I --append S]",
		Short: "Run a VirtualMachineInstance (or a VirtualMachine's template) from a manifest",
		Long: `Run one VirtualMachineInstance from a YAML or JSON manifest on kvirt's VMM. A VirtualMachine manifest runs
its template. A VMI without a kernel boots kvirt's guest kernel (vmlinux + initramfs.cpio) from --images-dir.

Locally (no cluster) the serial console is on this terminal: Ctrl-] detaches it (the VM keeps running; reattach
with 'virt-launcher console --socket SOCKET' when --control-socket is set), Ctrl-C (SIGINT) or SIGTERM shuts the
guest down gracefully within its terminationGracePeriodSeconds, a second one stops it at once.

In a launcher pod (POD_NAME set, as the controller renders it) the defaults follow the pod layout: pod network,
control socket ` + control.DefaultSocket + `, disks under ` + launcher.DefaultWorkDir + `, and the console is
copied to stdout (the pod log).

Persistent disks on a local run: a hostDisk's path is the file on this machine (type DiskOrCreate creates it
at its capacity); a persistentVolumeClaim volume needs --pvc CLAIM=PATH, where PATH is a raw image file, a
block device, or a directory holding disk.img (which must exist: only in a pod is the claim's size known).
The disk's cache mode applies (default none, i.e. O_DIRECT, where the filesystem supports it). With --root
DIR both follow the pod layout under DIR instead (DIR/var/run/kubevirt-private/vmi-disks/<volume>/,
DIR/dev/<volume>).

Exit code: 0 the guest succeeded (powered off), 1 the guest failed (crash, hard stop), 2 the launcher failed
(bad manifest, missing image, /dev/kvm unusable) — the reason is printed on stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runRun(cmd.Context(), f) },
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "file", "f", "", "VirtualMachineInstance or VirtualMachine manifest (YAML or JSON)")
	fl.StringVar(&f.network, "network", "", "guest NIC: none, pod (this network namespace), tap:NAME (existing tap), netns:NAME (/run/netns/NAME or a path); default pod in a launcher pod, else none")
	fl.StringVar(&f.kernel, "kernel", "", "boot this kernel instead of the VMI's (debugging)")
	fl.StringVar(&f.initrd, "initrd", "", "initramfs for --kernel")
	fl.StringVar(&f.append, "append", "", "guest kernel command line (replaces the default)")
	fl.StringVar(&f.imagesDir, "images-dir", "", "directory with kvirt's vmlinux and initramfs.cpio (default "+launcher.DefaultImagesDir+" if present, else $KVIRT_IMAGES_DIR, else build/images of the enclosing repository)")
	fl.StringVar(&f.workDir, "work-dir", "", "where disks are prepared (default "+launcher.DefaultWorkDir+" in a pod, else a temporary directory removed on exit)")
	fl.StringVar(&f.containerDisks, "container-disks-dir", "", "directory where the pod's init containers copied the kubelet-pulled containerDisk volumes (<dir>/<volume>/disk.img; default "+containerdisk.DisksDir+" in a pod, else none: the launcher fetches each image itself)")
	fl.StringVar(&f.root, "root", "", "directory prefixed to the in-pod paths of PVCs and hostDisks (tests of the pod layout; without it a hostDisk's path is used as it is)")
	fl.StringArrayVar(&f.pvcs, "pvc", nil, "CLAIM=PATH: the disk of persistentVolumeClaim CLAIM on this machine: a raw image file, a block device, or a directory holding disk.img (repeatable; local runs)")
	fl.StringVar(&f.tokenFile, "token-file", "", "control API token (required with --control-addr)")
	fl.StringVar(&f.controlAddr, "control-addr", "", "serve the control API on this TCP address (e.g. :8186)")
	fl.StringVar(&f.controlSocket, "control-socket", "", "serve the control API on this Unix socket (default "+control.DefaultSocket+" in a pod, else none)")
	fl.StringVar(&f.terminationLog, "termination-log", "", "write the outcome here (e.g. /dev/termination-log)")
	fl.BoolVar(&f.noACPI, "no-acpi", false, "boot without ACPI tables (debugging; the guest cannot power off)")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "log only warnings and errors")
	return cmd
}

// parseNetwork turns --network into a launcher.NetworkMode.
func parseNetwork(s string, pod bool) (launcher.NetworkMode, error) {
	if s == "" {
		if pod {
			return launcher.NetworkMode{Kind: "pod"}, nil
		}
		return launcher.NetworkMode{Kind: "none"}, nil
	}
	kind, name, hasName := strings.Cut(s, ":")
	switch kind {
	case "none", "pod":
		if hasName {
			return launcher.NetworkMode{}, fmt.Errorf("--network %s takes no name", kind)
		}
		return launcher.NetworkMode{Kind: kind}, nil
	case "tap", "netns":
		if name == "" {
			return launcher.NetworkMode{}, fmt.Errorf("--network %s:NAME needs a name", kind)
		}
		return launcher.NetworkMode{Kind: kind, Name: name}, nil
	}
	return launcher.NetworkMode{}, fmt.Errorf("--network %q: want none, pod, tap:NAME or netns:NAME", s)
}

// findImagesDir picks the directory of kvirt's guest kernel: the launcher image's, $KVIRT_IMAGES_DIR, or
// build/images of the repository enclosing the working directory.
func findImagesDir() string {
	has := func(d string) bool {
		_, err := os.Stat(filepath.Join(d, images.Vmlinux))
		return err == nil
	}
	if has(launcher.DefaultImagesDir) {
		return launcher.DefaultImagesDir
	}
	if d := os.Getenv("KVIRT_IMAGES_DIR"); d != "" {
		return d
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if has(filepath.Join(d, "build", "images")) {
				return filepath.Join(d, "build", "images")
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return launcher.DefaultImagesDir
}

func runRun(ctx context.Context, f runFlags) error {
	// Catch signals first so one sent while disks are prepared is not lost.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if ctx == nil {
		ctx = context.Background()
	}
	if f.file == "" {
		return usage("-f VMI.yaml is required (a VirtualMachineInstance or VirtualMachine manifest)")
	}
	pod := inPod()
	netMode, err := parseNetwork(f.network, pod)
	if err != nil {
		return usage("%v", err)
	}
	if f.initrd != "" && f.kernel == "" {
		return usage("--initrd needs --kernel")
	}
	level := slog.LevelInfo
	if f.quiet {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	vmi, err := launcher.LoadManifestFile(f.file)
	if err != nil {
		return exitError{2, err}
	}
	o := launcher.Options{
		VMI: vmi, Network: netMode, Kernel: f.kernel, Initrd: f.initrd, Append: f.append, NoACPI: f.noACPI,
		ImagesDir: f.imagesDir, ControlAddr: f.controlAddr, ControlSocket: f.controlSocket,
		TerminationLog: f.terminationLog, Signals: sigs, Log: log,
	}
	if o.ImagesDir == "" {
		o.ImagesDir = findImagesDir()
	}
	if f.tokenFile != "" {
		tok, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return exitError{2, fmt.Errorf("--token-file: %w", err)}
		}
		o.Token = strings.TrimSpace(string(tok))
	}
	if o.ControlAddr != "" && o.Token == "" {
		return usage("--control-addr needs --token-file (the control API refuses unauthenticated requests)")
	}
	o.Dirs.Root = f.root
	o.Dirs.Local = !pod && f.root == ""
	if len(f.pvcs) > 0 {
		if !o.Dirs.Local {
			return usage("--pvc is for local runs: in a pod (or with --root) claims are found in the pod layout")
		}
		o.Dirs.PVCs = map[string]string{}
		for _, kv := range f.pvcs {
			name, path, ok := strings.Cut(kv, "=")
			if !ok || name == "" || path == "" {
				return usage("--pvc %q: want CLAIM=PATH", kv)
			}
			if _, dup := o.Dirs.PVCs[name]; dup {
				return usage("--pvc %s given twice", name)
			}
			o.Dirs.PVCs[name] = path
		}
	}
	o.Dirs.Work = f.workDir
	o.Dirs.ContainerDisks = f.containerDisks
	if pod {
		if o.Dirs.ContainerDisks == "" {
			o.Dirs.ContainerDisks = containerdisk.DisksDir
		}
		if o.Dirs.Work == "" {
			o.Dirs.Work = launcher.DefaultWorkDir
		}
		if o.ControlSocket == "" {
			o.ControlSocket = control.DefaultSocket
		}
		// The serial console goes to the pod log too (kubectl logs), input only through the control API.
		o.Console = os.Stdout
	} else {
		if o.Dirs.Work == "" {
			d, err := os.MkdirTemp("", "virt-launcher-")
			if err != nil {
				return exitError{2, err}
			}
			defer os.RemoveAll(d)
			o.Dirs.Work = d
		}
		if vmi.ShouldStartPaused() {
			// startStrategy Paused: the guest waits before its first instruction; the control socket is
			// how a local user unpauses it.
			if o.ControlSocket == "" {
				o.ControlSocket = filepath.Join(o.Dirs.Work, "control.sock")
			}
			fmt.Fprintf(os.Stderr, "virt-launcher: startStrategy is Paused: the guest is created paused before its first instruction; start it with:\n  virt-launcher unpause --socket %s\n", o.ControlSocket)
		}
		det := newLocalConsole(os.Stdin, os.Stdout, o.ControlSocket, log)
		if det.restore != nil {
			defer det.restore()
		}
		o.Console, o.ConsoleInput = det.out(), det.in()
	}
	out := launcher.Run(ctx, o)
	return outcomeErr(out)
}

// outcomeErr maps the launcher's outcome to the process exit.
func outcomeErr(out grace.Outcome) error {
	code := launcher.ExitCode(out)
	if code == 0 {
		return nil
	}
	msg := fmt.Sprintf("VMI %s: %s", out.Phase, out.Reason)
	if out.Message != "" {
		msg += ": " + out.Message
	}
	return exitError{code, fmt.Errorf("%s", msg)}
}

// localConsole connects the guest's serial console to this terminal until Ctrl-] detaches it.
type localConsole struct {
	stdin    *os.File
	stdout   io.Writer
	socket   string
	log      *slog.Logger
	restore  func()
	detached atomic.Bool
	once     sync.Once
}

func newLocalConsole(stdin *os.File, stdout io.Writer, socket string, log *slog.Logger) *localConsole {
	c := &localConsole{stdin: stdin, stdout: stdout, socket: socket, log: log}
	if _, err := unix.IoctlGetTermios(int(stdin.Fd()), unix.TCGETS); err == nil {
		restore, err := rawTerminal(int(stdin.Fd()))
		if err != nil {
			log.Warn("cannot put the terminal in raw mode; console input is line-buffered", "err", err)
		} else {
			c.restore = restore
			fmt.Fprintln(os.Stderr, "virt-launcher: console on this terminal; Ctrl-] detaches, Ctrl-C shuts the guest down")
		}
	}
	return c
}

// in is the guest's console input (nil when stdin is /dev/null).
func (c *localConsole) in() io.Reader {
	if isDevNull(c.stdin) {
		return nil
	}
	return readerFunc(c.read)
}

func (c *localConsole) out() io.Writer { return writerFunc(c.write) }

func (c *localConsole) write(p []byte) (int, error) {
	if c.detached.Load() {
		return len(p), nil
	}
	c.stdout.Write(p)
	return len(p), nil // a closed terminal must not stop the guest
}

func (c *localConsole) read(p []byte) (int, error) {
	if c.detached.Load() {
		return 0, io.EOF
	}
	n, err := c.stdin.Read(p)
	if i := bytes.IndexByte(p[:n], escapeByte); i >= 0 {
		c.detach()
		return i, io.EOF
	}
	return n, err
}

func (c *localConsole) detach() {
	c.once.Do(func() {
		c.detached.Store(true)
		if c.restore != nil {
			c.restore()
		}
		hint := "stop it with Ctrl-C or SIGTERM"
		if c.socket != "" {
			hint += "; reattach with: virt-launcher console --socket " + c.socket
		}
		fmt.Fprintf(os.Stderr, "\r\nvirt-launcher: console detached; the VM keeps running (%s)\n", hint)
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
