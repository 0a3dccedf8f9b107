// Command bench-cluster measures kvirt on the local cluster (`just bench-cluster`, after kvirt is deployed
// as `just e2e` does) and writes section "cluster" of docs/benchmarks.md:
//
//   - sequential starts: the time from running `virtctl start` to the VMI's phase Running, and to the
//     guest's boot marker ("kvirt-guest: ready") in the launcher's log; p50/p95 over -starts runs of one
//     VM (stopped with `virtctl stop` between runs);
//   - -parallel VMs started at once (one `virtctl start` each, concurrently): time until all are Running
//     and all printed the marker, then each launcher pod's memory from its cgroup (usage and working set,
//     i.e. usage minus inactive file cache, as the kubelet counts it) against guest RAM + 20 MiB.
//
// The guest is kvirt's freestanding test guest (64 MiB): testguest=button for the sequential starts (it
// powers off on virtctl stop), testguest=hang (halted, no CPU) for the VMs started at once, since the
// button guest polls its power-button register and 20 of them would saturate the machine. The figures are
// the control plane's and the launcher's, not a guest OS's boot. Timings come from polling the API.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	kvclient "github.com/kvirt/kvirt/api/client/clientset/versioned"
	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/tests/benchdoc"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	marker     = "kvirt-guest: ready"
	guestRAM   = "64Mi"
	poll       = 20 * time.Millisecond
	cpuRequest = "50m"
	memorySlop = 20 << 20 // target: launcher pod memory <= guest RAM + 20 MiB (issue 8)
)

type bench struct {
	kubeconfig, ns, virtctl string
	kube                    kubernetes.Interface
	kv                      kvclient.Interface
	breakdown               bool // print when each step of a start was first seen
	steps                   bool // record the steps (sequential starts)
}

func main() {
	kubeconfig := flag.String("kubeconfig", "build/cluster/kubeconfig", "kubeconfig of the cluster with kvirt deployed")
	starts := flag.Int("starts", 20, "sequential starts of one VM")
	parallel := flag.Int("parallel", 20, "VMs started at once")
	doc := flag.String("doc", "docs/benchmarks.md", "document whose section \"cluster\" is written (empty: print only)")
	virtctl := flag.String("virtctl", "", "virtctl binary (default: go build ./cmd/virtctl)")
	breakdown := flag.Bool("breakdown", false, "print each sequential start's steps (VMI phases, pod created, pod IP, pod Ready) as first seen")
	flag.Parse()
	if err := run(*kubeconfig, *starts, *parallel, *doc, *virtctl, *breakdown); err != nil {
		fmt.Fprintf(os.Stderr, "[bench-cluster] FAILED: %v\n", err)
		os.Exit(1)
	}
}

func run(kubeconfig string, starts, parallel int, doc, virtctl string, breakdown bool) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("%v: run `just cluster-up` and `just e2e` (or its deploy steps) first", err)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	b := &bench{kubeconfig: kubeconfig, breakdown: breakdown}
	if b.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if b.kv, err = kvclient.NewForConfig(cfg); err != nil {
		return err
	}
	if virtctl == "" {
		virtctl = filepath.Join(os.TempDir(), fmt.Sprintf("kvirt-bench-virtctl-%d", os.Getpid()))
		fmt.Println("[bench-cluster] go build ./cmd/virtctl")
		if out, err := exec.Command("go", "build", "-o", virtctl, "./cmd/virtctl").CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/virtctl (run from the repository root): %v\n%s", err, out)
		}
		defer os.Remove(virtctl)
	}
	b.virtctl = virtctl
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ready, err := b.kube.AppsV1().Deployments("kubevirt").Get(ctx, "virt-controller", metav1.GetOptions{})
	if err != nil || ready.Status.ReadyReplicas < 1 {
		return fmt.Errorf("virt-controller is not deployed and Ready (%v): run `just e2e` first (it deploys kvirt)", err)
	}
	b.ns = fmt.Sprintf("bench-cluster-%d", time.Now().Unix()%100000)
	if _, err := b.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: b.ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	defer func() {
		_ = b.kube.CoreV1().Namespaces().Delete(context.Background(), b.ns, metav1.DeleteOptions{})
		fmt.Printf("[bench-cluster] deleted namespace %s\n", b.ns)
	}()
	fmt.Printf("[bench-cluster] namespace %s; %d sequential starts, then %d VMs at once\n", b.ns, starts, parallel)

	seq, err := b.sequential(ctx, starts)
	if err != nil {
		return err
	}
	par, err := b.concurrent(ctx, parallel)
	if err != nil {
		return err
	}
	body := report(seq, par, starts, parallel)
	fmt.Println(body)
	if doc != "" {
		if err := benchdoc.WriteSection(doc, "cluster", body); err != nil {
			return err
		}
		fmt.Printf("[bench-cluster] wrote section cluster of %s\n", doc)
	}
	return nil
}

func (b *bench) vm(name, guestArgs string) *v1.VirtualMachine {
	halted := v1.RunStrategyHalted
	grace := int64(5)
	return &v1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: b.ns},
		Spec: v1.VirtualMachineSpec{
			RunStrategy: &halted,
			Template: &v1.VirtualMachineInstanceTemplateSpec{Spec: v1.VirtualMachineInstanceSpec{
				TerminationGracePeriodSeconds: &grace,
				Domain: v1.DomainSpec{
					Resources: v1.ResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceMemory: resource.MustParse(guestRAM),
						// The default CPU request (vCPUs/10 = 100m) does not fit 20 launchers beside virt-controller on this 2-CPU node.
						corev1.ResourceCPU: resource.MustParse(cpuRequest),
					}},
					Firmware: &v1.Firmware{KernelBoot: &v1.KernelBoot{
						KernelArgs: guestArgs,
						Container:  &v1.KernelBootContainer{Image: "docker-archive:/usr/share/kvirt/e2e/testguest-kernel.tar", KernelPath: "/boot/testguest"},
					}},
					Devices: v1.Devices{AutoattachPodInterface: boolPtr(false)},
				},
			}},
		},
	}
}

func boolPtr(b bool) *bool { return &b }

func (b *bench) virtctlRun(args ...string) error {
	out, err := exec.Command(b.virtctl, append([]string{"--kubeconfig", b.kubeconfig, "-n", b.ns}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("virtctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// startTiming is one start: from virtctl start to VMI Running and to the marker.
type startTiming struct {
	running, marker time.Duration
	// Sequential starts also record when the launcher pod was first seen and when it had an IP (the
	// kubelet's part: sandbox, CNI, status update).
	pod, podIP time.Duration
}

// start runs virtctl start name and waits for Running and the marker.
func (b *bench) start(ctx context.Context, name string, t0 time.Time) (startTiming, error) {
	var st startTiming
	if err := b.virtctlRun("start", name); err != nil {
		return st, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var uid string
	virtctlDone := time.Since(t0)
	var steps []string
	step := func(what string) { steps = append(steps, fmt.Sprintf("%s %dms", what, time.Since(t0).Milliseconds())) }
	lastPhase, podSeen, podIP, podReady := v1.VirtualMachineInstancePhase("-"), false, false, false
	for {
		vmi, err := b.kv.KubevirtV1().VirtualMachineInstances(b.ns).Get(ctx, name, metav1.GetOptions{})
		if b.steps {
			if err == nil && vmi.Status.Phase != lastPhase {
				lastPhase = vmi.Status.Phase
				step("vmi=" + string(lastPhase))
			}
			if err == nil && !podReady {
				pods, perr := b.kube.CoreV1().Pods(b.ns).List(ctx, metav1.ListOptions{LabelSelector: "kubevirt.io/created-by=" + string(vmi.UID)})
				if perr == nil && len(pods.Items) == 1 {
					p := pods.Items[0]
					if !podSeen {
						podSeen = true
						st.pod = time.Since(t0)
						step("pod")
					}
					if !podIP && p.Status.PodIP != "" {
						podIP = true
						st.podIP = time.Since(t0)
						step("podIP")
					}
					for _, c := range p.Status.Conditions {
						if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
							podReady = true
							step("podReady")
						}
					}
				}
			}
		}
		if err == nil && vmi.Status.Phase == v1.Running {
			if b.breakdown {
				fmt.Printf("[bench-cluster]   virtctl %dms, %s\n", virtctlDone.Milliseconds(), strings.Join(steps, ", "))
			}
			st.running = time.Since(t0)
			uid = string(vmi.UID)
			break
		}
		if err == nil && vmi.IsFinal() {
			return st, fmt.Errorf("vmi %s ended %s (%s) before Running", name, vmi.Status.Phase, vmi.Status.Reason)
		}
		if ctx.Err() != nil {
			return st, fmt.Errorf("vmi %s not Running within 5 minutes (last: %v)", name, err)
		}
		time.Sleep(poll)
	}
	if err := b.waitMarker(ctx, uid); err != nil {
		return st, fmt.Errorf("vmi %s: %w", name, err)
	}
	st.marker = time.Since(t0)
	return st, nil
}

// waitMarker follows the compute container's log of the VMI's launcher pod until the marker.
func (b *bench) waitMarker(ctx context.Context, vmiUID string) error {
	sel := "kubevirt.io/created-by=" + vmiUID
	for {
		pods, err := b.kube.CoreV1().Pods(b.ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err == nil && len(pods.Items) == 1 {
			rc, err := b.kube.CoreV1().Pods(b.ns).GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{Container: "compute", Follow: true}).Stream(ctx)
			if err == nil {
				sc := bufio.NewScanner(rc)
				for sc.Scan() {
					if strings.Contains(sc.Text(), marker) {
						rc.Close()
						return nil
					}
				}
				rc.Close()
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("no %q in the launcher log (pod label %s)", marker, sel)
		}
		time.Sleep(poll)
	}
}

func (b *bench) waitNoVMI(ctx context.Context, name string) error {
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		_, err := b.kv.KubevirtV1().VirtualMachineInstances(b.ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("vmi %s still there 3 minutes after virtctl stop", name)
}

func (b *bench) sequential(ctx context.Context, n int) ([]startTiming, error) {
	if _, err := b.kv.KubevirtV1().VirtualMachines(b.ns).Create(ctx, b.vm("seq", "testguest=button"), metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	var out []startTiming
	b.steps = true
	defer func() { b.steps = false }()
	for i := 1; i <= n; i++ {
		st, err := b.start(ctx, "seq", time.Now())
		if err != nil {
			return nil, fmt.Errorf("start %d: %w", i, err)
		}
		fmt.Printf("[bench-cluster] start %2d/%d: Running after %v, marker after %v\n", i, n, st.running.Round(time.Millisecond), st.marker.Round(time.Millisecond))
		out = append(out, st)
		if err := b.virtctlRun("stop", "seq"); err != nil {
			return nil, err
		}
		if err := b.waitNoVMI(ctx, "seq"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

type concurrentResult struct {
	allRunning, allMarker time.Duration
	mem                   []podMemory
	starts                []startTiming
}

type podMemory struct {
	pod                string
	usage, workingSet  int64
	rss                int64 // sum of VmRSS of the pod's processes (counts shared file pages too)
	cgroup             string
	limit, requestMemB int64
}

func (b *bench) concurrent(ctx context.Context, n int) (concurrentResult, error) {
	var res concurrentResult
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("par-%02d", i)
		if _, err := b.kv.KubevirtV1().VirtualMachines(b.ns).Create(ctx, b.vm(names[i], "testguest=hang"), metav1.CreateOptions{}); err != nil {
			return res, err
		}
	}
	fmt.Printf("[bench-cluster] starting %d VMs at once\n", n)
	t0 := time.Now()
	res.starts = make([]startTiming, n)
	index := map[string]int{}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, name := range names {
		index[name] = i
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = b.virtctlRun("start", name)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	// One List per tick for all VMIs (20 GETs every 20 ms would load the apiserver being measured);
	// each VMI's log is followed from the moment it is Running.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	var mu sync.Mutex
	seen, marked := map[string]bool{}, 0
	for {
		list, err := b.kv.KubevirtV1().VirtualMachineInstances(b.ns).List(ctx, metav1.ListOptions{})
		now := time.Since(t0)
		if err == nil {
			for _, vmi := range list.Items {
				if vmi.IsFinal() {
					return res, fmt.Errorf("vmi %s ended %s (%s) before its marker", vmi.Name, vmi.Status.Phase, vmi.Status.Reason)
				}
				i, ok := index[vmi.Name]
				if !ok || seen[vmi.Name] || vmi.Status.Phase != v1.Running {
					continue
				}
				seen[vmi.Name] = true
				res.starts[i].running = now
				wg.Add(1)
				go func(uid string) {
					defer wg.Done()
					if err := b.waitMarker(ctx, uid); err != nil {
						errs[i] = err
						return
					}
					mu.Lock()
					res.starts[i].marker = time.Since(t0)
					marked++
					mu.Unlock()
				}(string(vmi.UID))
			}
		}
		mu.Lock()
		done := marked == n
		mu.Unlock()
		if done {
			break
		}
		if ctx.Err() != nil {
			wg.Wait()
			return res, fmt.Errorf("%d of %d VMIs Running and %d printed the marker before the 10-minute deadline or an interrupt (last list error: %v; %v)", len(seen), n, marked, err, errors.Join(errs...))
		}
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	for _, s := range res.starts {
		res.allRunning = max(res.allRunning, s.running)
		res.allMarker = max(res.allMarker, s.marker)
	}
	fmt.Printf("[bench-cluster] all %d Running after %v, all markers after %v\n", n, res.allRunning.Round(time.Millisecond), res.allMarker.Round(time.Millisecond))
	time.Sleep(3 * time.Second) // let the launchers settle after boot
	for _, name := range names {
		m, err := b.podMemory(ctx, name)
		if err != nil {
			return res, err
		}
		res.mem = append(res.mem, m)
	}
	return res, nil
}

// podMemory reads the memory cgroup of the VMI's launcher pod (kubelet's cgroupfs layout under the
// cluster's cgroup root: .../kubepods[/<qos>]/pod<UID>).
func (b *bench) podMemory(ctx context.Context, vmi string) (podMemory, error) {
	var m podMemory
	pods, err := b.kube.CoreV1().Pods(b.ns).List(ctx, metav1.ListOptions{LabelSelector: "vm.kubevirt.io/name=" + vmi})
	if err != nil || len(pods.Items) != 1 {
		return m, fmt.Errorf("launcher pod of %s: %v (%d pods)", vmi, err, len(pods.Items))
	}
	pod := pods.Items[0]
	m.pod = pod.Name
	for _, c := range pod.Spec.Containers {
		if c.Name == "compute" {
			m.limit = c.Resources.Limits.Memory().Value()
			m.requestMemB = c.Resources.Requests.Memory().Value()
		}
	}
	uid := string(pod.UID)
	var dirs []string
	for _, root := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup"} {
		for _, pat := range []string{"*/kubepods/pod", "*/kubepods/*/pod", "kubepods/pod", "kubepods/*/pod"} {
			for _, u := range []string{uid, strings.ReplaceAll(uid, "-", "_")} {
				found, _ := filepath.Glob(filepath.Join(root, pat+u))
				dirs = append(dirs, found...)
			}
		}
		if len(dirs) > 0 {
			break
		}
	}
	if len(dirs) == 0 {
		return m, fmt.Errorf("no memory cgroup for pod %s (uid %s) under /sys/fs/cgroup", pod.Name, uid)
	}
	m.cgroup = dirs[0]
	stat := readStat(filepath.Join(m.cgroup, "memory.stat"))
	if v, err := readInt(filepath.Join(m.cgroup, "memory.usage_in_bytes")); err == nil { // cgroup v1
		m.usage = v
		m.workingSet = v - stat["total_inactive_file"]
	} else if v, err := readInt(filepath.Join(m.cgroup, "memory.current")); err == nil { // cgroup v2
		m.usage = v
		m.workingSet = v - stat["inactive_file"]
	} else {
		return m, fmt.Errorf("memory usage of %s: %v", m.cgroup, err)
	}
	// Processes live in the containers' cgroups below the pod's.
	_ = filepath.WalkDir(m.cgroup, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		procs, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		for _, f := range strings.Fields(string(procs)) {
			m.rss += readStatus("/proc/" + f + "/status")["VmRSS:"] << 10
		}
		return nil
	})
	return m, nil
}

// readStatus reads the "Key: N kB" lines of /proc/PID/status.
func readStatus(path string) map[string]int64 {
	out := map[string]int64{}
	b, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				out[f[0]] = v
			}
		}
	}
	return out
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

func readStat(path string) map[string]int64 {
	out := map[string]int64{}
	b, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 {
			if v, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				out[f[0]] = v
			}
		}
	}
	return out
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	i := int(p*float64(len(s)) + 0.5)
	if i < 1 {
		i = 1
	}
	if i > len(s) {
		i = len(s)
	}
	return s[i-1]
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }
func mib(b int64) string        { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func report(seq []startTiming, par concurrentResult, starts, parallel int) string {
	var running, markers []time.Duration
	for _, s := range seq {
		running = append(running, s.running)
		markers = append(markers, s.marker)
	}
	ram := resource.MustParse(guestRAM)
	target := ram.Value() + memorySlop
	var w strings.Builder
	fmt.Fprintf(&w, "## cluster: start latency and launcher memory on the local node (`just bench-cluster`)\n\n")
	fmt.Fprintf(&w, "Run %s on this machine (2 cores, PVM /dev/kvm, shared with other work), kvirt deployed in-cluster as by\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&w, "`just e2e`. Guest: kvirt's freestanding test guest (%s RAM; `testguest=button` for the sequential starts,\n", guestRAM)
	fmt.Fprintf(&w, "`testguest=hang` — halted, no CPU — for the VMs started at once; CPU request %s, since the default\n", cpuRequest)
	fmt.Fprintf(&w, "vCPUs/10 = 100m leaves room for only 17 launcher pods beside virt-controller on this 2-CPU node), so the figures are the\n")
	fmt.Fprintf(&w, "control plane's and the launcher's. No reference VMM runs in a cluster here: each figure stands beside the\n")
	fmt.Fprintf(&w, "target of issue 8, as a ratio (figure / target; ≤ 1 meets it). Timings from polling the API (20 ms for one VMI, one List per 50 ms for many).\n\n")
	fmt.Fprintf(&w, "### %d sequential starts of one VM (`virtctl start`, then `virtctl stop` and wait for the VMI to go)\n\n", starts)
	fmt.Fprintf(&w, "| measure | p50 | p95 | target | p50 / target |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&w, "| `virtctl start` → VMI Running | %s | %s | < 1000 ms p50 | %.2f |\n", ms(percentile(running, .5)), ms(percentile(running, .95)), float64(percentile(running, .5))/float64(time.Second))
	fmt.Fprintf(&w, "| `virtctl start` → guest marker in the launcher log | %s | %s | (none stated) | – |\n\n", ms(percentile(markers, .5)), ms(percentile(markers, .95)))
	// Each step over every start that saw both of its ends. The VMI is usually Running before the pod IP is
	// in the pod's status (the controller reaches the launcher by port-forward from the moment the pod is
	// bound), so "pod IP → Running" is not a step of the path; counting only the starts where the IP came
	// first picked the slow outliers.
	var toPod, podToRunning, podToIP []time.Duration
	for _, s := range seq {
		if s.pod <= 0 {
			continue
		}
		toPod = append(toPod, s.pod)
		if s.running > s.pod {
			podToRunning = append(podToRunning, s.running-s.pod)
		}
		if s.podIP > s.pod {
			podToIP = append(podToIP, s.podIP-s.pod)
		}
	}
	if len(toPod) > 0 {
		fmt.Fprintf(&w, "Where the time goes (%d of the starts, each step as first seen by the poll):\n\n", len(toPod))
		fmt.Fprintf(&w, "| step | starts | p50 | p95 | who |\n|---|---|---|---|---|\n")
		fmt.Fprintf(&w, "| `virtctl start` → launcher pod created | %d | %s | %s | virtctl, VM and VMI controllers |\n", len(toPod), ms(percentile(toPod, .5)), ms(percentile(toPod, .95)))
		fmt.Fprintf(&w, "| pod created → VMI Running | %d | %s | %s | scheduler, kubelet, containerd, launcher start, controller's port-forward watch |\n", len(podToRunning), ms(percentile(podToRunning, .5)), ms(percentile(podToRunning, .95)))
		fmt.Fprintf(&w, "| pod created → pod IP in its status (not on the path) | %d | %s | %s | kubelet status update after its PLEG relist |\n\n", len(podToIP), ms(percentile(podToIP, .5)), ms(percentile(podToIP, .95)))
	}
	var pr, pm []time.Duration
	for _, s := range par.starts {
		pr = append(pr, s.running)
		pm = append(pm, s.marker)
	}
	fmt.Fprintf(&w, "### %d VMs started at once (one `virtctl start` each, concurrently)\n\n", parallel)
	fmt.Fprintf(&w, "| measure | value |\n|---|---|\n")
	fmt.Fprintf(&w, "| all %d Running | %s (each: p50 %s, p95 %s) |\n", parallel, ms(par.allRunning), ms(percentile(pr, .5)), ms(percentile(pr, .95)))
	fmt.Fprintf(&w, "| all %d printed the marker | %s (each: p50 %s, p95 %s) |\n\n", parallel, ms(par.allMarker), ms(percentile(pm, .5)), ms(percentile(pm, .95)))
	var ws, us, rs []int64
	worst := int64(0)
	for _, m := range par.mem {
		ws = append(ws, m.workingSet)
		us = append(us, m.usage)
		rs = append(rs, m.rss)
		worst = max(worst, m.workingSet)
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i] < ws[j] })
	sort.Slice(us, func(i, j int) bool { return us[i] < us[j] })
	sort.Slice(rs, func(i, j int) bool { return rs[i] < rs[j] })
	if len(ws) > 0 {
		fmt.Fprintf(&w, "Launcher pod memory (pod cgroup; working set = usage − inactive file cache, as the kubelet counts it), %d pods:\n\n", len(ws))
		fmt.Fprintf(&w, "| measure | min | median | max | target (guest RAM + 20 MiB) | max / target |\n|---|---|---|---|---|---|\n")
		fmt.Fprintf(&w, "| working set | %s | %s | %s | %s | %.2f |\n", mib(ws[0]), mib(ws[len(ws)/2]), mib(ws[len(ws)-1]), mib(target), float64(worst)/float64(target))
		fmt.Fprintf(&w, "| usage (incl. page cache) | %s | %s | %s | %s | %.2f |\n", mib(us[0]), mib(us[len(us)/2]), mib(us[len(us)-1]), mib(target), float64(us[len(us)-1])/float64(target))
		fmt.Fprintf(&w, "| RSS of the pod's processes (incl. shared binary pages) | %s | %s | %s | %s | %.2f |\n\n", mib(rs[0]), mib(rs[len(rs)/2]), mib(rs[len(rs)-1]), mib(target), float64(rs[len(rs)-1])/float64(target))
		fmt.Fprintf(&w, "The cgroup charges a file page to the first pod that read it, so the launcher binary's code pages\n")
		fmt.Fprintf(&w, "(shared by all pods) mostly count elsewhere; the RSS row counts them in every pod (an upper bound).\n")
		m := par.mem[0]
		limit := "has no memory limit"
		if m.limit > 0 {
			limit = "is limited to " + mib(m.limit)
		}
		fmt.Fprintf(&w, "The compute container requests %s (guest RAM + the controller's overhead estimate) and %s.\n", mib(m.requestMemB), limit)
		fmt.Fprintf(&w, "The test guest touches little of its RAM, so this is close to the launcher's own footprint; a guest that\n")
		fmt.Fprintf(&w, "uses all its memory adds up to %s.\n", guestRAM)
	}
	return w.String()
}
