package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kvirt/kvirt/devices/virtio/virtionet"
)

const noSysAdminEnv = "KVIRT_TEST_NO_SYS_ADMIN"

// TestSetupWithoutSysAdmin plumbs a network namespace the way the launcher does in its pod: from inside it
// (the current namespace), with CAP_NET_ADMIN and NET_RAW but no CAP_SYS_ADMIN, so setns is impossible.
// The test binary runs itself in a new network namespace, drops CAP_SYS_ADMIN from its bounding set and
// execs itself again (root without SYS_ADMIN, as in a pod), then runs Setup for each binding.
func TestSetupWithoutSysAdmin(t *testing.T) {
	switch os.Getenv(noSysAdminEnv) {
	case "drop":
		dropSysAdminAndExec(t)
		return
	case "bridge", "masquerade":
		setupWithoutSysAdmin(t, Binding(os.Getenv(noSysAdminEnv)))
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (a new network namespace)")
	}
	for _, b := range []Binding{Bridge, Masquerade} {
		t.Run(string(b), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSetupWithoutSysAdmin$", "-test.v", "-test.count=1", "-test.timeout=50s")
			cmd.Env = append(os.Environ(), noSysAdminEnv+"=drop", "KVIRT_TEST_BINDING="+string(b))
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s binding without CAP_SYS_ADMIN: %v\n%s", b, err, out)
			}
			if !strings.Contains(string(out), "no-sys-admin: plumbed") {
				t.Fatalf("the child did not run the setup:\n%s", out)
			}
		})
	}
}

func dropSysAdminAndExec(t *testing.T) {
	runtime.LockOSThread() // the bounding set is per thread; execve runs on this one
	if err := unix.Prctl(unix.PR_CAPBSET_DROP, unix.CAP_SYS_ADMIN, 0, 0, 0); err != nil {
		t.Fatalf("drop CAP_SYS_ADMIN from the bounding set: %v", err)
	}
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, noSysAdminEnv+"=") {
			env = append(env, e)
		}
	}
	env = append(env, noSysAdminEnv+"="+os.Getenv("KVIRT_TEST_BINDING"))
	err := syscall.Exec(os.Args[0], []string{os.Args[0], "-test.run=^TestSetupWithoutSysAdmin$", "-test.v", "-test.count=1", "-test.timeout=45s"}, env)
	t.Fatalf("exec %s: %v", os.Args[0], err)
}

// hasCap reports whether capability c is in this process's effective set.
func hasCap(t *testing.T, c int) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n&(1<<c) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}

func setupWithoutSysAdmin(t *testing.T, b Binding) {
	if hasCap(t, unix.CAP_SYS_ADMIN) || !hasCap(t, unix.CAP_NET_ADMIN) {
		t.Fatalf("want NET_ADMIN without SYS_ADMIN: SYS_ADMIN %v, NET_ADMIN %v", hasCap(t, unix.CAP_SYS_ADMIN), hasCap(t, unix.CAP_NET_ADMIN))
	}
	cur, err := ns.GetCurrentNS()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	// The environment is the pod's: setns (what ns.Do does) is refused.
	if err := cur.Do(func(ns.NetNS) error { return nil }); err == nil || !strings.Contains(err.Error(), "operation not permitted") {
		t.Fatalf("setns without CAP_SYS_ADMIN: got %v, want EPERM (the test would not show anything)", err)
	}
	if same, err := IsCurrent(cur); err != nil || !same {
		t.Fatalf("IsCurrent(current namespace) = %v, %v", same, err)
	}
	// The pod interface, as a CNI plugin leaves it.
	lo, _ := netlink.LinkByName("lo")
	must(t, netlink.LinkSetUp(lo))
	must(t, netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1400}, PeerName: "node0"}))
	eth0, err := netlink.LinkByName("eth0")
	must(t, err)
	must(t, netlink.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: podIP, Mask: net.CIDRMask(24, 32)}}))
	must(t, netlink.LinkSetUp(eth0))
	must(t, netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: nodeIP}))
	if b == Masquerade {
		v, _ := os.ReadFile(filepath.Join(SysctlDir, "net/ipv4/ip_forward"))
		t.Logf("ip_forward before: %s", strings.TrimSpace(string(v)))
	}

	pn, err := Setup(cur, Config{Binding: b, ResolvConf: "/nonexistent"})
	if err != nil {
		t.Fatalf("Setup in the current namespace without CAP_SYS_ADMIN: %v", err)
	}
	defer pn.Close()
	var tap *virtionet.Tap
	if err := Do(cur, func() error { // as launcher.go opens the tap
		var err error
		tap, err = virtionet.OpenTap(pn.Tap)
		return err
	}); err != nil {
		t.Fatalf("open %s: %v", pn.Tap, err)
	}
	tap.Close()
	if b == Masquerade {
		for _, s := range []string{"net/ipv4/ip_forward", "net/ipv4/conf/" + BridgeName + "/route_localnet"} {
			if v, _ := os.ReadFile(filepath.Join(SysctlDir, s)); strings.TrimSpace(string(v)) != "1" {
				t.Errorf("%s = %q after Setup, want 1", s, v)
			}
		}
	}
	fmt.Printf("no-sys-admin: plumbed %s binding: tap %s, guest lease %s\n", b, pn.Tap, pn.Lease.IP.String())
}

// In a pod /proc/sys is read-only: a sysctl already 1 (requested by the pod) is not written; one that is 0
// fails with an error naming the sysctl, the pod request and the kubelet setting.
func TestEnsureSysctlReadOnly(t *testing.T) {
	dir := t.TempDir()
	oldDir, oldWrite := SysctlDir, writeSysctl
	SysctlDir = dir
	t.Cleanup(func() { SysctlDir, writeSysctl = oldDir, oldWrite })
	readOnly := func(path string, _ []byte, _ os.FileMode) error {
		return &os.PathError{Op: "open", Path: path, Err: unix.EROFS}
	}
	writeSysctl = readOnly
	p := filepath.Join(dir, "net", "ipv4", "ip_forward")
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))

	must(t, os.WriteFile(p, []byte("1\n"), 0o644))
	if err := ensureSysctl("net.ipv4.ip_forward", "net.ipv4.ip_forward"); err != nil {
		t.Fatalf("ip_forward already 1 on a read-only /proc/sys: %v", err)
	}

	must(t, os.WriteFile(p, []byte("0\n"), 0o644))
	err := ensureSysctl("net.ipv4.ip_forward", "net.ipv4.ip_forward")
	if !errors.Is(err, ErrSysctl) {
		t.Fatalf("ip_forward 0 on a read-only /proc/sys: got %v, want ErrSysctl", err)
	}
	for _, want := range []string{"net.ipv4.ip_forward", "securityContext.sysctls", `allowedUnsafeSysctls: ["net.ipv4.ip_forward"]`, "read-only file system"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	rl := filepath.Join(dir, "net", "ipv4", "conf", BridgeName, "route_localnet")
	must(t, os.MkdirAll(filepath.Dir(rl), 0o755))
	must(t, os.WriteFile(rl, []byte("0\n"), 0o644))
	err = ensureSysctl("net.ipv4.conf."+BridgeName+".route_localnet", "net.ipv4.conf.default.route_localnet")
	if err == nil || !strings.Contains(err.Error(), `[{name: net.ipv4.conf.default.route_localnet, value: "1"}]`) {
		t.Errorf("route_localnet error does not name the pod sysctl to request: %v", err)
	}

	writeSysctl = os.WriteFile
	if err := ensureSysctl("net.ipv4.ip_forward", "net.ipv4.ip_forward"); err != nil {
		t.Fatalf("writable ip_forward: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "1" {
		t.Errorf("ip_forward = %q after ensureSysctl, want 1", b)
	}
	if err := ensureSysctl("net.ipv4.missing", "net.ipv4.missing"); err == nil {
		t.Error("missing sysctl: no error")
	}
}
