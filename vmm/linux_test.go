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

func TestLinuxUUIDAndPowerButton(t *testing.T) {
	t.Parallel()
	const uuid = "6a1c2f3e-0b4d-4c5e-8f70-91a2b3c4d5e6"
	m, con := startLinux(t, 1, "uuid,wait", func(c *Config) { c.SMBIOS = smbios.Info{UUID: uuid, Serial: "kvirt-test"} })
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

func lastTick(s string) (unix int64, n int) {
	all := tickRE.FindAllStringSubmatch(s, -1)
	if len(all) == 0 {
		return 0, 0
	}
	v, _ := strconv.ParseInt(all[len(all)-1][1], 10, 64)
	return v, len(all)
}

func TestLinuxSMPPauseResume(t *testing.T) {
	t.Parallel()
	m, con := startLinux(t, 2, "nproc,ticks", nil)
	con.expect(t, "kvirt-guest: cpus=2", linuxTimeout)
	if !con.expectN("kvirt-guest: tick", 3, linuxTimeout) {
		t.Fatalf("no ticks; console:\n%s", tail(con.String()))
	}
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	before, n := lastTick(con.String())
	time.Sleep(2 * time.Second) // the pause itself is what is measured
	if _, n2 := lastTick(con.String()); n2 != n {
		t.Fatalf("guest ticked while paused (%d -> %d ticks)", n, n2)
	}
	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	if !con.expectN("kvirt-guest: tick", n+2, linuxTimeout) {
		t.Fatalf("guest did not tick after resume; console:\n%s", tail(con.String()))
	}
	after, _ := lastTick(con.String())
	if d := time.Duration(after - before); d < 2*time.Second {
		t.Fatalf("guest clock advanced %v across a 2 s pause, want >= 2s", d)
	}
	if err := m.RequestShutdown(); err != nil {
		t.Fatal(err)
	}
	if o, err := wait(t, m, linuxTimeout); o != PoweredOff || err != nil {
		t.Fatalf("outcome %v (%v), want PoweredOff; console:\n%s", o, err, tail(con.String()))
	}
}
