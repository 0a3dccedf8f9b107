package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/controller"
	"github.com/kvirt/kvirt/controller/controllertest"
	"github.com/kvirt/kvirt/tests/testenv"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/util/retry"
)

// TestNodeLossFencing is BEHAVIOUR.md §3 "node loss": a VM whose node stops reporting shows Unknown
// once the node has been NotReady for the controller's timeout, stays Unknown (one VMI, one pod) while
// its pod may still run — even Terminating — and starts again elsewhere only once the pod is gone. The
// pod goes as Kubernetes' non-graceful node shutdown prescribes: the admin taints the node
// node.kubernetes.io/out-of-service and kube-controller-manager's pod GC force-deletes the pod (the real
// one, run by the harness). The test plays the kubelets and the node lifecycle controller's Ready=Unknown.
// A watch of the VMIs and launcher pods checks that there is never a moment with two instances.
func TestNodeLossFencing(t *testing.T) {
	const timeout = 3 * time.Second
	e := startEnv(t, 2, false)
	e.notReadyTimeout = timeout
	e.stop = e.runController(t)
	ctx := context.Background()
	node := e.createReadyNode(t, "lost-"+e.ns)
	fence := e.watchInstances(t)

	vm := controllertest.VM("vm", v1.RunStrategyAlways)
	vm.Spec.Template.ObjectMeta.Labels[nodeLabel] = node
	e.createVM(t, vm)
	first := e.runGuest(t, "vm")
	if first.Status.NodeName != node {
		t.Fatalf("VMI on node %q, want %q", first.Status.NodeName, node)
	}
	testenv.Eventually(t, "VM Running", 30*time.Second, e.printable(t, "vm", v1.VirtualMachineStatusRunning))

	// The node's kubelet stops; the node lifecycle controller marks it Ready=Unknown.
	lostAt := e.loseNode(t, node)
	testenv.Eventually(t, "VM Unknown", timeout+30*time.Second, e.printable(t, "vm", v1.VirtualMachineStatusUnknown))
	vmi, err := e.getVMI("vm")
	if err != nil {
		t.Fatal(err)
	}
	n := len(vmi.Status.PhaseTransitionTimestamps)
	if vmi.UID != first.UID || vmi.Status.Phase != v1.Unknown || n == 0 || vmi.Status.PhaseTransitionTimestamps[n-1].Phase != v1.Unknown {
		t.Fatalf("VMI %s phase %s transitions %+v, want the first VMI Unknown", vmi.UID, vmi.Status.Phase, vmi.Status.PhaseTransitionTimestamps)
	}
	if at := vmi.Status.PhaseTransitionTimestamps[n-1].PhaseTransitionTimestamp.Time; at.Sub(lostAt) < timeout {
		t.Fatalf("Unknown at %v, %v after the node went NotReady (%v): before the %v timeout", at, at.Sub(lostAt), lostAt, timeout)
	}
	if vm := e.getVM(t, "vm"); vm.Status.Ready {
		t.Fatalf("VM ready while Unknown: %+v", vm.Status)
	}

	// As the taint manager does when the pod's toleration of the unreachable taint (300 s) ends: the pod
	// is deleted gracefully, and stays Terminating (no kubelet confirms it). The VM waits for it.
	pod := e.onlyLauncherPod(t, first.UID)
	if err := e.kube.CoreV1().Pods(e.ns).Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "VMI sees its pod terminating", 30*time.Second, func() (bool, string) {
		vmi, err := e.getVMI("vm")
		if err != nil {
			return false, err.Error()
		}
		c := vmi.Status.Condition(v1.VirtualMachineInstanceReady)
		return c != nil && c.Reason == v1.PodTerminatingReason, fmt.Sprintf("Ready %+v", c)
	})
	if vmi, err := e.getVMI("vm"); err != nil || vmi.UID != first.UID || vmi.Status.Phase != v1.Unknown {
		t.Fatalf("pod terminating on the lost node: VMI %v %v, want the first one Unknown", vmi, err)
	}
	if vm := e.getVM(t, "vm"); vm.Status.PrintableStatus != v1.VirtualMachineStatusUnknown {
		t.Fatalf("pod terminating on the lost node: VM %s", vm.Status.PrintableStatus)
	}

	// The admin says the node is down for good; pod GC force-deletes the pod, the VMI fails, and the
	// Always VM starts a new one on node1.
	e.taintOutOfService(t, node)
	testenv.Eventually(t, "old pod gone (kube-controller-manager's pod GC)", 90*time.Second, func() (bool, string) {
		p, err := e.kube.CoreV1().Pods(e.ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return false, fmt.Sprintf("pod %s phase %s deleting=%v", p.Name, p.Status.Phase, p.DeletionTimestamp != nil)
	})
	var second *v1.VirtualMachineInstance
	testenv.Eventually(t, "new VMI Scheduled", 60*time.Second, func() (bool, string) {
		vmi, err := e.getVMI("vm")
		if err != nil {
			return false, err.Error()
		}
		second = vmi
		return vmi.UID != first.UID && vmi.Status.Phase == v1.Scheduled, fmt.Sprintf("VMI %s phase %s", vmi.UID, vmi.Status.Phase)
	})
	e.status.Set(e.ns, "vm", controller.LauncherState{Phase: controller.GuestRunning})
	testenv.Eventually(t, "VM Running again", 30*time.Second, e.printable(t, "vm", v1.VirtualMachineStatusRunning))
	if vmi, err := e.getVMI("vm"); err != nil || vmi.UID != second.UID || vmi.Status.NodeName != "node1" {
		t.Fatalf("new VMI %+v %v, want %s running on node1", vmi, err, second.UID)
	}

	got := fence.history(first.UID)
	if !slices.Contains(got, string(v1.Unknown)) || !slices.Contains(got, string(v1.Failed)+"/"+controller.ReasonNodeUnresponsive) {
		t.Errorf("first VMI went %v, want Unknown then Failed/%s", got, controller.ReasonNodeUnresponsive)
	}
	testenv.Eventually(t, "NodeUnresponsive event", 30*time.Second, func() (bool, string) {
		evs, err := e.kube.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{FieldSelector: fields.Set{"involvedObject.uid": string(first.UID)}.String()})
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		for _, ev := range evs.Items {
			if ev.Reason == controller.ReasonNodeUnresponsive && strings.Contains(ev.Message, node) {
				return true, ""
			}
			seen = append(seen, ev.Reason)
		}
		return false, fmt.Sprintf("events %v", seen)
	})
	fence.check(t)
}

// createReadyNode registers a Node with Ready=True and a heartbeat Lease the stand-in kubelet renews
// until the node is lost (loseNode); it deletes both at the end.
func (e *env) createReadyNode(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	if _, err := e.kube.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.kube.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	if err := e.keepNodeReady(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := e.renewNodeLease(ctx, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.kube.CoordinationV1().Leases("kube-node-lease").Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	e.mu.Lock()
	e.nodes = append(e.nodes, name)
	e.mu.Unlock()
	return name
}

// liveNodes are the nodes the test added whose kubelet still runs.
func (e *env) liveNodes() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, n := range e.nodes {
		if !e.down[n] {
			out = append(out, n)
		}
	}
	return out
}

// keepNodeReady sets node name's Ready condition True again if it is not (as a kubelet that reports).
func (e *env) keepNodeReady(ctx context.Context, name string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := e.kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}
		i := slices.IndexFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool { return c.Type == corev1.NodeReady })
		switch {
		case i < 0:
			n.Status.Conditions = append(n.Status.Conditions, ready)
		case n.Status.Conditions[i].Status == corev1.ConditionTrue:
			return nil
		default:
			n.Status.Conditions[i] = ready
		}
		_, err = e.kube.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

func (e *env) nodeDown(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.down[name]
}

// loseNode stops node's stand-in kubelet (its Lease is no longer renewed, its pods no longer looked
// after) and sets its Ready condition Unknown at once, as the node lifecycle controller does when the
// Lease is older than its grace period; it returns the condition's transition time as stored.
func (e *env) loseNode(t *testing.T, node string) time.Time {
	t.Helper()
	e.mu.Lock()
	if e.down == nil {
		e.down = map[string]bool{}
	}
	e.down[node] = true
	e.mu.Unlock()
	var at time.Time
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := e.kube.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		unknown := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionUnknown, Reason: "NodeStatusUnknown",
			Message: "Kubelet stopped posting node status.", LastHeartbeatTime: now, LastTransitionTime: now}
		n.Status.Conditions = slices.DeleteFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool { return c.Type == corev1.NodeReady })
		n.Status.Conditions = append(n.Status.Conditions, unknown)
		out, err := e.kube.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{})
		if err != nil {
			return err
		}
		for _, c := range out.Status.Conditions {
			if c.Type == corev1.NodeReady {
				at = c.LastTransitionTime.Time
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("node %s Ready=Unknown: %v", node, err)
	}
	return at
}

// taintOutOfService adds node.kubernetes.io/out-of-service=nodeshutdown:NoExecute, keeping the taints
// the node lifecycle controller set.
func (e *env) taintOutOfService(t *testing.T, node string) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := e.kube.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: corev1.TaintNodeOutOfService, Value: "nodeshutdown", Effect: corev1.TaintEffectNoExecute})
		_, err = e.kube.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("taint %s out-of-service: %v", node, err)
	}
}

// onlyLauncherPod returns the one launcher pod of the VMI with uid.
func (e *env) onlyLauncherPod(t *testing.T, uid types.UID) *corev1.Pod {
	t.Helper()
	pods, err := e.kube.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: labels.Set{v1.CreatedByLabel: string(uid)}.String()})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("launcher pods of %s: %d, %v", uid, len(pods.Items), err)
	}
	return &pods.Items[0]
}

// instanceWatch follows every VMI and launcher pod of the test's namespace through watches (each stream
// in the apiserver's order) and records each moment with two VMIs that are not final, or two launcher
// pods that have not terminated: two instances of one VM that may both run.
type instanceWatch struct {
	mu         sync.Mutex
	vmis       map[types.UID]*v1.VirtualMachineInstance
	pods       map[types.UID]*corev1.Pod
	phases     map[types.UID][]string // each VMI's phases as seen, "Failed/reason" for a final one
	violations []string
	stopped    error
}

func (e *env) watchInstances(t *testing.T) *instanceWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &instanceWatch{vmis: map[types.UID]*v1.VirtualMachineInstance{}, pods: map[types.UID]*corev1.Pod{}, phases: map[types.UID][]string{}}
	vw, err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pw, err := e.kube.CoreV1().Pods(e.ns).Watch(ctx, metav1.ListOptions{LabelSelector: labels.Set{v1.AppLabel: v1.VirtLauncherValue}.String()})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); w.follow(ctx, vw, "VMI") }()
	go func() { defer wg.Done(); w.follow(ctx, pw, "pod") }()
	t.Cleanup(func() { cancel(); vw.Stop(); pw.Stop(); wg.Wait() })
	return w
}

func (w *instanceWatch) follow(ctx context.Context, wi watch.Interface, kind string) {
	for {
		var ev watch.Event
		var ok bool
		select {
		case <-ctx.Done():
			return
		case ev, ok = <-wi.ResultChan():
		}
		if !ok {
			if ctx.Err() == nil {
				w.mu.Lock()
				w.stopped = fmt.Errorf("%s watch ended early", kind)
				w.mu.Unlock()
			}
			return
		}
		w.mu.Lock()
		switch o := ev.Object.(type) {
		case *v1.VirtualMachineInstance:
			if ev.Type == watch.Deleted {
				delete(w.vmis, o.UID)
			} else {
				w.vmis[o.UID] = o
				p := string(o.Status.Phase)
				if o.IsFinal() && o.Status.Reason != "" {
					p += "/" + o.Status.Reason
				}
				if h := w.phases[o.UID]; len(h) == 0 || h[len(h)-1] != p {
					w.phases[o.UID] = append(h, p)
				}
			}
			var live []string
			for _, v := range w.vmis {
				if !v.IsFinal() {
					live = append(live, fmt.Sprintf("%s(%s)", v.UID, v.Status.Phase))
				}
			}
			if len(live) > 1 {
				w.violations = append(w.violations, fmt.Sprintf("two VMIs not final: %v", live))
			}
		case *corev1.Pod:
			if ev.Type == watch.Deleted {
				delete(w.pods, o.UID)
			} else {
				w.pods[o.UID] = o
			}
			var live []string
			for _, p := range w.pods {
				if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
					live = append(live, fmt.Sprintf("%s(node %q, deleting=%v)", p.Name, p.Spec.NodeName, p.DeletionTimestamp != nil))
				}
			}
			if len(live) > 1 {
				w.violations = append(w.violations, fmt.Sprintf("two launcher pods not terminated: %v", live))
			}
		}
		w.mu.Unlock()
	}
}

// history is the phases the VMI with uid went through.
func (w *instanceWatch) history(uid types.UID) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.phases[uid])
}

// check fails the test for every moment with two instances, or a watch that ended before the test.
func (w *instanceWatch) check(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped != nil {
		t.Error(w.stopped)
	}
	for _, v := range w.violations {
		t.Error(v)
	}
}
