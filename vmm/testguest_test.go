package vmm

import (
	"context"
	"testing"
	"time"

	"github.com/kvirt/kvirt/tests/testenv"
)

func startTestGuest(t *testing.T, action string, mod func(*Config)) (*Machine, *console) {
	t.Helper()
	testenv.RequireKVM(t)
	kernel := testenv.Image(t, "testguest")
	con := newConsole(t)
	cfg := Config{Kernel: kernel, Cmdline: "testguest=" + action, MemoryBytes: 64 << 20, Console: con, Logf: t.Logf}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := m.Wait(ctx); err == context.DeadlineExceeded {
			t.Errorf("machine did not stop within 30 s")
		}
	})
	return m, con
}

func wait(t *testing.T, m *Machine, timeout time.Duration) (Outcome, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	o, err := m.Wait(ctx)
	if err == context.DeadlineExceeded {
		t.Fatalf("machine still running after %v", timeout)
	}
	return o, err
}

const testGuestTimeout = 60 * time.Second

func TestTestGuestPowerOff(t *testing.T) {
	t.Parallel()
	m, con := startTestGuest(t, "poweroff", nil)
	con.expect(t, "kvirt-guest: ready", testGuestTimeout)
	o, err := wait(t, m, testGuestTimeout)
	if o != PoweredOff || err != nil {
		t.Fatalf("outcome %v (%v), want PoweredOff; console:\n%s", o, err, tail(con.String()))
	}
}

func TestTestGuestReboot(t *testing.T) {
	t.Parallel()
	m, con := startTestGuest(t, "reboot", nil)
	if !con.expectN("kvirt-guest: ready", 2, testGuestTimeout) {
		t.Fatalf("guest did not come up twice; console:\n%s", tail(con.String()))
	}
	if m.Reboots() < 1 {
		t.Fatalf("reboots = %d", m.Reboots())
	}
	m.Stop()
	if o, err := wait(t, m, testGuestTimeout); o != Stopped || err != nil {
		t.Fatalf("outcome %v (%v), want Stopped", o, err)
	}
}

func TestTestGuestRebootExit(t *testing.T) {
	t.Parallel()
	m, con := startTestGuest(t, "reboot", func(c *Config) { c.OnReboot = RebootExit })
	if o, err := wait(t, m, testGuestTimeout); o != Rebooted || err != nil {
		t.Fatalf("outcome %v (%v), want Rebooted; console:\n%s", o, err, tail(con.String()))
	}
}

func TestTestGuestCrash(t *testing.T) {
	t.Parallel()
	m, con := startTestGuest(t, "crash", nil)
	o, err := wait(t, m, testGuestTimeout)
	if o != Crashed || err == nil {
		t.Fatalf("outcome %v (%v), want Crashed with registers; console:\n%s", o, err, tail(con.String()))
	}
	t.Logf("crash report: %v", err)
}

func TestTestGuestHangStop(t *testing.T) {
	t.Parallel()
	m, con := startTestGuest(t, "hang", nil)
	con.expect(t, "kvirt-testguest: hang", testGuestTimeout)
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	if o, err := wait(t, m, 10*time.Second); o != Stopped || err != nil {
		t.Fatalf("outcome %v (%v), want Stopped", o, err)
	}
}

func TestTestGuestPowerButton(t *testing.T) {
	t.Parallel()
	m, con := startTestGuest(t, "button", nil)
	con.expect(t, "kvirt-testguest: button", testGuestTimeout)
	if err := m.RequestShutdown(); err != nil {
		t.Fatal(err)
	}
	if o, err := wait(t, m, testGuestTimeout); o != PoweredOff || err != nil {
		t.Fatalf("outcome %v (%v), want PoweredOff; console:\n%s", o, err, tail(con.String()))
	}
}
