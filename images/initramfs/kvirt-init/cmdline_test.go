package main

import (
	"net"
	"reflect"
	"strings"
	"testing"
)

func TestSplitCmdline(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  string
	}{
		{in: "", want: nil},
		{in: "console=ttyS0 quiet\n", want: []string{"console=ttyS0", "quiet"}},
		{in: "  a   b\t c ", want: []string{"a", "b", "c"}},
		{in: `kvirt.test="sh:uname -a,poweroff" quiet`, want: []string{"kvirt.test=sh:uname -a,poweroff", "quiet"}},
		{in: `"a b"c d`, want: []string{"a bc", "d"}},
		{in: `x=""`, want: []string{"x="}},
		{in: `kvirt.test="sh:echo`, err: "unbalanced"},
		{in: strings.Repeat("a", maxCmdline+1), err: "more than"},
	} {
		got, err := splitCmdline(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("splitCmdline(%.40q) error = %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitCmdline(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseCmdline(t *testing.T) {
	base := "console=ttyS0 reboot=k panic=-1 GODEBUG=cpu.avx=off,cpu.avx2=off "
	for _, tc := range []struct {
		in   string
		want config
		err  string
	}{
		{
			in:   base,
			want: config{Disk: "/dev/vda", Iface: "eth0"},
		},
		{
			in: base + "kvirt.test=nproc,uuid,poweroff",
			want: config{Disk: "/dev/vda", Iface: "eth0", Actions: []action{
				{Name: "nproc"}, {Name: "uuid"}, {Name: "poweroff"}}},
		},
		{
			in: base + `kvirt.test=disk,net,wait kvirt.write=hello-42 kvirt.disk=/dev/vdb kvirt.iface=eth1`,
			want: config{Disk: "/dev/vdb", Iface: "eth1", Write: "hello-42", Actions: []action{
				{Name: "disk"}, {Name: "net"}, {Name: "wait"}}},
		},
		{
			in: base + `kvirt.test="sh:uname -a,echo:hi there,sleep:1s,ticks"`,
			want: config{Disk: "/dev/vda", Iface: "eth0", Actions: []action{
				{Name: "sh", Arg: "uname -a"}, {Name: "echo", Arg: "hi there"}, {Name: "sleep", Arg: "1s"}, {Name: "ticks"}}},
		},
		{
			// The last kvirt.test wins, as for kernel parameters.
			in: "kvirt.test=reboot kvirt.test=crash",
			want: config{Disk: "/dev/vda", Iface: "eth0", Actions: []action{
				{Name: "crash"}}},
		},
		{in: "kvirt.test=", err: "empty action list"},
		{in: "kvirt.test=nproc,,poweroff", err: `unknown action ""`},
		{in: "kvirt.test=fly", err: `unknown action "fly"`},
		{in: "kvirt.test=sh", err: `needs an argument`},
		{in: "kvirt.test=sh:", err: `needs an argument`},
		{in: "kvirt.test=nproc:3", err: `takes no argument`},
		{in: "kvirt.disk=vda", err: "want a /dev/ path"},
		{in: "kvirt.iface=a/b", err: "not an interface name"},
		{in: "kvirt.iface=", err: "not an interface name"},
	} {
		got, err := parseCmdline(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseCmdline(%q) error = %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseCmdline(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestActionString(t *testing.T) {
	if s := (action{Name: "sh", Arg: "ls /"}).String(); s != "sh:ls /" {
		t.Errorf("String() = %q", s)
	}
	if s := (action{Name: "nproc"}).String(); s != "nproc" {
		t.Errorf("String() = %q", s)
	}
}

func TestCountCPUs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		err  bool
	}{
		{in: "0\n", want: 1},
		{in: "0-1\n", want: 2},
		{in: "0-3,5,7-8", want: 7},
		{in: "", err: true},
		{in: "a", err: true},
		{in: "3-1", err: true},
		{in: "0-", err: true},
		{in: "0,,1", err: true},
		{in: "0-99999", err: true},
	} {
		got, err := countCPUs(tc.in)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("countCPUs(%q) = %d, %v; want %d (error: %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestDefaultGateway(t *testing.T) {
	const routes = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n" +
		"eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
	gw, err := defaultGateway(routes, "eth0")
	if err != nil || !gw.Equal(net.IPv4(10, 0, 2, 1)) {
		t.Errorf("defaultGateway = %v, %v; want 10.0.2.1", gw, err)
	}
	if _, err := defaultGateway(routes, "eth1"); err == nil || !strings.Contains(err.Error(), "no default route via eth1") {
		t.Errorf("defaultGateway(eth1) error = %v", err)
	}
	if _, err := defaultGateway("Iface\n"+"eth0\t00000000\tZZ\n", "eth0"); err == nil {
		t.Errorf("defaultGateway accepted a bad gateway")
	}
	if _, err := defaultGateway("", "eth0"); err == nil {
		t.Errorf("defaultGateway accepted an empty table")
	}
}

// FuzzParseCmdline: any command line gives a config or an error, never a panic, and accepted actions are
// always known ones with well-formed arguments.
func FuzzParseCmdline(f *testing.F) {
	for _, s := range []string{
		"console=ttyS0 kvirt.test=nproc,uuid,poweroff",
		`kvirt.test="sh:uname -a,poweroff" kvirt.write=x`,
		`kvirt.test="unterminated`,
		"kvirt.disk=/dev/vdb kvirt.iface=eth1 kvirt.test=disk,net",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := parseCmdline(s)
		if err != nil {
			return
		}
		for _, a := range cfg.Actions {
			takesArg, known := knownActions[a.Name]
			if !known || takesArg != (a.Arg != "") {
				t.Fatalf("parseCmdline(%q) accepted bad action %+v", s, a)
			}
		}
		if !strings.HasPrefix(cfg.Disk, "/dev/") || cfg.Iface == "" {
			t.Fatalf("parseCmdline(%q) gave disk %q iface %q", s, cfg.Disk, cfg.Iface)
		}
	})
}

// FuzzCountCPUs: never panics; a success is at least one CPU.
func FuzzCountCPUs(f *testing.F) {
	for _, s := range []string{"0", "0-1", "0-3,5,7-8", "9-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := countCPUs(s); err == nil && n < 1 {
			t.Fatalf("countCPUs(%q) = %d without error", s, n)
		}
	})
}

// FuzzDefaultGateway: arbitrary /proc/net/route text never panics.
func FuzzDefaultGateway(f *testing.F) {
	f.Add("Iface\tDestination\tGateway\neth0\t00000000\t0102000A\n", "eth0")
	f.Fuzz(func(t *testing.T, table, iface string) {
		if gw, err := defaultGateway(table, iface); err == nil && gw.To4() == nil {
			t.Fatalf("defaultGateway gave non-IPv4 %v", gw)
		}
	})
}

// The unknown-action error lists every action, including those registered by other files.
func TestUnknownActionListsAll(t *testing.T) {
	_, err := parseActions("fly")
	if err == nil {
		t.Fatal("fly accepted")
	}
	for name, takesArg := range knownActions {
		want := name
		if takesArg {
			want += ":ARG"
		}
		if !strings.Contains(err.Error(), " "+want) {
			t.Errorf("error %q does not list %s", err, want)
		}
	}
}
