package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvirt/kvirt/images"
	"github.com/kvirt/kvirt/launcher/grace"
	"github.com/kvirt/kvirt/tests/testenv"
	"github.com/kvirt/kvirt/vmm"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// launcherBinary builds virt-launcher once per test process (the commands are tested as users run them).
func launcherBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "virt-launcher-test-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "virt-launcher")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

const testGuestVMI = `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: tg, namespace: default}
spec:
  terminationGracePeriodSeconds: 20
  domain:
    resources: {requests: {memory: 64Mi}}
    devices:
      autoattachPodInterface: false
      disks: [{name: scratch}]
  volumes:
  - {name: scratch, emptyDisk: {capacity: 1Mi}}
`

func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func exitCodeOf(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestRunTestGuestPowersOff(t *testing.T) {
	testenv.RequireKVM(t)
	kernel := testenv.Image(t, images.TestGuest)
	bin := launcherBinary(t)
	vmi := writeFile(t, "vmi.yaml", testGuestVMI)
	term := filepath.Join(t.TempDir(), "termination-log")
	cmd := exec.Command(bin, "run", "-f", vmi, "--kernel", kernel, "--append", "testguest=poweroff", "--termination-log", term)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if code := exitCodeOf(err); code != 0 {
		t.Fatalf("exit %d (%v), want 0\nstdout:\n%s\nstderr:\n%s", code, err, stdout.String(), stderr.String())
	}
	for _, want := range []string{"kvirt-guest: ready", "kvirt-testguest: poweroff"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("console (stdout) lacks %q:\n%s", want, stdout.String())
		}
	}
	b, _ := os.ReadFile(term)
	if m, err := grace.ReadTerminationMessage(string(b)); err != nil || m.Phase != "Succeeded" {
		t.Errorf("termination message %q: %+v %v", b, m, err)
	}
}

func TestRunTestGuestCrashExitsOne(t *testing.T) {
	testenv.RequireKVM(t)
	kernel := testenv.Image(t, images.TestGuest)
	bin := launcherBinary(t)
	vmi := writeFile(t, "vmi.yaml", testGuestVMI)
	cmd := exec.Command(bin, "run", "-f", vmi, "-q", "--kernel", kernel, "--append", "testguest=crash")
	out, err := cmd.CombinedOutput()
	if code := exitCodeOf(err); code != 1 {
		t.Fatalf("exit %d (%v), want 1 (guest failed)\n%s", code, err, out)
	}
	if !strings.Contains(string(out), "virt-launcher: VMI Failed") {
		t.Errorf("stderr does not state the failure:\n%s", out)
	}
}

// A VirtualMachine manifest runs its template; pause, unpause and console go through the control socket as
// virtctl's exec does; Ctrl-C (SIGINT) shuts the guest down gracefully (power button) and exits 0.
func TestRunVMPauseUnpauseConsoleSIGINT(t *testing.T) {
	testenv.RequireKVM(t)
	kernel := testenv.Image(t, images.TestGuest)
	bin := launcherBinary(t)
	vm := writeFile(t, "vm.yaml", `apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: tgvm}
spec:
  running: true
  template:
    spec:
      terminationGracePeriodSeconds: 20
      domain:
        resources: {requests: {memory: 64Mi}}
        devices: {autoattachPodInterface: false}
`)
	sock := filepath.Join(t.TempDir(), "launcher.sock")
	cmd := exec.Command(bin, "run", "-f", vm, "--kernel", kernel, "--append", "testguest=button", "--control-socket", sock)
	stdout, stderr := &testenv.SyncBuffer{}, &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() { err := cmd.Wait(); close(exited); done <- err }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	diag := func() string { return "stdout:\n" + stdout.String() + "\nstderr:\n" + stderr.String() }
	testenv.Eventually(t, "boot marker on the console", 60*time.Second, func() (bool, string) {
		return strings.Contains(stdout.String(), "kvirt-guest: ready"), diag()
	})
	sub := func(verb string, stdin string) (string, string, int) {
		c := exec.Command(bin, verb, "--socket", sock)
		c.Stdin = strings.NewReader(stdin)
		var o, e bytes.Buffer
		c.Stdout, c.Stderr = &o, &e
		err := c.Run()
		return o.String(), e.String(), exitCodeOf(err)
	}
	if _, e, code := sub("pause", ""); code != 0 {
		t.Fatalf("pause: exit %d: %s", code, e)
	}
	if _, e, code := sub("pause", ""); code != 1 || !strings.Contains(e, "already paused") || strings.Contains(e, "virt-launcher:") {
		t.Errorf("second pause: exit %d stderr %q, want 1 with KubeVirt's reason only", code, e)
	}
	if _, e, code := sub("unpause", ""); code != 0 {
		t.Fatalf("unpause: exit %d: %s", code, e)
	}
	if _, e, code := sub("console", ""); code != 0 {
		t.Errorf("console with empty stdin: exit %d: %s", code, e)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if code := exitCodeOf(err); code != 0 {
			t.Fatalf("after SIGINT: exit %d (%v), want 0\n%s", code, err, diag())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("launcher did not end within 60s of SIGINT\n%s", diag())
	}
	if !strings.Contains(stdout.String(), "kvirt-testguest: power button") {
		t.Errorf("the guest never saw the power button\n%s", diag())
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
}

func TestRunBadInput(t *testing.T) {
	bin := launcherBinary(t)
	for _, tc := range []struct {
		name     string
		args     []string
		manifest string
		code     int
		want     string
	}{
		{"no file", []string{"run"}, "", 2, "-f VMI.yaml is required"},
		{"bad network", []string{"run", "--network", "wifi"}, testGuestVMI, 2, "--network"},
		{"unknown field", []string{"run"}, strings.Replace(testGuestVMI, "domain:", "domain:\n    warpDrive: true", 1), 2, "warpDrive"},
		{"wrong kind", []string{"run"}, "kind: Pod\n", 2, "want VirtualMachineInstance or VirtualMachine"},
		{"missing kernel", []string{"run", "--kernel", "/nonexistent/vmlinux"}, testGuestVMI, 2, "LauncherFailed"},
		{"unknown verb", []string{"reboot"}, "", 2, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.manifest != "" {
				args = append(args, "-f", writeFile(t, "vmi.yaml", tc.manifest))
			}
			out, err := exec.Command(bin, args...).CombinedOutput()
			if code := exitCodeOf(err); code != tc.code || !strings.Contains(string(out), tc.want) {
				t.Fatalf("exit %d output %q, want exit %d mentioning %q", code, out, tc.code, tc.want)
			}
		})
	}
}

func TestParseNetwork(t *testing.T) {
	for in, want := range map[string]string{"": "none", "none": "none", "pod": "pod", "tap:tap0": "tap/tap0", "netns:/run/netns/x": "netns//run/netns/x"} {
		m, err := parseNetwork(in, false)
		got := m.Kind
		if m.Name != "" {
			got += "/" + m.Name
		}
		if err != nil || got != want {
			t.Errorf("parseNetwork(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if m, _ := parseNetwork("", true); m.Kind != "pod" {
		t.Errorf("default in a pod: %q, want pod", m.Kind)
	}
	for _, bad := range []string{"tap", "tap:", "netns:", "pod:x", "bridge:br0", "wifi"} {
		if _, err := parseNetwork(bad, false); err == nil {
			t.Errorf("parseNetwork(%q): no error", bad)
		}
	}
}

// runLinux runs `virt-launcher run -f` on a Linux VMI with kvirt's kernel from build/images (found by the
// default search) and the kvirt.test actions; it returns stdout (the console) and the diagnostics.
func runLinux(t *testing.T, vmiYAML, cmdline string, args ...string) (string, func() string) {
	t.Helper()
	testenv.RequireKVM(t)
	testenv.Image(t, images.Vmlinux)
	testenv.Image(t, images.Initramfs)
	if testing.Short() {
		t.Skip("boots a Linux guest (minutes on PVM hosts); skipped with -short")
	}
	bin := launcherBinary(t)
	vmi := writeFile(t, "vmi.yaml", vmiYAML)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"run", "-f", vmi, "-q", "--append", vmm.DefaultCmdline + " " + cmdline}, args...)...)
	cmd.Dir = testenv.ImagesDir(t) // the default kernel search finds build/images from inside it
	stdout, stderr := &testenv.SyncBuffer{}, &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	diag := func() string { return "stdout:\n" + stdout.String() + "\nstderr:\n" + stderr.String() }
	var err error
	for waiting := true; waiting; {
		select {
		case err = <-done:
			waiting = false
		case <-time.After(200 * time.Millisecond):
			// Without ACPI tables the guest sees no virtio device and cannot power off: stop at once.
			if strings.Contains(stdout.String(), "ACPI: Unable to load the System Description Tables") {
				cmd.Process.Kill()
				<-done
				t.Fatalf("the guest kernel rejected the VMM's ACPI tables (vmm/acpi), so it sees no disk and cannot power off\n%s", diag())
			}
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("the Linux guest did not power off within 6 minutes\n%s", diag())
	}
	if code := exitCodeOf(err); code != 0 {
		t.Fatalf("exit %d (%v), want 0\n%s", code, err, diag())
	}
	return stdout.String(), diag
}
