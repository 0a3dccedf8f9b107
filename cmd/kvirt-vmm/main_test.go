package main

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvirt/kvirt/tests/testenv"
	"github.com/kvirt/kvirt/vmm/bootcmd"
)

// TestExitCodes boots the fast test guest with the built kvirt-vmm binary: the exit code tells poweroff,
// reboot (--on-reboot exit) and crash apart, and the console reaches stdout.
func TestExitCodes(t *testing.T) {
	testenv.RequireKVM(t)
	kernel := testenv.Image(t, "testguest")
	bin := filepath.Join(t.TempDir(), "kvirt-vmm")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		action string
		code   int
	}{{"poweroff", bootcmd.ExitPoweredOff}, {"reboot", bootcmd.ExitRebooted}, {"crash", bootcmd.ExitCrashed}} {
		t.Run(tc.action, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "--kernel", kernel, "--memory", "64Mi", "--append", "testguest="+tc.action, "--on-reboot", "exit")
			out, err := cmd.CombinedOutput()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(string(out), "kvirt-guest: ready") {
				t.Fatalf("exit %d, want %d; output:\n%s", code, tc.code, out)
			}
		})
	}
}

// TestLean keeps kvirt-vmm lean: its start-up time and memory targets depend on linking no Kubernetes,
// launcher or CLI-framework packages (their initialisation and code pages cost milliseconds and MiBs).
func TestLean(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		for _, banned := range []string{"k8s.io/", "sigs.k8s.io/", "github.com/spf13/cobra", "github.com/kvirt/kvirt/launcher",
			"github.com/kvirt/kvirt/api", "github.com/kvirt/kvirt/controller", "net/http", "encoding/json"} {
			if strings.HasPrefix(p, banned) {
				t.Errorf("kvirt-vmm links %s (keep vmm/bootcmd's imports to the VMM and device packages)", p)
			}
		}
	}
}

// TestShutdownTimeout: a guest that ignores the power button (testguest=hang) is stopped
// --shutdown-timeout after SIGTERM (exit 5), instead of keeping the VMM alive for ever.
func TestShutdownTimeout(t *testing.T) {
	testenv.RequireKVM(t)
	kernel := testenv.Image(t, "testguest")
	bin := filepath.Join(t.TempDir(), "kvirt-vmm")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--kernel", kernel, "--memory", "64Mi", "--append", "testguest=hang", "--shutdown-timeout", "1s")
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), "kvirt-guest: ready") {
		if time.Now().After(deadline) {
			t.Fatalf("no ready line within a minute:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != bootcmd.ExitStopped {
		t.Fatalf("after SIGTERM: %v, want exit %d\n%s", err, bootcmd.ExitStopped, out.String())
	}
	if d := time.Since(sent); d < time.Second || d > 30*time.Second {
		t.Errorf("stopped %v after SIGTERM, want about the 1s timeout", d)
	}
	if !strings.Contains(out.String(), "shutdown-timeout") {
		t.Errorf("the stop does not name --shutdown-timeout:\n%s", out.String())
	}
}
