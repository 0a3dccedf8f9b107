package vmm

import (
	"testing"
	"time"
)

// TestTestGuestStartPaused: a machine started paused runs no guest instruction (no console output) until
// Resume, then boots normally.
func TestTestGuestStartPaused(t *testing.T) {
	t.Parallel()
	m, con := startTestGuest(t, "poweroff", func(c *Config) { c.StartPaused = true })
	if !m.Paused() {
		t.Fatal("Paused() is false right after a paused start")
	}
	// The test guest prints its marker within milliseconds of its first instruction; two seconds of
	// silence show the vCPUs never ran.
	if con.waitFor(func(s string) bool { return s != "" }, 2*time.Second) {
		t.Fatalf("guest wrote to the console while started paused:\n%s", tail(con.String()))
	}
	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	con.expect(t, "kvirt-guest: ready", testGuestTimeout)
	if o, err := wait(t, m, testGuestTimeout); o != PoweredOff || err != nil {
		t.Fatalf("outcome %v (%v), want PoweredOff; console:\n%s", o, err, tail(con.String()))
	}
}
