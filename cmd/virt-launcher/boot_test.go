package main

import (
	"errors"
	"testing"

	"github.com/kvirt/kvirt/vmm"
)

func TestBuildConfig(t *testing.T) {
	base := bootFlags{kernel: "k", memory: "128Mi", cpus: 2, onReboot: "reset", compat: "auto"}
	cfg, err := buildConfig(base)
	if err != nil || cfg.MemoryBytes != 128<<20 || cfg.CPUs != 2 || cfg.OnReboot != vmm.RebootReset {
		t.Fatalf("cfg %+v err %v", cfg, err)
	}
	for _, mod := range []func(*bootFlags){
		func(f *bootFlags) { f.memory = "lots" },
		func(f *bootFlags) { f.memory = "-1Mi" },
		func(f *bootFlags) { f.cpus = 0 },
		func(f *bootFlags) { f.onReboot = "maybe" },
		func(f *bootFlags) { f.compat = "xen" },
		func(f *bootFlags) { f.disable = []string{"warp-drive"} },
	} {
		f := base
		mod(&f)
		_, err := buildConfig(f)
		var ee exitError
		if !errors.As(err, &ee) || ee.code != ExitUsage {
			t.Errorf("flags %+v: err %v, want a usage error", f, err)
		}
	}
}

func TestExitCodesDistinct(t *testing.T) {
	seen := map[int]vmm.Outcome{}
	for _, o := range []vmm.Outcome{vmm.PoweredOff, vmm.Crashed, vmm.Stopped, vmm.Rebooted, vmm.Error} {
		c := exitCode(o)
		if p, dup := seen[c]; dup {
			t.Fatalf("%v and %v share exit code %d", o, p, c)
		}
		seen[c] = o
	}
	if exitCode(vmm.PoweredOff) != 0 {
		t.Fatal("poweroff must exit 0")
	}
}
