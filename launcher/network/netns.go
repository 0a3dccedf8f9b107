package network

import (
	"errors"
	"fmt"
	"github.com/kvirt/kvirt/launcher/network/podsysctl"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Do runs fn in the network namespace n. When n is the namespace the calling thread is already in (the
// launcher plumbing its own pod), fn runs right there, without setns: setns needs CAP_SYS_ADMIN, which a
// launcher pod does not have (it has NET_ADMIN and NET_RAW). Otherwise it is n.Do.
func Do(n ns.NetNS, fn func() error) error {
	runtime.LockOSThread()
	same, err := isCurrentThreadNS(n)
	if err == nil && same {
		defer runtime.UnlockOSThread()
		return fn()
	}
	runtime.UnlockOSThread()
	return n.Do(func(ns.NetNS) error { return fn() })
}

// IsCurrent reports whether n is the network namespace of this process (/proc/self/ns/net).
func IsCurrent(n ns.NetNS) (bool, error) {
	return sameNS(n, "/proc/self/ns/net")
}

// isCurrentThreadNS compares n with the calling thread's namespace; the thread must be locked.
func isCurrentThreadNS(n ns.NetNS) (bool, error) {
	return sameNS(n, fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
}

func sameNS(n ns.NetNS, path string) (bool, error) {
	var want, got unix.Stat_t
	if err := unix.Fstat(int(n.Fd()), &want); err != nil {
		return false, fmt.Errorf("network namespace %s: %w", n.Path(), err)
	}
	if err := unix.Stat(path, &got); err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return want.Dev == got.Dev && want.Ino == got.Ino, nil
}

// SysctlDir is where the sysctls are (/proc/sys); a variable for tests, as writeSysctl.
var SysctlDir = "/proc/sys"

var writeSysctl = os.WriteFile

// PodSysctls are the sysctls the launcher pod of a masquerade VMI requests (podsysctl.Required).
var PodSysctls = podsysctl.Required

// ErrSysctl is wrapped by the error of ensureSysctl when a sysctl is off and cannot be turned on.
var ErrSysctl = errors.New("sysctl is 0 in the pod's network namespace and cannot be set from inside the pod")

// ensureSysctl makes the sysctl name (as in sysctl(8): net.ipv4.ip_forward) be "1" in the current
// network namespace. It reads it first and writes only when it is not set: in a pod /proc/sys is
// read-only and the pod requests the value instead (podSysctl names that request when it differs).
func ensureSysctl(name, podSysctl string) error {
	path := filepath.Join(SysctlDir, strings.ReplaceAll(name, ".", "/"))
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := writeSysctl(path, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("%s: %w (write %s: %v): the launcher pod must request it with securityContext.sysctls "+
			"[{name: %s, value: \"1\"}] (virt-controller does so for masquerade VMIs) and the node's kubelet must allow it: "+
			"allowedUnsafeSysctls: [\"%s\"] in its KubeletConfiguration (--allowed-unsafe-sysctls)",
			name, ErrSysctl, path, err, podSysctl, podSysctl)
	}
	return nil
}
