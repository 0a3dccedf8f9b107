package vmm

import (
	"fmt"
	"strings"
	"testing"
)

func TestConfigTopology(t *testing.T) {
	for _, c := range []struct {
		cfg             Config
		cpus, s, co, th int
		err             string
	}{
		{Config{}, 1, 1, 1, 1, ""},
		{Config{CPUs: 3}, 3, 1, 3, 1, ""},
		{Config{Sockets: 2}, 2, 2, 1, 1, ""},
		{Config{Cores: 2, Threads: 2}, 4, 1, 2, 2, ""},
		{Config{CPUs: 4, Sockets: 2, Cores: 2}, 4, 2, 2, 1, ""},
		{Config{CPUs: 3, Sockets: 2}, 0, 0, 0, 0, "3 vCPUs requested but the CPU topology 2 socket(s) × 1 core(s) × 1 thread(s) gives 2"},
		{Config{CPUs: 65}, 0, 0, 0, 0, "65 vCPUs out of range 1-64"},
		{Config{Sockets: 8, Cores: 9}, 0, 0, 0, 0, "gives 72 vCPUs, more than the maximum of 64"},
		{Config{Threads: -1}, 0, 0, 0, 0, "negative"},
		{Config{Sockets: 1 << 40}, 0, 0, 0, 0, "more than 255 at one level"},
	} {
		cfg := c.cfg
		err := cfg.normalizeTopology()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%+v: error %v, want %q", c.cfg, err, c.err)
			}
			continue
		}
		if err != nil || cfg.CPUs != c.cpus || cfg.Sockets != c.s || cfg.Cores != c.co || cfg.Threads != c.th {
			t.Errorf("%+v: got cpus %d topology %d/%d/%d (%v), want %d %d/%d/%d", c.cfg, cfg.CPUs, cfg.Sockets, cfg.Cores, cfg.Threads, err, c.cpus, c.s, c.co, c.th)
		}
	}
	cfg := Config{Sockets: 2, Cores: 3}
	if err := cfg.normalizeTopology(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(cfg.apicIDs()); got != "[0 1 2 4 5 6]" {
		t.Fatalf("APIC IDs of 2 sockets × 3 cores: %s", got)
	}
}

// TestLinuxTopology boots the guest kernel with two vCPUs laid out as two sockets and as two cores of one
// socket, and checks /sys/devices/system/cpu/cpuN/topology (package/core) as the guest's kvirt-init
// prints it.
func TestLinuxTopology(t *testing.T) {
	for _, c := range []struct {
		name                   string
		sockets, cores, thread int
		want                   string
	}{
		{"2sockets", 2, 1, 1, "kvirt-guest: topology cpu0=0/0 cpu1=1/0"},
		{"2cores", 1, 2, 1, "kvirt-guest: topology cpu0=0/0 cpu1=0/1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m, con := startLinux(t, 0, "topology,poweroff", func(cfg *Config) {
				cfg.Sockets, cfg.Cores, cfg.Threads = c.sockets, c.cores, c.thread
			})
			con.expect(t, "kvirt-guest: topology", linuxTimeout)
			if !con.waitFor(func(s string) bool {
				return strings.Contains(s, c.want) || strings.Contains(s, "kvirt-guest: poweroff")
			}, linuxTimeout) ||
				!strings.Contains(con.String(), c.want) {
				t.Fatalf("guest topology line is not %q (an error here means the kernel lacks CONFIG_SMP sysfs topology or kvirt-init lacks the topology action: rebuild with `just images`); console:\n%s", c.want, tail(con.String()))
			}
			if o, err := wait(t, m, linuxTimeout); o != PoweredOff || err != nil {
				t.Fatalf("outcome %v (%v), want PoweredOff; console:\n%s", o, err, tail(con.String()))
			}
		})
	}
}
