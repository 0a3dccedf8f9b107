package integration

import (
	"context"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/controller"
	dto "github.com/prometheus/client_model/go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestScaleBenchmark starts and stops KVIRT_BENCH_VMS VMs (e.g. 1000) against the real apiserver with
// launchers simulated by the fake status source, and prints start/stop latencies, reconcile latency
// quantiles and the test process's RSS (controller + stand-in kubelet + clients). A benchmark, not a
// test: it is skipped unless KVIRT_BENCH_VMS is set.
func TestScaleBenchmark(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("KVIRT_BENCH_VMS"))
	if n <= 0 {
		t.Skip("benchmark: set KVIRT_BENCH_VMS=1000 to run it")
	}
	e := startWith(t, 4)
	e.status.SetDefault(controller.LauncherState{Phase: controller.GuestRunning})
	rssBefore := rssKiB()
	ctx := context.Background()
	report := func(format string, args ...any) { fmt.Printf("[bench-controller] "+format+"\n", args...) }

	created := make([]time.Time, n)
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				created[i] = time.Now()
				var err error
				for try := 0; try < 5; try++ {
					_, err = e.kv.KubevirtV1().VirtualMachines(e.ns).Create(ctx, newVM(fmt.Sprintf("vm-%04d", i), v1.RunStrategyAlways), metav1.CreateOptions{})
					if err == nil || apierrors.IsAlreadyExists(err) {
						err = nil
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("create VMs: %v", firstErr)
	}
	report("created %d VMs in %v", n, time.Since(start).Round(time.Millisecond))

	startLat := e.waitAll(t, n, created, v1.VirtualMachineStatusRunning, 20*time.Minute, report)
	report("all %d VMs Running %v after the first create", n, time.Since(start).Round(time.Millisecond))
	rssRunning := rssKiB()

	stopAt := make([]time.Time, n)
	stopStart := time.Now()
	for i := 0; i < n; i++ {
		stopAt[i] = time.Now()
		var err error
		for try := 0; try < 5; try++ { // the apiserver may close a busy HTTP/2 connection (GOAWAY)
			if _, err = e.kv.KubevirtV1().VirtualMachines(e.ns).Patch(ctx, fmt.Sprintf("vm-%04d", i), types.MergePatchType, []byte(`{"spec":{"runStrategy":"Halted"}}`), metav1.PatchOptions{}); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("stop: %v", err)
		}
	}
	stopLat := e.waitAll(t, n, stopAt, v1.VirtualMachineStatusStopped, 20*time.Minute, report)
	report("all %d VMs Stopped %v after the first stop", n, time.Since(stopStart).Round(time.Millisecond))

	rec := reconcileQuantiles(t, e.c)
	var b strings.Builder
	fmt.Fprintf(&b, "VMs: %d (start, then stop), controller workers: 4 per controller\n", n)
	fmt.Fprintf(&b, "create→Running per VM: p50 %v p99 %v max %v\n", pct(startLat, 50), pct(startLat, 99), pct(startLat, 100))
	fmt.Fprintf(&b, "stop→Stopped per VM:   p50 %v p99 %v max %v\n", pct(stopLat, 50), pct(stopLat, 99), pct(stopLat, 100))
	for _, r := range rec {
		fmt.Fprintf(&b, "%s\n", r)
	}
	fmt.Fprintf(&b, "test process RSS: %d MiB before, %d MiB with %d VMs running (controller + stand-in kubelet + clients)\n", rssBefore/1024, rssRunning/1024, n)
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		report("%s", l)
	}
	if out := os.Getenv("KVIRT_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// waitAll polls until every VM vm-%04d shows want and returns each VM's latency from since[i].
func (e *env) waitAll(t *testing.T, n int, since []time.Time, want v1.VirtualMachinePrintableStatus, timeout time.Duration, report func(string, ...any)) []time.Duration {
	t.Helper()
	lat := make([]time.Duration, n)
	done := make([]bool, n)
	left := n
	deadline := time.Now().Add(timeout)
	lastReport := time.Now()
	for left > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d VMs not %s after %v", left, n, want, timeout)
		}
		l, err := e.kv.KubevirtV1().VirtualMachines(e.ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		for _, vm := range l.Items {
			var i int
			if _, err := fmt.Sscanf(vm.Name, "vm-%04d", &i); err != nil || i >= n || done[i] {
				continue
			}
			if vm.Status.PrintableStatus == want && (want != v1.VirtualMachineStatusStopped || !vm.Status.Created) {
				done[i] = true
				lat[i] = now.Sub(since[i])
				left--
			}
		}
		if time.Since(lastReport) > 10*time.Second {
			report("%d/%d VMs %s", n-left, n, want)
			lastReport = time.Now()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return lat
}

func pct(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	if i < 0 {
		i = 0
	}
	return s[i].Round(time.Millisecond)
}

// reconcileQuantiles estimates p50/p99 of the reconcile-duration histogram per controller (bucket upper bounds).
func reconcileQuantiles(t *testing.T, c *controller.Controller) []string {
	mfs, err := c.Metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != "kvirt_controller_reconcile_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			name := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" {
					name = l.GetValue()
				}
			}
			h := m.GetHistogram()
			out = append(out, fmt.Sprintf("%s reconciles: %d, p50 ≤ %s, p99 ≤ %s (histogram bucket bounds)", name, h.GetSampleCount(), bucketQuantile(h, 0.5), bucketQuantile(h, 0.99)))
		}
	}
	sort.Strings(out)
	return out
}

func bucketQuantile(h *dto.Histogram, q float64) string {
	target := q * float64(h.GetSampleCount())
	for _, b := range h.GetBucket() {
		if float64(b.GetCumulativeCount()) >= target {
			return (time.Duration(b.GetUpperBound() * float64(time.Second))).String()
		}
	}
	return "+Inf"
}

func rssKiB() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				v, _ := strconv.Atoi(f[1])
				return v
			}
		}
	}
	return 0
}
