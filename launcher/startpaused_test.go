package launcher

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/control"
)

// TestLauncherStartPaused: with startStrategy Paused the launcher reports Running + Paused while the guest
// has run no instruction (no console output, no boot marker); pausing again is refused with KubeVirt's
// message, and unpausing boots the guest.
func TestLauncherStartPaused(t *testing.T) {
	r := startLauncher(t, "button", "30", func(o *Options) {
		s := v1.StartStrategyPaused
		o.VMI.Spec.StartStrategy = &s
	})
	st := r.waitStatus(t, "running and paused", func(s control.Status) bool { return s.Phase == control.Running })
	if !st.Paused || st.BootMarkerSeen {
		t.Fatalf("status right after start %+v, want Paused and no boot marker", st)
	}
	// The test guest prints its marker within milliseconds of its first instruction: two seconds of
	// silence show the vCPUs are parked.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if out := r.console.String(); out != "" {
			t.Fatalf("the guest wrote to the console while started paused: %q", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.client.Pause(ctx); err == nil || !strings.Contains(err.Error(), "VMI is already paused") {
		t.Fatalf("pause of a start-paused guest: %v, want \"VMI is already paused\"", err)
	}
	if err := r.client.Unpause(ctx); err != nil {
		t.Fatal(err)
	}
	st = r.waitStatus(t, "boot marker after unpause", func(s control.Status) bool { return s.BootMarkerSeen })
	if st.Paused {
		t.Fatalf("status after unpause %+v", st)
	}
	// The unpaused guest answers the power button.
	if err := r.client.Shutdown(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if o := r.outcome(t); o.Phase != control.Succeeded || o.Reason != "Shutdown" {
		t.Fatalf("outcome %+v; console:\n%s", o, r.console.String())
	}
}
