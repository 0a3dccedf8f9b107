package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
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
// files, then the cluster's programs whose arguments name the directory, their descendants and the
// members of the pod cgroups; never a test control plane that merely runs bin/kube, see ourProcesses), pod sandboxes (through
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
	// The cluster's processes and their descendants, before stopping a component reparents its children.
	snapshot := ourProcesses(dir)
	stop := func(names ...string) {
		for _, n := range names {
			if pid, ok := ourPID(dir, filepath.Join(run, n+".pid")); ok {
				fmt.Fprintf(opts.Progress, "[cluster-down]   stopping %s (pid %d)\n", n, pid)
				stopPID(pid, 15*time.Second)
			}
		}
	}

	s.step("stopping kube-scheduler, kube-controller-manager, the volume provisioner and kubelet")
	stop("kube-scheduler", "kube-controller-manager", provisionerName, "kubelet")

	s.step("removing pod sandboxes through CRI, then stopping containerd")
	sock := filepath.Join(dir, "containerd", "containerd.sock")
	if _, ok := ourPID(dir, filepath.Join(run, "containerd.pid")); ok {
		if err := removeSandboxes(sock); err != nil {
			fmt.Fprintf(opts.Progress, "[cluster-down]   warning: %v (continuing: processes and mounts are removed below)\n", err)
		}
	}
	stop("containerd")

	s.step("stopping kube-apiserver and etcd, then any process left (shims, containers)")
	stop(serviceProxyName, "kube-apiserver", "etcd")
	killStragglers(dir, snapshot, opts.Progress)

	s.step("unmounting everything under %s, detaching the volumes' loop devices", dir)
	unmountUnder(dir)
	for _, l := range detachLoops(dir) {
		fmt.Fprintf(opts.Progress, "[cluster-down]   warning: %s\n", l)
	}

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
var clusterExecutables = map[string]bool{"kube": true, "containerd": true, "containerd-shim-runc-v2": true, "runc": true, serviceProxyName: true, provisionerName: true}

// procInfo is one process of /proc.
type procInfo struct {
	pid, ppid int
	start     uint64   // start time in clock ticks since boot: with pid, identifies the process
	exe       string   // base name of the executable
	argv      []string // command line
}

// readProc reads /proc/pid; ok is false for a process that is gone or a zombie.
func readProc(pid int) (procInfo, bool) {
	p := procInfo{pid: pid}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return p, false
	}
	f := strings.Fields(s[i+1:]) // state ppid pgrp ... ; starttime is field 22 of stat, f[19]
	if len(f) < 20 || f[0] == "Z" {
		return p, false
	}
	p.ppid, _ = strconv.Atoi(f[1])
	p.start, _ = strconv.ParseUint(f[19], 10, 64)
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	p.exe = filepath.Base(strings.TrimSuffix(exe, " (deleted)"))
	c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if len(c) > 0 {
		p.argv = strings.Split(strings.TrimRight(string(c), "\x00"), "\x00")
	}
	return p, true
}

func listProcs() map[int]procInfo {
	out := map[int]procInfo{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			out[pid] = p
		}
	}
	return out
}

func (p procInfo) cmdline() string { return strings.Join(p.argv, " ") }

// argsName reports whether an argument after argv[0] names a path under dir. argv[0] does not count:
// the kube binary lives in build/cluster/bin, and the test control planes of other packages run it too.
func (p procInfo) argsName(dir string) bool {
	for i, a := range p.argv {
		if i > 0 && strings.Contains(a, dir+"/") {
			return true
		}
	}
	return false
}

// testControlPlane reports whether p belongs to a control plane of Start (tests): its arguments name
// that control plane's temporary directory. cluster-down never touches one.
func (p procInfo) testControlPlane() bool {
	prefix := filepath.Join(os.TempDir(), tempDirPrefix)
	for i, a := range p.argv {
		if i > 0 && strings.Contains(a, prefix) {
			return true
		}
	}
	return false
}

// clusterProc is a process of the cluster: why it is one, and its start time so that a recycled PID is
// never taken for it.
type clusterProc struct {
	what  string
	start uint64
}

// ourProcesses lists the live processes (other than this one) of the cluster in dir:
//   - the components recorded in run/*.pid (still the same program: its arguments name dir);
//   - the cluster's programs (kube, containerd, its shims, runc) whose arguments name dir: a component
//     whose pid file is lost, a shim of the cluster's own containerd (-address dir/containerd/...);
//   - every descendant of those.
//
// A process whose only mention of dir is its executable (a test control plane running
// build/cluster/bin/kube with its own temporary directory), a shell or an editor is not one. The
// processes inside the pod cgroups are listed by cgroupProcesses.
func ourProcesses(dir string) map[int]clusterProc {
	procs := listProcs()
	out := map[int]clusterProc{}
	add := func(p procInfo, what string) {
		if p.pid == os.Getpid() || p.testControlPlane() {
			return
		}
		if _, ok := out[p.pid]; !ok {
			out[p.pid] = clusterProc{what: what, start: p.start}
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "run", "*.pid"))
	for _, f := range files {
		if pid, ok := ourPID(dir, f); ok {
			if p, ok := procs[pid]; ok {
				add(p, fmt.Sprintf("%s (%s): %s", strings.TrimSuffix(filepath.Base(f), ".pid"), filepath.Base(f), p.cmdline()))
			}
		}
	}
	for _, p := range procs {
		if clusterExecutables[p.exe] && p.argsName(dir) {
			add(p, p.cmdline())
		}
	}
	children := map[int][]int{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	var queue []int
	for pid := range out {
		queue = append(queue, pid)
	}
	for len(queue) > 0 {
		parent := queue[0]
		queue = queue[1:]
		for _, c := range children[parent] {
			if _, seen := out[c]; !seen {
				add(procs[c], fmt.Sprintf("child of %d: %s", parent, procs[c].cmdline()))
				if _, added := out[c]; added {
					queue = append(queue, c)
				}
			}
		}
	}
	return out
}

// podCgroupProcesses is cgroupProcesses; tests replace it so as not to touch the pod cgroups of a
// cluster that is running (their names are fixed: one cluster at a time on a machine).
var podCgroupProcesses = cgroupProcesses

// cgroupProcesses lists the processes inside the pod cgroups.
func cgroupProcesses() map[int]clusterProc {
	out := map[int]clusterProc{}
	hs, _ := cgroupHierarchies()
	for _, h := range hs {
		_ = filepath.WalkDir(filepath.Join(h, CgroupRoot), func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				pid, err := strconv.Atoi(f)
				if err != nil {
					continue
				}
				if pi, ok := readProc(pid); ok {
					out[pid] = clusterProc{what: "in cgroup " + p + ": " + pi.cmdline(), start: pi.start}
				}
			}
			return nil
		})
	}
	return out
}

// clusterProcesses is ourProcesses, the pod cgroups' members, and the members of an earlier snapshot
// still alive as the same process (descendants of a component stopped since, now reparented).
func clusterProcesses(dir string, snapshot map[int]clusterProc) map[int]clusterProc {
	procs := ourProcesses(dir)
	for pid, cp := range podCgroupProcesses() {
		procs[pid] = cp
	}
	for pid, cp := range snapshot {
		if _, ok := procs[pid]; ok {
			continue
		}
		if p, ok := readProc(pid); ok && p.start == cp.start {
			procs[pid] = cp
		}
	}
	return procs
}

// killStragglers stops every process of the cluster still running; snapshot is ourProcesses taken
// before the components were stopped.
func killStragglers(dir string, snapshot map[int]clusterProc, progress interface{ Write([]byte) (int, error) }) {
	for round := 0; round < 3; round++ {
		procs := clusterProcesses(dir, snapshot)
		if len(procs) == 0 {
			return
		}
		for pid, cp := range procs {
			if round == 0 {
				fmt.Fprintf(progress, "[cluster-down]   stopping leftover pid %d: %.120s\n", pid, cp.what)
			}
			if p, ok := readProc(pid); ok && p.start == cp.start {
				stopPID(pid, 5*time.Second)
			}
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
// bridge, the service range's local route and CNI results. Empty means clean.
func Leftovers(dir string) []string {
	if d, err := filepath.Abs(dir); err == nil {
		dir = d
	}
	var out []string
	for pid, cp := range clusterProcesses(dir, nil) {
		out = append(out, fmt.Sprintf("process %d: %.120s", pid, cp.what))
	}
	for _, m := range mountsUnder(dir) {
		out = append(out, "mount "+m)
	}
	for _, l := range loopsUnder(dir) {
		out = append(out, "loop device "+l)
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
	if _, svc, err := net.ParseCIDR(ServiceCIDR); err == nil {
		routes, _ := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_LOCAL, Dst: svc}, netlink.RT_FILTER_TABLE|netlink.RT_FILTER_DST)
		for _, r := range routes {
			out = append(out, "route "+r.String())
		}
	}
	sort.Strings(out)
	return out
}
