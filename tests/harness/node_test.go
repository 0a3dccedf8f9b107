package harness

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestNodeUpDown brings a full single-node cluster up (node Ready, a pod with /dev/kvm and /dev/net/tun
// from the device plugin succeeded) and down, then checks that nothing of it remains.
func TestNodeUpDown(t *testing.T) {
	if testing.Short() {
		t.Skip("full cluster: not in -short mode")
	}
	bin := RequireKubeBinary(t, "")
	if os.Geteuid() != 0 {
		t.Skip("cluster-up needs root")
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		if ClusterRequired() {
			t.Fatal("containerd missing: run .ci/install")
		}
		t.Skip("containerd missing: run .ci/install")
	}
	if l, err := net.Listen("tcp", "127.0.0.1:6443"); err != nil {
		t.Skipf("127.0.0.1:6443 busy (a `just cluster-up` cluster running?): %v", err)
	} else {
		l.Close()
	}
	dir := filepath.Join(t.TempDir(), "cluster")
	var log strings.Builder
	opts := NodeOptions{Dir: dir, Binary: bin, Progress: &log}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("progress:\n%s", log.String())
			for _, f := range []string{"kubelet", "containerd", "kube-apiserver", "kube-controller-manager"} {
				t.Logf("----- %s -----\n%s", f, tailFile(filepath.Join(dir, "run", f+".log"), 30))
			}
		}
		_ = Down(NodeOptions{Dir: dir, Progress: &log})
	})
	sysctls := readSysctls()
	if err := Up(opts); err != nil {
		t.Fatalf("up: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "kubeconfig")); err != nil {
		t.Fatalf("no kubeconfig after up: %v", err)
	}
	t.Setenv("KVIRT_KUBECONFIG", filepath.Join(dir, "kubeconfig"))
	if cfg, path := RunningCluster(t); cfg == nil || path != filepath.Join(dir, "kubeconfig") {
		t.Fatalf("RunningCluster = %v, %q", cfg, path)
	}
	if len(Leftovers(dir)) == 0 {
		t.Fatal("Leftovers finds nothing while the cluster runs: the check cannot fail")
	}
	if err := Down(opts); err != nil {
		t.Fatalf("down: %v", err)
	}
	if left := Leftovers(dir); len(left) > 0 {
		t.Fatalf("left behind:\n%s", strings.Join(left, "\n"))
	}
	for k, v := range readSysctls() {
		if sysctls[k] != v {
			t.Errorf("sysctl %s = %s after down, was %s before up", k, v, sysctls[k])
		}
	}
}

func TestParseMountinfo(t *testing.T) {
	text := `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
31 22 0:27 / /work/a\040b/x rw - overlay overlay rw,lowerdir=/a
bad line
`
	got := parseMountinfo(text)
	if len(got) != 3 {
		t.Fatalf("got %d mounts: %+v", len(got), got)
	}
	if got[1].point != "/sys/fs/cgroup/memory" || got[1].fstype != "cgroup" {
		t.Errorf("mount 1 = %+v", got[1])
	}
	if got[2].point != "/work/a b/x" || got[2].fstype != "overlay" {
		t.Errorf("mount 2 = %+v", got[2])
	}
}

func FuzzParseMountinfo(f *testing.F) {
	f.Add("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n")
	f.Add(`31 22 0:27 / /work/a\040b/x rw - overlay overlay rw` + "\n")
	f.Add(`1 2 3 4 \0 6 7 - 8 9 10`)
	f.Fuzz(func(t *testing.T, text string) {
		for _, m := range parseMountinfo(text) {
			if m.fstype == "" {
				t.Fatalf("mount without a type from %q", text)
			}
		}
	})
}

// The launcher pod of a masquerade VMI asks for net.ipv4.ip_forward and route_localnet (controller/pod.go): the kubelet
// must allow that unsafe sysctl or it rejects the pod (SysctlForbidden).
func TestKubeletConfigAllowsIPForward(t *testing.T) {
	dir := t.TempDir()
	pki, err := NewPKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	path, err := writeKubeletConfig(dir, pki, filepath.Join(dir, "containerd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		AllowedUnsafeSysctls []string `json:"allowedUnsafeSysctls"`
	}
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"net.ipv4.ip_forward", "net.ipv4.conf.default.route_localnet"} {
		if !slices.Contains(cfg.AllowedUnsafeSysctls, want) {
			t.Errorf("allowedUnsafeSysctls = %v, want %s:\n%s", cfg.AllowedUnsafeSysctls, want, b)
		}
	}
}
