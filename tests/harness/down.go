package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Down stops the cluster in opts.Dir and removes everything it left: processes (by PID, from the pid
// files, then any process still naming the directory or inside the pod cgroups), pod sandboxes (through
// CRI, so the CNI plugins release addresses), mounts under the directory, the pod cgroups, the bridge,
// CNI state, and the global directories Up created. The binary, the kubeconfig's directory and caches
// stay. It returns an error listing whatever could not be removed.
func Down(opts NodeOptions) error {
	if err := opts.defaults(); err != nil {
		return err
	}
	dir := opts.Dir
	s := &stepper{w: opts.Progress, name: "cluster-down", of: 6}
	if os.Geteuid() != 0 {
		return errors.New("cluster-down needs root")
	}
	run := filepath.Join(dir, "run")
	stop := func(names ...string) {
		for _, n := range names {
			if pid, ok := ourPID(dir, filepath.Join(run, n+".pid")); ok {
				fmt.Fprintf(opts.Progress, "[cluster-down]   stopping %s (pid %d)\n", n, pid)
				stopPID(pid, 15*time.Second)
			}
		}
	}

	s.step("stopping kube-scheduler, kube-controller-manager and kubelet")
	stop("kube-scheduler", "kube-controller-manager", "kubelet")

	s.step("removing pod sandboxes through CRI, then stopping containerd")
	sock := filepath.Join(dir, "containerd", "containerd.sock")
	if _, ok := ourPID(dir, filepath.Join(run, "containerd.pid")); ok {
		if err := removeSandboxes(sock); err != nil {
			fmt.Fprintf(opts.Progress, "[cluster-down]   warning: %v (continuing: processes and mounts are removed below)\n", err)
		}
	}
	stop("containerd")

	s.step("stopping kube-apiserver and etcd, then any process left (shims, containers)")
	stop("kube-apiserver", "etcd")
	killStragglers(dir, opts.Progress)

	s.step("unmounting everything under %s", dir)
	unmountUnder(dir)

	s.step("removing cgroups %s, bridge %s and CNI state", CgroupRoot, BridgeName)
	removeCgroups(opts.Progress)
	if l, err := netlink.LinkByName(BridgeName); err == nil {
		_ = netlink.LinkDel(l)
	}
	results, _ := filepath.Glob("/var/lib/cni/results/" + CNINetworkName + "-*")
	for _, r := range results {
		os.Remove(r)
	}

	s.step("removing state under %s (bin/ stays)", dir)
	var st nodeState
	if b, err := os.ReadFile(filepath.Join(dir, "state.json")); err == nil {
		_ = json.Unmarshal(b, &st)
	}
	// The kubelet's device-plugin directory is fixed; remove what the cluster put there.
	plugins, _ := filepath.Glob("/var/lib/kubelet/device-plugins/*")
	for _, p := range plugins {
		os.RemoveAll(p)
	}
	for _, p := range st.Created {
		os.RemoveAll(p)
	}
	restoreSysctls(st.Sysctls, opts.Progress)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != "bin" {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	if left := Leftovers(dir); len(left) > 0 {
		return fmt.Errorf("left behind after cluster-down:\n  %s", strings.Join(left, "\n  "))
	}
	fmt.Fprintf(opts.Progress, "[cluster-down] done: no process, mount, cgroup, netns or bridge of the cluster remains\n")
	return nil
}

func removeSandboxes(sock string) error {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("CRI connect %s: %w", sock, err)
	}
	defer conn.Close()
	rt := cri.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := rt.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("CRI ListPodSandbox: %w", err)
	}
	var errs []error
	for _, sb := range resp.Items {
		if _, err := rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stop sandbox %s (%s/%s): %w", sb.Id[:12], sb.Metadata.GetNamespace(), sb.Metadata.GetName(), err))
			continue
		}
		if _, err := rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("remove sandbox %s: %w", sb.Id[:12], err))
		}
	}
	return errors.Join(errs...)
}

// clusterExecutables are the programs a cluster runs outside the pod cgroups.
var clusterExecutables = map[string]bool{"kube": true, "containerd": true, "containerd-shim-runc-v2": true, "runc": true}

// ourProcesses lists live processes (other than this one) of the cluster's programs whose command line
// names dir: the components and containerd's shims (-address dir/containerd/...). A shell or an editor
// that merely mentions a path under dir is not one.
func ourProcesses(dir string) map[int]string {
	out := map[int]string{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() || !pidAlive(pid) {
			continue
		}
		exe, err := os.Readlink("/proc/" + p.Name() + "/exe")
		if err != nil || !clusterExecutables[filepath.Base(strings.TrimSuffix(exe, " (deleted)"))] {
			continue
		}
		b, err := os.ReadFile("/proc/" + p.Name() + "/cmdline")
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
		if strings.Contains(cmdline, dir+"/") {
			out[pid] = cmdline
		}
	}
	return out
}

// cgroupProcesses lists the processes inside the pod cgroups.
func cgroupProcesses() map[int]string {
	out := map[int]string{}
	hs, _ := cgroupHierarchies()
	for _, h := range hs {
		_ = filepath.WalkDir(filepath.Join(h, CgroupRoot), func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pidAlive(pid) {
					out[pid] = "in cgroup " + p
				}
			}
			return nil
		})
	}
	return out
}

func killStragglers(dir string, progress interface{ Write([]byte) (int, error) }) {
	for round := 0; round < 3; round++ {
		procs := ourProcesses(dir)
		for pid, what := range cgroupProcesses() {
			procs[pid] = what
		}
		if len(procs) == 0 {
			return
		}
		for pid, what := range procs {
			if round == 0 {
				fmt.Fprintf(progress, "[cluster-down]   stopping leftover pid %d: %.120s\n", pid, what)
			}
			stopPID(pid, 5*time.Second)
		}
	}
}

type mount struct{ point, fstype string }

// parseMountinfo returns the mount points and filesystem types of /proc/self/mountinfo text.
func parseMountinfo(text string) []mount {
	var out []mount
	for _, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) < 10 {
			continue
		}
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(f) {
			continue
		}
		out = append(out, mount{point: unescapeMount(f[4]), fstype: f[sep+1]})
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for a space) of mountinfo paths.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range parseMountinfo(string(b)) {
		if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
			out = append(out, m.point)
		}
	}
	return out
}

func unmountUnder(dir string) {
	for round := 0; round < 5; round++ {
		ms := mountsUnder(dir)
		if len(ms) == 0 {
			return
		}
		sort.Slice(ms, func(i, j int) bool { return len(ms[i]) > len(ms[j]) })
		for _, m := range ms {
			_ = unix.Unmount(m, unix.MNT_DETACH)
		}
	}
}

func removeCgroups(progress interface{ Write([]byte) (int, error) }) {
	hs, _ := cgroupHierarchies()
	for _, h := range hs {
		root := filepath.Join(h, CgroupRoot)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			var err error
			for i := 0; i < 50; i++ {
				if err = syscall.Rmdir(d); err == nil || errors.Is(err, syscall.ENOENT) {
					break
				}
				time.Sleep(100 * time.Millisecond) // a just-killed process may still be leaving
			}
			if err != nil && !errors.Is(err, syscall.ENOENT) {
				fmt.Fprintf(progress, "[cluster-down]   warning: rmdir %s: %v\n", d, err)
			}
		}
	}
}

// Leftovers lists what a cluster in dir left on this machine: processes naming dir or inside the pod
// cgroups, mounts under dir (overlay root filesystems, network namespaces, volumes), pod cgroups, the
// bridge and CNI results. Empty means clean.
func Leftovers(dir string) []string {
	if d, err := filepath.Abs(dir); err == nil {
		dir = d
	}
	var out []string
	procs := ourProcesses(dir)
	for pid, what := range cgroupProcesses() {
		procs[pid] = what
	}
	for pid, what := range procs {
		out = append(out, fmt.Sprintf("process %d: %.120s", pid, what))
	}
	for _, m := range mountsUnder(dir) {
		out = append(out, "mount "+m)
	}
	hs, _ := cgroupHierarchies()
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h, CgroupRoot)); err == nil {
			out = append(out, "cgroup "+filepath.Join(h, CgroupRoot))
		}
	}
	if _, err := netlink.LinkByName(BridgeName); err == nil {
		out = append(out, "network interface "+BridgeName)
	}
	results, _ := filepath.Glob("/var/lib/cni/results/" + CNINetworkName + "-*")
	for _, r := range results {
		out = append(out, "CNI result "+r)
	}
	sort.Strings(out)
	return out
}
