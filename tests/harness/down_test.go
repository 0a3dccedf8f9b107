package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startFake runs a copy of /bin/sh named name from dir/bin, with argv[0] its full path (as the cluster
// and the test control planes run bin/kube), starting one sleeping child. It returns the shell's and
// the child's PIDs; both are killed when the test ends.
func startFake(t *testing.T, dir, name string, args ...string) (int, int) {
	t.Helper()
	bin := filepath.Join(dir, "bin", name)
	if _, err := os.Stat(bin); err != nil {
		sh, err := os.ReadFile("/bin/sh")
		if err != nil {
			t.Skipf("no /bin/sh to copy: %v", err)
		}
		if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, sh, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, append([]string{"-c", "sleep 300 & wait", name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, p := range listProcs() {
			if p.ppid == pid && p.exe != name {
				return pid, p.pid
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s (pid %d) started no child within 10s", name, pid)
	return 0, 0
}

// TestOurProcesses: cluster-down takes the recorded components, the shims of its own containerd and
// their descendants, and never a test control plane that runs the same bin/kube (go test ./... runs
// such control planes in parallel with TestNodeUpDown), another containerd's shim or a shell.
func TestOurProcesses(t *testing.T) {
	// The pod cgroups are the same for every cluster: never touch those of a cluster that is running.
	podCgroupProcesses = func() map[int]clusterProc { return nil }
	t.Cleanup(func() { podCgroupProcesses = cgroupProcesses })
	dir := filepath.Join(t.TempDir(), "cluster")
	if err := os.MkdirAll(filepath.Join(dir, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	cpDir := filepath.Join(os.TempDir(), tempDirPrefix+"fake")
	testCP, testCPChild := startFake(t, dir, "kube", "kube-apiserver", "--client-ca-file="+cpDir+"/pki/ca.crt")
	etcd, etcdChild := startFake(t, dir, "kube", "etcd", "--data-dir="+dir+"/etcd")
	if err := os.WriteFile(filepath.Join(dir, "run", "etcd.pid"), []byte(strconv.Itoa(etcd)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lost, _ := startFake(t, dir, "kube", "kubelet", "--root-dir="+dir+"/kubelet") // its pid file is gone
	shim, shimChild := startFake(t, dir, "containerd-shim-runc-v2", "-namespace", "k8s.io", "-address", dir+"/containerd/containerd.sock")
	otherShim, _ := startFake(t, dir, "containerd-shim-runc-v2", "-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock")
	shell, _ := startFake(t, dir, "sh", "vi", dir+"/kubelet/config.yaml")

	got := ourProcesses(dir)
	for _, want := range []struct {
		pid  int
		what string
	}{{etcd, "recorded etcd"}, {etcdChild, "child of the recorded etcd"}, {lost, "kubelet naming dir without a pid file"},
		{shim, "shim of the cluster's containerd"}, {shimChild, "child of that shim"}} {
		if _, ok := got[want.pid]; !ok {
			t.Errorf("%s (pid %d) not found: %v", want.what, want.pid, got)
		}
	}
	for _, not := range []struct {
		pid  int
		what string
	}{{testCP, "test control plane running dir/bin/kube"}, {testCPChild, "child of the test control plane"},
		{otherShim, "shim of another containerd"}, {shell, "shell naming a path under dir"}, {os.Getpid(), "this process"}} {
		if cp, ok := got[not.pid]; ok {
			t.Errorf("%s (pid %d) taken for the cluster's: %s", not.what, not.pid, cp.what)
		}
	}
	if _, ok := ourPID(dir, filepath.Join(dir, "run", "etcd.pid")); !ok {
		t.Errorf("ourPID does not recognise the recorded etcd")
	}
	if err := os.WriteFile(filepath.Join(dir, "run", "kube-apiserver.pid"), []byte(strconv.Itoa(testCP)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := ourPID(dir, filepath.Join(dir, "run", "kube-apiserver.pid")); ok {
		t.Errorf("ourPID takes a test control plane's apiserver (a recycled PID) for the cluster's")
	}
	left := strings.Join(Leftovers(dir), "\n")
	if !strings.Contains(left, "process "+strconv.Itoa(etcdChild)+":") || strings.Contains(left, "process "+strconv.Itoa(testCP)+":") {
		t.Errorf("Leftovers lists the wrong processes:\n%s", left)
	}

	// Stopping the recorded etcd reparents its child: the snapshot taken before still finds it.
	snapshot := ourProcesses(dir)
	stopPID(etcd, 5*time.Second)
	if _, ok := ourProcesses(dir)[etcdChild]; ok {
		t.Fatalf("child %d still found without the snapshot: the snapshot is not what is tested", etcdChild)
	}
	if _, ok := clusterProcesses(dir, snapshot)[etcdChild]; !ok {
		t.Errorf("the reparented child %d of the stopped etcd is lost", etcdChild)
	}
	killStragglers(dir, snapshot, &strings.Builder{})
	if pidAlive(etcdChild) || pidAlive(shimChild) || pidAlive(lost) {
		t.Errorf("killStragglers left a process of the cluster: etcd child %v, shim child %v, kubelet %v",
			pidAlive(etcdChild), pidAlive(shimChild), pidAlive(lost))
	}
	if !pidAlive(testCP) || !pidAlive(testCPChild) || !pidAlive(otherShim) || !pidAlive(shell) {
		t.Errorf("killStragglers stopped a process that is not the cluster's")
	}
}
