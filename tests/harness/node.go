package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kvirt/kvirt/images/oci"
	"github.com/kvirt/kvirt/launcher/network"
	"github.com/kvirt/kvirt/tests/testenv"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// A full single-node cluster (`just cluster-up`) lives under one directory, by default build/cluster:
//
//	kubeconfig               admin kubeconfig
//	bin/kube                 the multi-call Kubernetes binary (`just cluster-build`)
//	pki/                     CA, certificates, service-account keys
//	run/<component>.pid|log  one per process (etcd, kube-apiserver, ..., containerd, kubelet)
//	etcd/ containerd/ kubelet/ cni/ images/   component state
//	state.json               what Up created outside the directory, for Down to remove
//
// Everything listens on 127.0.0.1, except the service proxy (serviceproxy.go), which serves ClusterIPs
// (a local route for 10.96.0.0/16 on the bridge) and the apiserver for pods on the bridge address. Pod cgroups live under /sys/fs/cgroup/<controller>/kvirt-cluster,
// pod network namespaces under containerd/state/io.containerd.grpc.v1.cri/netns. The pod bridge is
// kvirt0 with 10.244.0.1/24 on the host side, so host processes (the kubelet's probes, the service
// proxy, tests) reach pod IPs; pods get no default route and no masquerade (only a route to the
// service range via the host), so their traffic stays on this machine. Pods reach the API as in any
// cluster, through the `kubernetes` Service (10.96.0.1:443); there is no kube-proxy and no DNS.
const (
	NodeName       = "127.0.0.1"
	APIServerPort  = 6443
	PauseImage     = "kvirt.io/pause:v1"
	CgroupRoot     = "kvirt-cluster"
	BridgeName     = "kvirt0"
	CNINetworkName = "kvirt"
	PodSubnet      = "10.244.0.0/24"
	// BridgeAddress is the host's address on the pod bridge: processes on the host reach pod IPs
	// through it, and pods reach the service range (the service proxy) via it. Pods get no default
	// route, so their traffic cannot leave this machine.
	BridgeAddress  = "10.244.0.1"
	etcdClientPort = 2379
	etcdPeerPort   = 2380
)

// Paths outside the cluster directory that the kubelet, containerd or the CNI plugins create whatever
// their configuration says. Down removes the ones that did not exist before Up.
var globalPaths = []string{"/var/lib/kubelet", "/var/lib/cni", "/run/containerd", "/var/log/containers", "/var/log/pods"}

// NodeOptions configures Up and Down.
type NodeOptions struct {
	// Dir is the cluster directory; default build/cluster in the repository.
	Dir string
	// Binary is the multi-call kube binary; default Dir/bin/kube (see KubeBinary).
	Binary string
	// Images are extra image tarballs (docker-save or OCI layout) to import into containerd.
	Images []string
	// Progress receives one line per step; default os.Stdout.
	Progress io.Writer
	// Timeout bounds the bring-up from containerd's start to the test pod's success; default 5 min.
	Timeout time.Duration
}

type nodeState struct {
	Created []string `json:"created"` // global paths Up created
	// Sysctls holds the values of the kernel settings the kubelet changes at start (it always sets
	// vm.overcommit_memory, kernel.panic, kernel.panic_on_oops, ...), for Down to restore.
	Sysctls map[string]string `json:"sysctls,omitempty"`
}

// kubeletSysctls are the settings kubelet's setupKernelTunables writes (pkg/kubelet/cm).
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

func readSysctls() map[string]string {
	out := map[string]string{}
	for _, k := range kubeletSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			out[k] = strings.TrimSpace(string(b))
		}
	}
	return out
}

// restoreSysctls writes back saved values that differ from the current ones.
func restoreSysctls(saved map[string]string, progress io.Writer) {
	now := readSysctls()
	for k, v := range saved {
		if now[k] == v {
			continue
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			fmt.Fprintf(progress, "[cluster-down]   warning: restore %s=%s: %v\n", k, v, err)
			continue
		}
		fmt.Fprintf(progress, "[cluster-down]   restored %s=%s (kubelet had set %s)\n", strings.ReplaceAll(k, "/", "."), v, now[k])
	}
}

func (o *NodeOptions) defaults() error {
	if o.Dir == "" {
		root, err := repoRoot()
		if err != nil {
			return err
		}
		o.Dir = filepath.Join(root, "build", "cluster")
	}
	d, err := filepath.Abs(o.Dir)
	if err != nil {
		return err
	}
	o.Dir = d
	if o.Binary == "" {
		o.Binary = filepath.Join(o.Dir, "bin", "kube")
	}
	if o.Progress == nil {
		o.Progress = os.Stdout
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Minute
	}
	return nil
}

type stepper struct {
	w     io.Writer
	name  string
	n, of int
}

func (s *stepper) step(format string, args ...any) {
	s.n++
	fmt.Fprintf(s.w, "[%s %d/%d] %s\n", s.name, s.n, s.of, fmt.Sprintf(format, args...))
}

// Up brings up the single-node cluster and returns once the node is Ready and a test pod ran. It
// fails when a cluster is already running in Dir. On failure it leaves the processes running for
// inspection; the error names the log to read, and Down cleans up.
func Up(opts NodeOptions) error {
	if err := opts.defaults(); err != nil {
		return err
	}
	start := time.Now()
	s := &stepper{w: opts.Progress, name: "cluster-up", of: 12}
	dir := opts.Dir
	run := filepath.Join(dir, "run")

	s.step("preflight: root, containerd, runc, ctr, kubectl, go, kube binary")
	if os.Geteuid() != 0 {
		return errors.New("cluster-up needs root (containerd, runc, cgroups, network namespaces)")
	}
	for _, c := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "kubectl", "go"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("%s not found on PATH: run .ci/install (containerd, runc; .ci/install also builds kubectl when it is missing, Go 1.26 in /usr/local/go/bin)", c)
		}
	}
	bin, err := KubeBinary(opts.Binary)
	if err != nil {
		return err
	}
	provBin, err := ProvisionerBinary(bin)
	if err != nil {
		return err
	}
	if live := liveProcesses(dir); len(live) > 0 {
		return fmt.Errorf("a cluster is already running in %s (%s): run `just cluster-down` first", dir, strings.Join(live, ", "))
	}
	if _, err := os.Stat(run); err == nil {
		fmt.Fprintf(opts.Progress, "[cluster-up] cleaning up the remains of an earlier cluster in %s\n", dir)
		if err := Down(NodeOptions{Dir: dir, Progress: opts.Progress}); err != nil {
			return fmt.Errorf("cleaning up the earlier cluster: %w", err)
		}
	}
	st := nodeState{Sysctls: readSysctls()}
	for _, p := range globalPaths {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			st.Created = append(st.Created, p)
		}
	}
	for _, d := range []string{run, filepath.Join(dir, "images")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := writeJSON(filepath.Join(dir, "state.json"), st); err != nil {
		return err
	}

	s.step("generating PKI and kubeconfigs in %s", filepath.Join(dir, "pki"))
	pki, err := NewPKI(filepath.Join(dir, "pki"))
	if err != nil {
		return err
	}
	url := "https://127.0.0.1:" + strconv.Itoa(APIServerPort)
	admin, adminKubeconfig, err := pki.UserKubeconfig(url, "admin", "kubernetes-admin", []string{"system:masters"}, filepath.Join(dir, "kubeconfig"))
	if err != nil {
		return err
	}
	_, kcmKubeconfig, err := pki.UserKubeconfig(url, "controller-manager", "system:kube-controller-manager", nil, filepath.Join(dir, "pki", "controller-manager.kubeconfig"))
	if err != nil {
		return err
	}
	_, schedKubeconfig, err := pki.UserKubeconfig(url, "scheduler", "system:kube-scheduler", nil, filepath.Join(dir, "pki", "scheduler.kubeconfig"))
	if err != nil {
		return err
	}
	_, kubeletKubeconfig, err := pki.UserKubeconfig(url, "kubelet", "system:node:"+NodeName, []string{"system:nodes"}, filepath.Join(dir, "pki", "kubelet.kubeconfig"))
	if err != nil {
		return err
	}
	if _, _, err := pki.Issue(CertSpec{Name: "kubelet-serving", CommonName: "system:node:" + NodeName, Server: true, Hosts: []string{NodeName, "localhost"}}); err != nil {
		return err
	}

	s.step("CNI plugins and the %s bridge network", BridgeName)
	cniBin, err := ensureCNIPlugins(opts.Progress)
	if err != nil {
		return err
	}
	if err := writeCNIConfig(dir); err != nil {
		return err
	}
	if err := ensureBridge(); err != nil {
		return err
	}

	s.step("starting containerd (own config, root, state and socket under %s)", filepath.Join(dir, "containerd"))
	if err := makeCgroupRoot(); err != nil {
		return err
	}
	sock, err := writeContainerdConfig(dir, cniBin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), opts.Timeout)
	defer cancel()
	containerd, err := startDetached(run, "containerd", "containerd", []string{"--config", filepath.Join(dir, "containerd", "config.toml")})
	if err != nil {
		return err
	}
	if err := poll(ctx, containerd, "containerd socket", func() (bool, error) {
		out, err := exec.Command("ctr", "--address", sock, "version").CombinedOutput()
		if err != nil {
			return false, fmt.Errorf("ctr version: %v: %s", err, out)
		}
		return true, nil
	}); err != nil {
		return err
	}

	s.step("building and importing images (%s, %s)", PauseImage, DevicePluginImage)
	imagesTar, err := buildImages(dir)
	if err != nil {
		return err
	}
	for _, img := range append([]string{imagesTar}, opts.Images...) {
		if err := ImportImage(sock, img); err != nil {
			return err
		}
	}

	s.step("starting etcd and kube-apiserver on 127.0.0.1:%d", APIServerPort)
	etcd, err := startDetached(run, "etcd", bin, append([]string{"etcd"}, EtcdArgs(filepath.Join(dir, "etcd"), etcdClientPort, etcdPeerPort)...))
	if err != nil {
		return err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClientPort)
	if err := waitHTTP(ctx, etcd, etcdURL+"/health", nil); err != nil {
		return err
	}
	apiArgs, err := APIServerArgs(pki, etcdURL, APIServerPort, filepath.Join(dir, "apiserver"))
	if err != nil {
		return err
	}
	apiserver, err := startDetached(run, "kube-apiserver", bin, append([]string{"kube-apiserver"}, apiArgs...))
	if err != nil {
		return err
	}
	if err := waitReadyz(ctx, apiserver, admin); err != nil {
		return err
	}

	s.step("starting kube-controller-manager and kube-scheduler")
	kcm, err := startDetached(run, "kube-controller-manager", bin, append([]string{"kube-controller-manager"}, ControllerManagerArgs(pki, kcmKubeconfig, 0, filepath.Join(dir, "controller-manager"))...))
	if err != nil {
		return err
	}
	if _, err := startDetached(run, "kube-scheduler", bin, []string{"kube-scheduler", "--kubeconfig=" + schedKubeconfig,
		"--authentication-kubeconfig=" + schedKubeconfig, "--authorization-kubeconfig=" + schedKubeconfig,
		"--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false"}); err != nil {
		return err
	}
	if err := waitServiceAccount(ctx, kcm, admin, "default"); err != nil {
		return err
	}

	s.step("starting the service proxy (ClusterIPs %s and node ports on this machine; API for pods on %s:%d)", ServiceCIDR, BridgeAddress, APIServerPort)
	_, proxyKubeconfig, err := pki.UserKubeconfig(url, serviceProxyName, "system:kube-proxy", nil, filepath.Join(dir, "pki", serviceProxyName+".kubeconfig"))
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(admin)
	if err != nil {
		return err
	}
	if err := ensureKubernetesEndpoints(ctx, client); err != nil {
		return err
	}
	proxyBin := filepath.Join(dir, "images", serviceProxyName)
	proxy, err := startDetached(run, serviceProxyName, proxyBin, []string{"-kubeconfig", proxyKubeconfig, "-apiserver", "127.0.0.1:" + strconv.Itoa(APIServerPort)})
	if err != nil {
		return err
	}
	if err := poll(ctx, proxy, "API through "+KubernetesServiceIP+":443", func() (bool, error) {
		return apiReachableAt(ctx, admin, "https://"+KubernetesServiceIP+":443")
	}); err != nil {
		return err
	}

	s.step("starting kubelet (node %s)", NodeName)
	kubeletConfig, err := writeKubeletConfig(dir, pki, sock)
	if err != nil {
		return err
	}
	kubelet, err := startDetached(run, "kubelet", bin, []string{"kubelet",
		"--config=" + kubeletConfig, "--kubeconfig=" + kubeletKubeconfig,
		"--root-dir=" + filepath.Join(dir, "kubelet"), "--cert-dir=" + filepath.Join(dir, "kubelet", "pki"),
		"--hostname-override=" + NodeName, "--v=1"})
	if err != nil {
		return err
	}
	if err := poll(ctx, kubelet, "node "+NodeName+" Ready", func() (bool, error) {
		n, err := client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, fmt.Errorf("condition Ready=%s: %s", c.Status, c.Message)
			}
		}
		return false, errors.New("no Ready condition yet")
	}); err != nil {
		return err
	}

	s.step("starting the volume provisioner and the default StorageClass %s (volumes in %s)", StorageClassName, VolumesDir(dir))
	_, provKubeconfig, err := pki.UserKubeconfig(url, provisionerName, "system:"+provisionerName, []string{"system:masters"}, filepath.Join(dir, "pki", provisionerName+".kubeconfig"))
	if err != nil {
		return err
	}
	if err := startStorage(ctx, run, dir, provBin, provKubeconfig, adminKubeconfig, client); err != nil {
		return err
	}

	s.step("deploying the kvm device plugin (deploy/device-plugin)")
	root, err := repoRoot()
	if err != nil {
		return err
	}
	if out, err := exec.Command("kubectl", "--kubeconfig", adminKubeconfig, "apply", "-k", filepath.Join(root, "deploy", "device-plugin")).CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl apply -k deploy/device-plugin: %v: %s", err, out)
	}
	// A host without a usable /dev/kvm still runs the whole cluster: the device plugin advertises no kvm
	// devices, launcher pods stay Pending (Insufficient devices.kubevirt.io/kvm), and the e2e tests that
	// boot guests skip with that reason. A host whose KVM is usable must advertise it.
	kvmErr := testenv.ProbeKVM()
	if kvmErr != nil {
		fmt.Fprintf(opts.Progress, "[cluster-up] this host's KVM is not usable (%v): the node will advertise no devices.kubevirt.io/kvm, so VMs cannot start on it; everything else works\n", kvmErr)
	}
	if err := poll(ctx, kubelet, "node advertises devices.kubevirt.io/kvm and tun", func() (bool, error) {
		n, err := client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		kvm, tun := n.Status.Allocatable["devices.kubevirt.io/kvm"], n.Status.Allocatable["devices.kubevirt.io/tun"]
		_, advertised := n.Status.Allocatable["devices.kubevirt.io/kvm"]
		kvmOK := kvm.Value() > 0 || (kvmErr != nil && advertised)
		return kvmOK && tun.Value() > 0, fmt.Errorf("allocatable kvm=%s tun=%s (device plugin pod: %s)", kvm.String(), tun.String(), filepath.Join(dir, "kubelet", "logs"))
	}); err != nil {
		return err
	}

	// The plugin registers with the kubelet before the kubelet reports the pod's IP: wait for the IP too.
	var podIP string
	if err := poll(ctx, kubelet, "the device plugin pod has an IP", func() (bool, error) {
		dsPods, err := client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=kvm-device-plugin"})
		if err != nil {
			return false, err
		}
		if len(dsPods.Items) == 0 || dsPods.Items[0].Status.PodIP == "" {
			return false, fmt.Errorf("device plugin pod or its IP not reported yet (kubectl -n kube-system get pods -o wide)")
		}
		podIP = dsPods.Items[0].Status.PodIP
		return true, nil
	}); err != nil {
		return err
	}
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	err = ping(pctx, podIP)
	pcancel()
	if err != nil {
		return fmt.Errorf("host cannot reach pod %s over %s: %w", podIP, BridgeName, err)
	}

	s.step("running a test pod that requests devices.kubevirt.io/kvm (when usable) and tun")
	if err := runTestPod(ctx, client, kubelet, kvmErr == nil); err != nil {
		return err
	}
	fmt.Fprintf(opts.Progress, "[cluster-up] ready in %s: export KUBECONFIG=%s\n", time.Since(start).Round(time.Second), adminKubeconfig)
	return nil
}

// runTestPod runs an unprivileged pod that requests one tun device and, with withKVM, one kvm device, opens
// them read-write (kvm-device-plugin -check), and waits for it to succeed.
func runTestPod(ctx context.Context, client kubernetes.Interface, kubelet *Process, withKVM bool) error {
	pods := client.CoreV1().Pods(metav1.NamespaceDefault)
	no := false
	var zero int64
	check := func(name, res, dev string) corev1.Container {
		limit := corev1.ResourceList{corev1.ResourceName(res): resource.MustParse("1")}
		return corev1.Container{
			Name: name, Image: DevicePluginImage, ImagePullPolicy: corev1.PullNever,
			Command:   []string{"/usr/bin/kvm-device-plugin", "-check", dev},
			Resources: corev1.ResourceRequirements{Requests: limit, Limits: limit},
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cluster-up-check"},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  &no,
			TerminationGracePeriodSeconds: &zero,
			RestartPolicy:                 corev1.RestartPolicyNever,
			Containers:                    []corev1.Container{check("tun", "devices.kubevirt.io/tun", "/dev/net/tun")},
		},
	}
	if withKVM {
		pod.Spec.Containers = append(pod.Spec.Containers, check("kvm", "devices.kubevirt.io/kvm", "/dev/kvm"))
	}
	_ = pods.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err := poll(ctx, kubelet, "old test pod gone", func() (bool, error) {
		_, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	}); err != nil {
		return err
	}
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create test pod: %w", err)
	}
	if err := poll(ctx, kubelet, "test pod Succeeded", func() (bool, error) {
		p, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Status.Phase == corev1.PodSucceeded {
			return true, nil
		}
		msg := string(p.Status.Phase)
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil {
				msg += fmt.Sprintf(", %s: %s %s", cs.Name, w.Reason, w.Message)
			}
			if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
				msg += fmt.Sprintf(", %s: exit %d %s", cs.Name, t.ExitCode, t.Message)
			}
		}
		for _, c := range p.Status.Conditions {
			if c.Status != corev1.ConditionTrue && c.Message != "" {
				msg += fmt.Sprintf(", %s: %s", c.Type, c.Message)
			}
		}
		if p.Status.Phase == corev1.PodFailed {
			return false, fmt.Errorf("test pod failed: %s", msg)
		}
		return false, fmt.Errorf("pod %s", msg)
	}); err != nil {
		return err
	}
	if err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		return fmt.Errorf("delete test pod: %w", err)
	}
	return nil
}

// startDetached starts a component in its own session so it outlives cluster-up, recording its PID
// in run/<name>.pid and its output in run/<name>.log.
func startDetached(run, name, bin string, args []string) (*Process, error) {
	p, err := startProcess(name, bin, args, nil, filepath.Join(run, name+".log"), true)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(run, name+".pid"), []byte(strconv.Itoa(p.PID())+"\n"), 0o644); err != nil {
		p.Stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}

// ImportImage loads an image tarball into the k8s.io namespace of the containerd at sock.
func ImportImage(sock, tarPath string) error {
	out, err := exec.Command("ctr", "--address", sock, "-n", "k8s.io", "images", "import", "--no-unpack=false", tarPath).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %v: %s", tarPath, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// DevicePluginImage is the image of cmd/kvm-device-plugin that cluster-up loads and deploys.
const DevicePluginImage = "kvirt.io/kvm-device-plugin:dev"

// buildImages compiles the static binaries of the cluster's own images (the CRI pause process, the kvm
// device plugin) and writes the images into one tarball.
func buildImages(dir string) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	bins := filepath.Join(dir, "images")
	for _, pkg := range []string{"./images/oci/pause", "./cmd/kvm-device-plugin", "./tests/harness/cmd/" + serviceProxyName} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(bins, filepath.Base(pkg)), pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v: %s", pkg, err, out)
		}
	}
	tarPath := filepath.Join(bins, "cluster-images.tar")
	if err := oci.WriteTarball(tarPath,
		oci.Image{Ref: PauseImage, Files: []oci.File{{Path: "/pause", Source: filepath.Join(bins, "pause")}}, Entrypoint: []string{"/pause"}},
		oci.Image{Ref: DevicePluginImage, Files: []oci.File{{Path: "/usr/bin/kvm-device-plugin", Source: filepath.Join(bins, "kvm-device-plugin")}}, Entrypoint: []string{"/usr/bin/kvm-device-plugin"}},
	); err != nil {
		return "", err
	}
	return tarPath, nil
}

// ensureCNIPlugins installs bridge, host-local and loopback at the version pinned in
// tests/cluster/cni-plugins.version into a cache directory, once.
func ensureCNIPlugins(progress io.Writer) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(root, "tests", "cluster", "cni-plugins.version"))
	if err != nil {
		return "", err
	}
	version := strings.TrimSpace(string(b))
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	dir := filepath.Join(cache, "kvirt", "cni-plugins-"+version)
	plugins := []string{"main/bridge", "ipam/host-local", "main/loopback"}
	missing := false
	for _, p := range plugins {
		if _, err := os.Stat(filepath.Join(dir, filepath.Base(p))); err != nil {
			missing = true
		}
	}
	if !missing {
		return dir, nil
	}
	fmt.Fprintf(progress, "[cluster-up] go install CNI plugins %s into %s (once)\n", version, dir)
	args := []string{"install", "-trimpath"}
	for _, p := range plugins {
		args = append(args, "github.com/containernetworking/plugins/plugins/"+p+"@"+version)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = os.TempDir() // outside any module: pkg@version installs
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install CNI plugins (needs the Go module proxy): %v: %s", err, out)
	}
	return dir, nil
}

func writeCNIConfig(dir string) error {
	confDir := filepath.Join(dir, "cni", "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return err
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       CNINetworkName,
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": BridgeName, "isGateway": false, "ipMasq": false, "hairpinMode": true,
			"ipam": map[string]any{
				"type":   "host-local",
				"ranges": [][]map[string]string{{{"subnet": PodSubnet, "gateway": BridgeAddress}}},
				// Only the service range goes to the host (the service proxy): no default route.
				"routes":  []map[string]string{{"dst": ServiceCIDR, "gw": BridgeAddress}},
				"dataDir": filepath.Join(dir, "cni", "ipam"),
			},
		}},
	}
	return writeJSON(filepath.Join(confDir, "10-kvirt.conflist"), conf)
}

// cgroupHierarchies lists the mounted cgroup hierarchies (v1 controllers, named ones and the unified one).
func cgroupHierarchies() ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range parseMountinfo(string(b)) {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, m.point)
		}
	}
	return out, nil
}

func makeCgroupRoot() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		if err := os.MkdirAll(filepath.Join(h, CgroupRoot), 0o755); err != nil {
			return fmt.Errorf("cgroup root: %w", err)
		}
	}
	return nil
}

func writeContainerdConfig(dir, cniBin string) (string, error) {
	c := filepath.Join(dir, "containerd")
	if err := os.MkdirAll(c, 0o755); err != nil {
		return "", err
	}
	sock := filepath.Join(c, "containerd.sock")
	q := strconv.Quote
	config := `# Written by kvirt's cluster-up: a private containerd for the test node.
version = 2
root = ` + q(filepath.Join(c, "root")) + `
state = ` + q(filepath.Join(c, "state")) + `
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = ` + q(sock) + `
[ttrpc]
  address = ` + q(sock+".ttrpc") + `
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = ` + q(filepath.Join(c, "opt")) + `
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ` + q(PauseImage) + `
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # Required on this kind of machine (docs PLATFORM.md):
  restrict_oom_score_adj = true
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = ` + q(filepath.Join(c, "runc")) + `
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ` + q(cniBin) + `
    conf_dir = ` + q(filepath.Join(dir, "cni", "net.d")) + `
    max_conf_num = 1
`
	return sock, os.WriteFile(filepath.Join(c, "config.toml"), []byte(config), 0o644)
}

func writeKubeletConfig(dir string, pki *PKI, sock string) (string, error) {
	k := filepath.Join(dir, "kubelet")
	for _, d := range []string{k, filepath.Join(k, "logs"), filepath.Join(k, "volume-plugins")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	no := false
	cfg := map[string]any{
		"apiVersion":         "kubelet.config.k8s.io/v1beta1",
		"kind":               "KubeletConfiguration",
		"address":            "127.0.0.1",
		"port":               10250,
		"readOnlyPort":       0,
		"healthzBindAddress": "127.0.0.1",
		"healthzPort":        10248,
		"tlsCertFile":        pki.Path("kubelet-serving.crt"),
		"tlsPrivateKeyFile":  pki.Path("kubelet-serving.key"),
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]any{"clientCAFile": pki.Path(caCertFile)},
		},
		"authorization":               map[string]any{"mode": "Webhook"},
		"cgroupDriver":                "cgroupfs",
		"cgroupRoot":                  "/" + CgroupRoot,
		"failSwapOn":                  false,
		"failCgroupV1":                &no,
		"resolvConf":                  "",
		"containerRuntimeEndpoint":    "unix://" + sock,
		"podLogsDir":                  filepath.Join(k, "logs"),
		"volumePluginDir":             filepath.Join(k, "volume-plugins"),
		"clusterDomain":               "cluster.local",
		"serializeImagePulls":         false,
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"evictionHard": map[string]string{
			"memory.available": "100Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%", "imagefs.available": "1%",
		},
		"syncFrequency":                 "10s",
		"fileCheckFrequency":            "10s",
		"nodeStatusUpdateFrequency":     "5s",
		"shutdownGracePeriod":           "0s",
		"registerNode":                  true,
		"protectKernelDefaults":         false,
		"makeIPTablesUtilChains":        false,
		"localStorageCapacityIsolation": true,
		// Launcher pods of VMIs with the masquerade binding set net.ipv4.ip_forward and
		// net.ipv4.conf.default.route_localnet in their own network namespace (pod securityContext.sysctls,
		// network.PodSysctls); the kubelet admits these unsafe sysctls only when allowed. Any cluster running
		// kvirt needs this setting (KubeVirt's virt-handler sets them from the node instead).
		"allowedUnsafeSysctls": allowedUnsafeSysctls(),
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return "", err
	}
	p := filepath.Join(k, "config.yaml")
	return p, os.WriteFile(p, b, 0o644)
}

// allowedUnsafeSysctls are the sysctls launcher pods request (network.PodSysctls), sorted.
func allowedUnsafeSysctls() []string {
	var out []string
	for k := range network.PodSysctls {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// pidAlive reports whether pid is a running (not zombie) process.
func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// liveProcesses lists the components of run/*.pid that are still running and belong to dir.
func liveProcesses(dir string) []string {
	files, _ := filepath.Glob(filepath.Join(dir, "run", "*.pid"))
	var live []string
	for _, f := range files {
		pid, ok := ourPID(dir, f)
		if ok {
			live = append(live, fmt.Sprintf("%s pid %d", strings.TrimSuffix(filepath.Base(f), ".pid"), pid))
		}
	}
	return live
}

// ourPID reads a pid file and checks that the process is alive and still ours (an argument after
// argv[0] names dir: the kube binary in dir/bin is run by test control planes too), so a recycled PID
// is never signalled.
func ourPID(dir, pidFile string) (int, bool) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 || !pidAlive(pid) {
		return 0, false
	}
	p, ok := readProc(pid)
	if !ok || !p.argsName(dir) || p.testControlPlane() {
		return 0, false
	}
	return pid, true
}

// stopPID sends SIGTERM, waits up to grace for the process to end, then SIGKILLs it.
func stopPID(pid int, grace time.Duration) {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for pidAlive(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if pidAlive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 100 && pidAlive(pid); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
}
