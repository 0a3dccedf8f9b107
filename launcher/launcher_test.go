package launcher

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/images"
	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/launcher/grace"
	"github.com/kvirt/kvirt/launcher/spec"
	"github.com/kvirt/kvirt/tests/testenv"
)

const testVMI = `
metadata: {name: lt, namespace: default, uid: 3b9f1c5e-8a44-4c1e-9a57-0d2b6f1e7a11}
spec:
  terminationGracePeriodSeconds: %GRACE%
  domain:
    resources: {requests: {memory: 64Mi}}
    firmware: {serial: kvirt-serial-1}
    devices:
      autoattachPodInterface: false
      disks: [{name: scratch}]
  volumes:
  - {name: scratch, emptyDisk: {capacity: 1Mi}}
`

type lrun struct {
	tcpAddr net.Addr
	sock    string
	client  *control.Client
	sigs    chan os.Signal
	out     chan grace.Outcome
	console *testenv.SyncBuffer
	term    string
}

// startLauncher runs the launcher on the freestanding test guest with testguest=<action>.
func startLauncher(t *testing.T, action string, graceSeconds string, mods ...func(*Options)) *lrun {
	t.Helper()
	testenv.RequireKVM(t)
	kernel := testenv.Image(t, images.TestGuest)
	var vmi v1.VirtualMachineInstance
	if err := yaml.UnmarshalStrict([]byte(strings.ReplaceAll(testVMI, "%GRACE%", graceSeconds)), &vmi); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := &lrun{sock: filepath.Join(dir, "launcher.sock"), sigs: make(chan os.Signal, 2), out: make(chan grace.Outcome, 1),
		console: &testenv.SyncBuffer{}, term: filepath.Join(dir, "termination-log")}
	ready := make(chan net.Addr, 1)
	opts := Options{
		VMI: &vmi, Dirs: spec.Dirs{Work: filepath.Join(dir, "work"), Root: dir},
		Kernel: kernel, Append: "testguest=" + action, Network: NetworkMode{Kind: "none"},
		ControlSocket: r.sock, TerminationLog: r.term, Console: r.console, Signals: r.sigs,
		Ready: func(a net.Addr) { ready <- a }, Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	for _, m := range mods {
		m(&opts)
	}
	go func() { r.out <- Run(context.Background(), opts) }()
	select {
	case r.tcpAddr = <-ready:
	case o := <-r.out:
		t.Fatalf("launcher ended before serving: %+v", o)
	case <-time.After(30 * time.Second):
		t.Fatal("control socket not ready within 30s")
	}
	r.client = control.NewUnixClient(r.sock)
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitStatus watches until cond holds (60 s deadline).
func (r *lrun) waitStatus(t *testing.T, what string, cond func(control.Status) bool) control.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var got control.Status
	found := false
	err := r.client.Watch(ctx, func(s control.Status) {
		got = s
		if cond(s) && !found {
			found = true
			cancel()
		}
	})
	if !found {
		t.Fatalf("%s: not within 60s (last status %+v, watch: %v); console:\n%s", what, got, err, r.console.String())
	}
	return got
}

func (r *lrun) outcome(t *testing.T) grace.Outcome {
	t.Helper()
	select {
	case o := <-r.out:
		return o
	case <-time.After(60 * time.Second):
		t.Fatalf("launcher did not end within 60s; console:\n%s", r.console.String())
		return grace.Outcome{}
	}
}

func TestLauncherPauseConsoleShutdown(t *testing.T) {
	r := startLauncher(t, "button", "30")
	r.waitStatus(t, "boot marker", func(s control.Status) bool { return s.Phase == control.Running && s.BootMarkerSeen })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.client.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	con, err := r.client.Console(ctx) // attach while paused
	if err != nil {
		t.Fatal(err)
	}
	defer con.Close()
	if st, _ := r.client.Status(ctx); !st.Paused {
		t.Fatalf("status %+v, want paused", st)
	}
	if err := r.client.Unpause(ctx); err != nil {
		t.Fatal(err)
	}
	// Graceful shutdown: the guest waits for the power button and powers off.
	if err := r.client.Shutdown(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(con) // the console ends with the guest
	if !strings.Contains(string(got), "kvirt-testguest: power button") {
		t.Errorf("console attached while paused saw %q", got)
	}
	o := r.outcome(t)
	if o.Phase != control.Succeeded || o.Reason != "Shutdown" || o.ExitCode != 0 {
		t.Fatalf("outcome %+v; console:\n%s", o, r.console.String())
	}
	b, _ := os.ReadFile(r.term)
	if m, err := grace.ReadTerminationMessage(string(b)); err != nil || m.Phase != control.Succeeded {
		t.Fatalf("termination message %q: %v", b, err)
	}
}

// The controller's path: TCP with the per-VMI token.
func TestLauncherControlTCP(t *testing.T) {
	r := startLauncher(t, "button", "30", func(o *Options) { o.ControlAddr, o.Token = "127.0.0.1:0", "vmi-secret" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := control.NewClient(r.tcpAddr.String(), "wrong").Status(ctx); err == nil {
		t.Fatal("wrong token accepted")
	}
	c := control.NewClient(r.tcpAddr.String(), "vmi-secret")
	seen := false
	werr := make(chan error, 1)
	wctx, wcancel := context.WithCancel(ctx)
	go func() {
		werr <- c.Watch(wctx, func(s control.Status) {
			if s.BootMarkerSeen && !seen {
				seen = true
				wcancel()
			}
		})
	}()
	if err := <-werr; !seen {
		t.Fatalf("no boot marker over TCP: %v", err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if o := r.outcome(t); o.Phase != control.Succeeded || o.Reason != "Destroyed" {
		t.Fatalf("outcome after a stop request %+v", o)
	}
}

func TestLauncherSIGTERMHardStopAtDeadline(t *testing.T) {
	r := startLauncher(t, "hang", "2")
	r.waitStatus(t, "boot marker", func(s control.Status) bool { return s.BootMarkerSeen })
	start := time.Now()
	r.sigs <- syscall.SIGTERM
	o := r.outcome(t)
	if o.Phase != control.Failed || o.Reason != "Destroyed" || o.ExitCode != 1 {
		t.Fatalf("outcome %+v", o)
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Fatalf("stopped after %v, before the 2s grace period", d)
	}
}

func TestLauncherCrash(t *testing.T) {
	r := startLauncher(t, "crash", "30")
	o := r.outcome(t)
	if o.Phase != control.Failed || o.Reason != "Crashed" || o.ExitCode != 1 {
		t.Fatalf("outcome %+v", o)
	}
}

func TestLauncherBadInput(t *testing.T) {
	var vmi v1.VirtualMachineInstance
	if err := yaml.UnmarshalStrict([]byte(`
metadata: {name: bad, uid: 3b9f1c5e-8a44-4c1e-9a57-0d2b6f1e7a11}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices:
      disks: [{name: root, disk: {bus: sata}}]
  volumes: [{name: root, containerDisk: {image: /nonexistent/image.tar}}]
`), &vmi); err != nil {
		t.Fatal(err)
	}
	term := filepath.Join(t.TempDir(), "termination-log")
	o := Run(context.Background(), Options{VMI: &vmi, Dirs: spec.Dirs{Work: t.TempDir()}, TerminationLog: term, Network: NetworkMode{Kind: "none"}})
	if o.ExitCode != 2 || o.Reason != "LauncherFailed" || !strings.Contains(o.Message, "spec.domain.devices.disks[0].disk.bus") {
		t.Fatalf("outcome %+v", o)
	}
	b, _ := os.ReadFile(term)
	if !strings.Contains(string(b), "LauncherFailed") {
		t.Fatalf("termination message %q", b)
	}
}

func TestMarkerWatcher(t *testing.T) {
	n := 0
	w := newMarkerWatcher("kvirt-guest: ready", func() { n++ })
	for _, s := range []string{"boot...\nkvirt-gu", "est: re", "ady\n", "kvirt-guest: ready\n"} {
		w.Write([]byte(s))
	}
	if n != 1 {
		t.Fatalf("found %d times", n)
	}
}
