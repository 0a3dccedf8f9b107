package vmm

import (
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/kvirt/kvirt/tests/testenv"
	"github.com/kvirt/kvirt/vmm/smbios"
)

// Linux boots are interpreted on PVM hosts: ~40 s alone, ~2 min with two at once on a 2-core host, more when
// other packages boot guests too.
const linuxTimeout = 6 * time.Minute

func startLinux(t *testing.T, cpus int, tests string, mod func(*Config)) (*Machine, *console) {
	t.Helper()
	testenv.RequireKVM(t)
	kernel, initrd := testenv.Image(t, "vmlinux"), testenv.Image(t, "initramfs.cpio")
	con := newConsole(t)
	cfg := Config{Kernel: kernel, Initrd: initrd, Cmdline: DefaultCmdline + " kvirt.test=" + tests,
		MemoryBytes: 256 << 20, CPUs: cpus, Console: con, Logf: t.Logf}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Stop()
		if _, err := wait(t, m, 30*time.Second); err != nil && err.Error() == "" {
			t.Log(err)
		}
	})
	con.expect(t, "kvirt-guest: ready", linuxTimeout)
	t.Logf("guest ready after %v", time.Since(start).Round(time.Millisecond))
	return m, con
}

func TestLinuxPowerOff(t *testing.T) {
	t.Parallel()
	m, con := startLinux(t, 1, "nproc,poweroff", nil)
	con.expect(t, "kvirt-guest: cpus=1", linuxTimeout)
	if o, err := wait(t, m, linuxTimeout); o != PoweredOff || err != nil {
		t.Fatalf("outcome %v (%v), want PoweredOff; console:\n%s", o, err, tail(con.String()))
	}
}

// TestLinuxUUIDAndPowerButton boots through the PVH entry (the other Linux tests use the 64-bit one): the guest
// must find the initramfs, the SMBIOS UUID and the ACPI power button from hvm_start_info alone.
func TestLinuxUUIDAndPowerButton(t *testing.T) {
	t.Parallel()
	const uuid = "6a1c2f3e-0b4d-4c5e-8f70-91a2b3c4d5e6"
	m, con := startLinux(t, 1, "uuid,wait", func(c *Config) {
		c.SMBIOS = smbios.Info{UUID: uuid, Serial: "kvirt-test"}
		c.PVH = true
	})
	con.expect(t, "kvirt-guest: uuid="+uuid, linuxTimeout)
	con.expect(t, "waiting for the power button", linuxTimeout)
	if err := m.RequestShutdown(); err != nil {
		t.Fatal(err)
	}
	con.expect(t, "kvirt-guest: power button", linuxTimeout)
	if o, err := wait(t, m, linuxTimeout); o != PoweredOff || err != nil {
		t.Fatalf("outcome %v (%v), want PoweredOff; console:\n%s", o, err, tail(con.String()))
	}
}

var tickRE = regexp.MustCompile(`kvirt-guest: tick (\d+) (-?\d+)`)

func ticks(s string) []int64 {
	var out []int64
	for _, m := range tickRE.FindAllStringSubmatch(s, -1) {
		v, _ := strconv.ParseInt(m[1], 10, 64)
		out = append(out, v)
	}
	return out
}

// pauseSeen reports whether two consecutive ticks are at least d apart and another tick followed them
// (the guest kept running after the pause). The guest's tty buffers a few lines, so the gap can show up a
// couple of ticks after the last one printed before the pause.
func pauseSeen(s string, d time.Duration) bool {
	ts := ticks(s)
	for i := 1; i+1 < len(ts); i++ {
		if time.Duration(ts[i]-ts[i-1]) >= d {
			return true
		}
	}
	return false
}

func TestLinuxSMPPauseResume(t *testing.T) {
	t.Parallel()
	m, con := startLinux(t, 2, "nproc,ticks", nil)
	con.expect(t, "kvirt-guest: cpus=2", linuxTimeout)
	if !con.expectN("kvirt-guest: tick", 3, linuxTimeout) {
		t.Fatalf("no ticks; console:\n%s", tail(con.String()))
	}
	if pauseSeen(con.String(), 2*time.Second) {
		t.Fatalf("ticks 2 s apart before any pause; console:\n%s", tail(con.String()))
	}
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	n := len(ticks(con.String()))
	time.Sleep(2 * time.Second) // the pause itself is what is measured
	if n2 := len(ticks(con.String())); n2 != n {
		t.Fatalf("guest ticked while paused (%d -> %d ticks)", n, n2)
	}
	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	if !con.waitFor(func(s string) bool { return pauseSeen(s, 2*time.Second) }, linuxTimeout) {
		t.Fatalf("guest clock did not show the 2 s pause, or the guest stopped ticking after resume; console:\n%s", tail(con.String()))
	}
	if err := m.RequestShutdown(); err != nil {
		t.Fatal(err)
	}
	if o, err := wait(t, m, linuxTimeout); o != PoweredOff || err != nil {
		t.Fatalf("outcome %v (%v), want PoweredOff; console:\n%s", o, err, tail(con.String()))
	}
}
