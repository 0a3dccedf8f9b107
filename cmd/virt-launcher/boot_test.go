package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvirt/kvirt/vmm/bootcmd"
)

// TestBootCommandFlags: `virt-launcher boot` has bootcmd's flags and maps its usage errors to exit code 2.
func TestBootCommandFlags(t *testing.T) {
	cmd := newBootCommand()
	for _, name := range []string{"kernel", "initrd", "append", "memory", "cpus", "no-acpi", "cpu-disable", "uuid",
		"serial", "on-reboot", "compat", "disk", "tap", "rng", "print-start-timing", "shutdown-timeout"} {
		if cmd.Flags().Lookup(name) == nil {
			t.Errorf("boot has no --%s", name)
		}
	}
	if !strings.Contains(cmd.Long, "Exit codes:") {
		t.Error("boot --help does not document the exit codes")
	}
	cmd.SetArgs([]string{"--kernel", "/nonexistent", "--memory", "lots"})
	err := cmd.Execute()
	if ee, ok := err.(exitError); !ok || ee.code != bootcmd.ExitUsage || !strings.Contains(err.Error(), "--memory") {
		t.Fatalf("bad --memory: %v, want a usage error (exit %d)", err, bootcmd.ExitUsage)
	}
}

// TestBootExitCodes runs the built binary: a missing kernel is a usage error, an unreadable one a VMM error.
func TestBootExitCodes(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "virt-launcher")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"boot"}, bootcmd.ExitUsage},
		{[]string{"boot", "--kernel", "/nonexistent/vmlinux"}, bootcmd.ExitVMMError},
		{[]string{"boot", "--kernel", "k", "--cpus", "0"}, bootcmd.ExitUsage},
	} {
		err := exec.Command(bin, tc.args...).Run()
		if code := exitCodeOf(err); code != tc.code {
			t.Errorf("virt-launcher %s: exit %d, want %d", strings.Join(tc.args, " "), code, tc.code)
		}
	}
}
