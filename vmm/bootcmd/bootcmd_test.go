package bootcmd

import (
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/kvirt/kvirt/vmm"
)

func parse(t *testing.T, args ...string) *Flags {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f := AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return f
}

func TestConfig(t *testing.T) {
	cfg, err := parse(t, "--kernel", "k", "--memory", "128Mi", "--cpus", "2", "--cpu-disable", "avx,pcid",
		"--cpu-disable=rdrand", "--on-reboot", "exit", "--compat=off", "--uuid", "u", "--no-acpi", "--pvh").Config()
	if err != nil || cfg.MemoryBytes != 128<<20 || cfg.CPUs != 2 || cfg.OnReboot != vmm.RebootExit ||
		cfg.Compat != vmm.CompatOff || !cfg.NoACPI || !cfg.PVH || cfg.SMBIOS.UUID != "u" ||
		strings.Join(cfg.CPUPolicy.Disable, ",") != "avx,pcid,rdrand" || cfg.Cmdline != vmm.DefaultCmdline {
		t.Fatalf("cfg %+v err %v", cfg, err)
	}
	for _, args := range [][]string{
		{"--memory", "256Mi"}, // no kernel
		{"--kernel", "k", "--memory", "lots"},
		{"--kernel", "k", "--memory", "-1Mi"},
		{"--kernel", "k", "--cpus", "0"},
		{"--kernel", "k", "--on-reboot", "maybe"},
		{"--kernel", "k", "--compat", "xen"},
		{"--kernel", "k", "--cpu-disable", "warp-drive"},
		{"--kernel", "k", "--disk", "/a.img,rw"},
		{"--kernel", "k", "--disk", ""},
		{"--kernel", "k", "--tap", "tap0,mac=nope"},
	} {
		_, err := parse(t, args...).Config()
		var ee ExitError
		if !errors.As(err, &ee) || ee.Code != ExitUsage {
			t.Errorf("%q: err %v, want a usage error", args, err)
		}
	}
	if _, err := parse(t, "--kernel", "k", "--disk", "/a.img", "--disk", "/b.img,ro,serial=B",
		"--tap", "tap0,mac=52:54:00:00:00:01").Config(); err != nil {
		t.Errorf("valid devices: %v", err)
	}
}

func TestExitCodesDistinct(t *testing.T) {
	seen := map[int]vmm.Outcome{}
	for _, o := range []vmm.Outcome{vmm.PoweredOff, vmm.Crashed, vmm.Stopped, vmm.Rebooted, vmm.Error} {
		c := ExitCode(o)
		if p, dup := seen[c]; dup {
			t.Fatalf("%v and %v share exit code %d", o, p, c)
		}
		seen[c] = o
	}
	if ExitCode(vmm.PoweredOff) != 0 || ExitCode(vmm.Error) != ExitVMMError {
		t.Fatal("poweroff must exit 0, a VMM error 4")
	}
}

func TestMainUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"--help"}, 0},
		{[]string{"--no-such-flag"}, ExitUsage},
		{[]string{"--kernel", "k", "extra"}, ExitUsage},
		{[]string{}, ExitUsage},
		{[]string{"--kernel", "/nonexistent/vmlinux"}, ExitVMMError},
	} {
		if code := Main("kvirt-vmm", tc.args); code != tc.code {
			t.Errorf("kvirt-vmm %q: exit %d, want %d", tc.args, code, tc.code)
		}
	}
}
