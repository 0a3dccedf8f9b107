package images

import (
	"strings"
	"testing"
)

func TestCmdline(t *testing.T) {
	got := Cmdline(false, " kvirt.test=nproc,poweroff ", "")
	want := BaseCmdline + " " + GoCmdline + " kvirt.test=nproc,poweroff"
	if got != want {
		t.Errorf("Cmdline(false) = %q, want %q", got, want)
	}
	pvm := Cmdline(true)
	if !strings.Contains(pvm, "clearcpuid=") || !strings.HasPrefix(pvm, "console=ttyS0 ") || strings.Contains(pvm, "  ") {
		t.Errorf("Cmdline(true) = %q", pvm)
	}
	// Linux's x86 command line is at most 2048 bytes; leave most of it to callers.
	if len(pvm) > 512 {
		t.Errorf("base command line is %d bytes", len(pvm))
	}
}
