package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	kvclient "github.com/kvirt/kvirt/api/client/clientset/versioned"
	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/controller"
	"github.com/kvirt/kvirt/controller/controllertest"
	"github.com/kvirt/kvirt/tests/harness"
	"github.com/kvirt/kvirt/tests/testenv"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

func TestMain(m *testing.M) {
	if kc := os.Getenv(benchControllerEnv); kc != "" {
		// This test binary re-executed by TestScaleBenchmark as the controller process under measurement.
		os.Exit(benchControllerProcess(kc, os.Getenv(benchControllerOutEnv)))
	}
	os.Exit(harness.RunShared(m, harness.Options{ControllerManager: true}))
}

type env struct {
	c          *controller.Controller
	cfg        *rest.Config
	kubeconfig string // admin kubeconfig file of the control plane
	log        *slog.Logger
	workers    int
	stop       func() // stops the running controller
	ns         string
	kube       kubernetes.Interface
	kv         kvclient.Interface
	status     *controllertest.FakeStatusSource
	// notReadyTimeout is the controller's NodeNotReadyTimeout (0: its default); set before runController.
	notReadyTimeout time.Duration

	mu    sync.Mutex
	nodes []string        // nodes the test added (nodeloss_test.go), besides node1
	down  map[string]bool // of those, the ones whose kubelet is gone: the stand-in kubelet ignores them
}

func repoFile(parts ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), "..", ".."}, parts...)...)
}

// start installs the CRDs, runs a controller in-process and a stand-in kubelet for the test's namespace.
func start(t *testing.T) *env { t.Helper(); return startWith(t, 2) }

func startWith(t *testing.T, workers int) *env { t.Helper(); return startEnv(t, workers, true) }

// startEnv prepares a namespace, the stand-in kubelet and (withController) an in-process controller.
func startEnv(t *testing.T, workers int, withController bool) *env {
	t.Helper()
	cp := harness.Shared(t)
	cp.InstallCRDs(t, repoFile("deploy", "crds", "kubevirt.io_virtualmachines.yaml"), repoFile("deploy", "crds", "kubevirt.io_virtualmachineinstances.yaml"))
	fast := rest.CopyConfig(cp.Config) // the stand-in kubelet and the test act for many pods at once
	fast.QPS, fast.Burst = 200, 400
	kube, err := kubernetes.NewForConfig(fast)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{ns: cp.Namespace(t), kube: kube, status: controllertest.NewFakeStatusSource()}
	kv, err := kvclient.NewForConfig(fast)
	if err != nil {
		t.Fatal(err)
	}
	e.kv = kv
	nodeOnce.Do(func() { nodeErr = e.createNode() })
	if nodeErr != nil {
		t.Fatal(nodeErr)
	}
	gcReady.Do(func() { gcReadyErr = e.waitGCKnowsCRDs() })
	if gcReadyErr != nil {
		t.Fatal(gcReadyErr)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	rbacOnce.Do(func() { rbacErr = applyControllerRBAC(cp.Config) })
	if rbacErr != nil {
		t.Fatal(rbacErr)
	}
	e.cfg, e.kubeconfig, e.log, e.workers = cp.Config, cp.Kubeconfig, log, workers
	ctx, cancel := context.WithCancel(context.Background())
	kubeletDone := make(chan struct{})
	go func() { e.kubelet(ctx); close(kubeletDone) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-kubeletDone:
		case <-time.After(15 * time.Second):
			t.Errorf("stand-in kubelet did not stop within 15s")
		}
	})
	if withController {
		e.stop = e.runController(t)
	}
	return e
}

// runController starts a controller (as its ServiceAccount, under leader election) and returns a func that
// stops it and waits; the test's cleanup stops it too.
func (e *env) runController(t *testing.T) (stop func()) {
	t.Helper()
	// The controller runs with its ServiceAccount's permissions only (deploy/rbac), so missing RBAC fails here.
	cfg := rest.CopyConfig(e.cfg)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:kubevirt:virt-controller",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:kubevirt", "system:authenticated"},
	}
	c, err := controller.New(cfg, controller.Options{LauncherImage: "kvirt.io/virt-launcher:dev", Status: e.status, Logger: e.log, Workers: e.workers,
		NodeNotReadyTimeout: e.notReadyTimeout})
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	lkube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := controller.RunWithLeaderElection(ctx, lkube, controller.LeaderElection{Namespace: "kubevirt", Identity: t.Name()}, e.log, func(lctx context.Context) {
			if err := c.Run(lctx); err != nil {
				t.Errorf("controller: %v", err)
			}
		})
		if err != nil {
			t.Errorf("leader election: %v", err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				t.Errorf("controller did not stop within 15s")
			}
		})
	}
	t.Cleanup(stop)
	testenv.Eventually(t, "controller caches synced", 30*time.Second, func() (bool, string) { return c.Ready(), "" })
	return stop
}

var (
	nodeOnce   sync.Once
	nodeErr    error
	rbacOnce   sync.Once
	rbacErr    error
	gcReady    sync.Once
	gcReadyErr error
)

// createNode registers node1, where the stand-in kubelet "runs" launcher pods: without a Node object
// kube-controller-manager's pod GC deletes pods bound to it after ~40 s. The stand-in kubelet renews its
// heartbeat Lease so the node lifecycle controller keeps it Ready, and sets Ready=True again if that
// controller marked it Unknown while no test ran a stand-in (the controller fences VMIs of NotReady
// nodes, nodeloss_test.go).
func (e *env) createNode() error {
	ctx := context.Background()
	now := metav1.Now()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}}
	n, err := e.kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create node1: %w", err)
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}}
	if _, err := e.kube.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("node1 status: %w", err)
	}
	return e.renewNodeLease(ctx, "node1")
}

// renewNodeLease renews (or creates) node's heartbeat Lease, as its kubelet does.
func (e *env) renewNodeLease(ctx context.Context, node string) error {
	leases := e.kube.CoordinationV1().Leases("kube-node-lease")
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		holder, dur := node, int32(40)
		_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: node},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, RenewTime: &now}}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// applyControllerRBAC creates the kubevirt namespace and the objects of deploy/rbac/virt-controller.yaml.
func applyControllerRBAC(cfg *rest.Config) error {
	ctx := context.Background()
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubevirt"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(repoFile("deploy", "rbac", "virt-controller.yaml"))
	if err != nil {
		return err
	}
	resources := map[string]string{"ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings", "Role": "roles", "RoleBinding": "rolebindings"}
	for _, doc := range strings.Split(string(b), "\n---") {
		var u unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			return fmt.Errorf("deploy/rbac/virt-controller.yaml: %w", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		res, ok := resources[u.GetKind()]
		if !ok {
			return fmt.Errorf("deploy/rbac/virt-controller.yaml: unexpected kind %q", u.GetKind())
		}
		gvr := schema.GroupVersionResource{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: res}
		var ri dynamic.ResourceInterface = dyn.Resource(gvr)
		if u.GetNamespace() != "" {
			ri = dyn.Resource(gvr).Namespace(u.GetNamespace())
		}
		if _, err := ri.Create(ctx, &u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	return nil
}

// waitGCKnowsCRDs waits until kube-controller-manager's garbage collector watches the freshly installed
// kinds (its discovery refresh takes up to ~30 s). Before that it would orphan nothing and later collect
// "orphaned" VMIs whose owner it never saw, so every ownership test would race it. The probe: a VMI owned
// by a VM that is then deleted must be collected. No controller runs yet.
func (e *env) waitGCKnowsCRDs() error {
	ctx := context.Background()
	start := time.Now()
	owner, err := e.kv.KubevirtV1().VirtualMachines(e.ns).Create(ctx, controllertest.VM("gc-probe", v1.RunStrategyHalted), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("GC probe VM: %w", err)
	}
	dep := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "gc-probe",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: v1.GroupVersion.String(), Kind: "VirtualMachine", Name: owner.Name, UID: owner.UID}}}}
	dep.Spec = owner.Spec.Template.Spec
	if _, err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("GC probe VMI: %w", err)
	}
	if err := e.kv.KubevirtV1().VirtualMachines(e.ns).Delete(ctx, owner.Name, metav1.DeleteOptions{}); err != nil {
		return fmt.Errorf("GC probe VM delete: %w", err)
	}
	for time.Since(start) < 120*time.Second {
		if _, err := e.getVMI("gc-probe"); apierrors.IsNotFound(err) {
			fmt.Fprintf(os.Stderr, "garbage collector handles kubevirt.io kinds after %v\n", time.Since(start).Round(time.Second))
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return fmt.Errorf("kube-controller-manager's garbage collector did not collect a VMI of a deleted VM within 120 s: is it running (harness.Options.ControllerManager)?")
}

// kubelet plays the node: binds launcher pods to node1, reports them running and ready, and completes
// graceful deletions (there is no kubelet to confirm them).
func (e *env) kubelet(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastBeat := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if time.Since(lastBeat) > 5*time.Second {
			_ = e.renewNodeLease(ctx, "node1")
			_ = e.keepNodeReady(ctx, "node1")
			for _, n := range e.liveNodes() {
				_ = e.renewNodeLease(ctx, n)
			}
			lastBeat = time.Now()
		}
		pods, err := e.kube.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: labels.Set{v1.AppLabel: v1.VirtLauncherValue}.String()})
		if err != nil {
			continue
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Spec.NodeName != "" && e.nodeDown(p.Spec.NodeName) {
				continue // that node's kubelet is gone: nothing reports or finishes its pods
			}
			switch {
			case p.DeletionTimestamp != nil && p.Labels[slowKillLabel] == "true" && time.Now().Before(p.DeletionTimestamp.Time) &&
				p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed:
				// A launcher that has not exited lives until its grace period ends (the kubelet's SIGKILL).
			case p.DeletionTimestamp != nil:
				zero := int64(0)
				_ = e.kube.CoreV1().Pods(e.ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			case p.Labels[unschedulableLabel] == "true":
				if podScheduledFalse(p) {
					continue
				}
				q := p.DeepCopy()
				q.Status.Phase = corev1.PodPending
				q.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
					Message: "0/1 nodes are available: 1 Insufficient devices.kubevirt.io/kvm.", LastTransitionTime: metav1.Now()}}
				_, _ = e.kube.CoreV1().Pods(e.ns).UpdateStatus(ctx, q, metav1.UpdateOptions{})
			case p.Spec.NodeName == "":
				target := "node1"
				if n := p.Labels[nodeLabel]; n != "" && !e.nodeDown(n) {
					target = n
				}
				_ = e.kube.CoreV1().Pods(e.ns).Bind(ctx, &corev1.Binding{
					ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: e.ns},
					Target:     corev1.ObjectReference{Kind: "Node", Name: target},
				}, metav1.CreateOptions{})
			case p.Status.Phase != corev1.PodRunning && p.Status.Phase != corev1.PodFailed && p.Status.Phase != corev1.PodSucceeded:
				q := p.DeepCopy()
				now := metav1.Now()
				q.Status.Phase = corev1.PodRunning
				q.Status.PodIP = "10.244.0.9"
				q.Status.PodIPs = []corev1.PodIP{{IP: "10.244.0.9"}}
				q.Status.Conditions = append(q.Status.Conditions,
					corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
					corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now})
				q.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: controller.LauncherContainerName, Ready: true, Image: p.Spec.Containers[0].Image,
					State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}
				_, _ = e.kube.CoreV1().Pods(e.ns).UpdateStatus(ctx, q, metav1.UpdateOptions{})
			}
		}
	}
}

// slowKillLabel on a VMI (and so on its pod) makes the stand-in kubelet finish the pod's deletion only once
// its launcher exited (the test sets the pod Succeeded or Failed) or its grace period ended, as a kubelet
// does; without it deletions complete at once.
const slowKillLabel = "test.kvirt.io/slow-kill"

// unschedulableLabel on a VMI (and so on its pod) makes the stand-in scheduler report it Unschedulable.
const unschedulableLabel = "test.kvirt.io/unschedulable"

// nodeLabel on a VMI (and so on its pod) makes the stand-in scheduler bind its pod to that node while
// the node is up (else to node1, as a scheduler avoids a NotReady node).
const nodeLabel = "test.kvirt.io/node"

func podScheduledFalse(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return true
		}
	}
	return false
}

func (e *env) createVM(t *testing.T, vm *v1.VirtualMachine) *v1.VirtualMachine {
	t.Helper()
	out, err := e.kv.KubevirtV1().VirtualMachines(e.ns).Create(context.Background(), vm, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create VM: %v", err)
	}
	return out
}

func (e *env) getVM(t *testing.T, name string) *v1.VirtualMachine {
	t.Helper()
	vm, err := e.kv.KubevirtV1().VirtualMachines(e.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get VM: %v", err)
	}
	return vm
}

func (e *env) getVMI(name string) (*v1.VirtualMachineInstance, error) {
	return e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Get(context.Background(), name, metav1.GetOptions{})
}

func (e *env) vmiCount(t *testing.T) int {
	t.Helper()
	l, err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return len(l.Items)
}

// patchSpec merge-patches the VM spec, as `virtctl start|stop` does for Always/Halted.
func (e *env) setRunStrategy(t *testing.T, name string, s v1.VirtualMachineRunStrategy) {
	t.Helper()
	body := fmt.Sprintf(`{"spec":{"runStrategy":%q}}`, s)
	if _, err := e.kv.KubevirtV1().VirtualMachines(e.ns).Patch(context.Background(), name, types.MergePatchType, []byte(body), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch runStrategy: %v", err)
	}
}

// addRequests writes stateChangeRequests with virt-api's test-and-add status JSON patch.
func (e *env) addRequests(t *testing.T, name string, reqs []v1.VirtualMachineStateChangeRequest) {
	t.Helper()
	b, _ := json.Marshal(reqs)
	for i := 0; i < 10; i++ {
		vm := e.getVM(t, name)
		var patch string
		if len(vm.Status.StateChangeRequests) == 0 {
			patch = fmt.Sprintf(`[{"op":"test","path":"/status/stateChangeRequests","value":null},{"op":"add","path":"/status/stateChangeRequests","value":%s}]`, b)
		} else {
			t.Fatalf("requests already pending: %+v", vm.Status.StateChangeRequests)
		}
		_, err := e.kv.KubevirtV1().VirtualMachines(e.ns).Patch(context.Background(), name, types.JSONPatchType, []byte(patch), metav1.PatchOptions{}, "status")
		if err == nil {
			return
		}
		t.Logf("status patch: %v (retrying)", err)
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("could not add stateChangeRequests")
}

func (e *env) vmiPhase(name string, phase v1.VirtualMachineInstancePhase) func() (bool, string) {
	return func() (bool, string) {
		vmi, err := e.getVMI(name)
		if err != nil {
			return false, err.Error()
		}
		return vmi.Status.Phase == phase, fmt.Sprintf("phase %q", vmi.Status.Phase)
	}
}

func (e *env) vmiGone(name string) func() (bool, string) {
	return func() (bool, string) {
		vmi, err := e.getVMI(name)
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return false, fmt.Sprintf("VMI %s phase %s deleting=%v finalizers=%v", vmi.UID, vmi.Status.Phase, vmi.DeletionTimestamp != nil, vmi.Finalizers)
	}
}

func (e *env) printable(t *testing.T, name string, want v1.VirtualMachinePrintableStatus) func() (bool, string) {
	return func() (bool, string) {
		vm := e.getVM(t, name)
		return vm.Status.PrintableStatus == want, fmt.Sprintf("printableStatus %q startFailure %+v conditions %+v", vm.Status.PrintableStatus, vm.Status.StartFailure, vm.Status.Conditions)
	}
}

// runGuest makes the launcher of name report a running guest once its VMI is Scheduled.
func (e *env) runGuest(t *testing.T, name string) *v1.VirtualMachineInstance {
	t.Helper()
	testenv.Eventually(t, "VMI "+name+" Scheduled", 30*time.Second, e.vmiPhase(name, v1.Scheduled))
	e.status.Set(e.ns, name, controller.LauncherState{Phase: controller.GuestRunning})
	testenv.Eventually(t, "VMI "+name+" Running", 30*time.Second, e.vmiPhase(name, v1.Running))
	vmi, err := e.getVMI(name)
	if err != nil {
		t.Fatal(err)
	}
	return vmi
}

func TestHaltedStartStopRestart(t *testing.T) {
	e := start(t)
	e.createVM(t, controllertest.VM("vm", v1.RunStrategyHalted))
	testenv.Eventually(t, "Halted VM Stopped with the finalizer", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "vm")
		c := vm.Status.Condition(v1.VirtualMachineReady)
		ok := vm.Status.PrintableStatus == v1.VirtualMachineStatusStopped && c != nil && c.Reason == v1.VMINotExistsReason &&
			len(vm.Finalizers) == 1 && vm.Spec.Template.Spec.Domain.Firmware != nil && vm.Spec.Template.Spec.Domain.Firmware.UUID != ""
		return ok, fmt.Sprintf("%+v finalizers %v", vm.Status, vm.Finalizers)
	})
	if n := e.vmiCount(t); n != 0 {
		t.Fatalf("Halted VM has %d VMIs", n)
	}

	// start (virtctl patches Halted → Always).
	e.setRunStrategy(t, "vm", v1.RunStrategyAlways)
	first := e.runGuest(t, "vm")
	testenv.Eventually(t, "VM Running and Ready", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "vm")
		return vm.Status.PrintableStatus == v1.VirtualMachineStatusRunning && vm.Status.Ready && vm.Status.RunStrategy == v1.RunStrategyAlways, fmt.Sprintf("%+v", vm.Status)
	})
	if first.Status.NodeName != "node1" || first.Labels[v1.NodeNameLabel] != "node1" || len(first.Status.Interfaces) == 0 || first.Status.Interfaces[0].IP != "10.244.0.9" {
		t.Fatalf("VMI status %+v labels %v", first.Status, first.Labels)
	}

	testenv.Eventually(t, "launcher pod readiness gate True", 30*time.Second, func() (bool, string) {
		pods, err := e.kube.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: labels.Set{v1.CreatedByLabel: string(first.UID)}.String()})
		if err != nil || len(pods.Items) != 1 {
			return false, fmt.Sprintf("pods %v err %v", pods, err)
		}
		for _, c := range pods.Items[0].Status.Conditions {
			if c.Type == v1.VirtualMachineUnpausedPodCondition {
				return c.Status == corev1.ConditionTrue, string(c.Status)
			}
		}
		return false, "no gate condition"
	})

	// stop (virtctl patches Always → Halted): VMI deleted gracefully, then gone.
	e.setRunStrategy(t, "vm", v1.RunStrategyHalted)
	testenv.Eventually(t, "VMI deleted", 30*time.Second, e.vmiGone("vm"))
	testenv.Eventually(t, "VM Stopped", 30*time.Second, e.printable(t, "vm", v1.VirtualMachineStatusStopped))

	// restart on Manual: [Stop{uid}, Start] → a new VMI.
	e.setRunStrategy(t, "vm", v1.RunStrategyManual)
	e.addRequests(t, "vm", []v1.VirtualMachineStateChangeRequest{{Action: v1.StartRequest}})
	second := e.runGuest(t, "vm")
	if second.UID == first.UID {
		t.Fatal("start reused the old VMI")
	}
	testenv.Eventually(t, "Start request trimmed", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "vm")
		return len(vm.Status.StateChangeRequests) == 0, fmt.Sprintf("%+v", vm.Status.StateChangeRequests)
	})
	uid := second.UID
	e.addRequests(t, "vm", []v1.VirtualMachineStateChangeRequest{{Action: v1.StopRequest, UID: &uid}, {Action: v1.StartRequest}})
	testenv.Eventually(t, "restarted VMI (new UID)", 60*time.Second, func() (bool, string) {
		vmi, err := e.getVMI("vm")
		if err != nil {
			return false, err.Error()
		}
		return vmi.UID != second.UID && vmi.DeletionTimestamp == nil, fmt.Sprintf("uid %s phase %s", vmi.UID, vmi.Status.Phase)
	})
	third := e.runGuest(t, "vm")
	if third.UID == second.UID {
		t.Fatal("restart kept the VMI")
	}
	testenv.Eventually(t, "requests trimmed after restart", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "vm")
		return len(vm.Status.StateChangeRequests) == 0, fmt.Sprintf("%+v", vm.Status.StateChangeRequests)
	})
}

func TestAlwaysFailedVMIBackoff(t *testing.T) {
	e := start(t)
	e.createVM(t, controllertest.VM("crashy", v1.RunStrategyAlways))
	testenv.Eventually(t, "VMI Scheduled", 30*time.Second, e.vmiPhase("crashy", v1.Scheduled))
	first, err := e.getVMI("crashy")
	if err != nil {
		t.Fatal(err)
	}
	// The test fails the VMI before it ever ran (as the VMI controller would on a launcher failure).
	first.Status.Phase = v1.Failed
	first.Status.Reason = "TestFailed"
	if _, err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).UpdateStatus(context.Background(), first, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	failedAt := time.Now()
	testenv.Eventually(t, "CrashLoopBackOff", 30*time.Second, e.printable(t, "crashy", v1.VirtualMachineStatusCrashLoopBackOff))
	vm := e.getVM(t, "crashy")
	sf := vm.Status.StartFailure
	if sf == nil || sf.ConsecutiveFailCount != 1 || sf.LastFailedVMIUID != first.UID || sf.RetryAfterTimestamp == nil {
		t.Fatalf("startFailure %+v", sf)
	}
	// No VMI is created during the backoff (10–15 s); one is created after it.
	testenv.Eventually(t, "recreated VMI", 40*time.Second, func() (bool, string) {
		vmi, err := e.getVMI("crashy")
		if err != nil {
			return false, err.Error()
		}
		if vmi.UID != first.UID && vmi.DeletionTimestamp == nil {
			return true, ""
		}
		vm := e.getVM(t, "crashy")
		if vm.Status.PrintableStatus != v1.VirtualMachineStatusCrashLoopBackOff && vm.Status.PrintableStatus != v1.VirtualMachineStatusStopping {
			return false, "printableStatus " + string(vm.Status.PrintableStatus)
		}
		return false, "old VMI"
	})
	vmi, _ := e.getVMI("crashy")
	if d := vmi.CreationTimestamp.Sub(failedAt); d < 9*time.Second {
		t.Fatalf("VMI recreated %v after the failure, before the 10 s backoff", d)
	}
	// Once the new VMI runs, the failure record is cleared.
	e.runGuest(t, "crashy")
	testenv.Eventually(t, "startFailure cleared", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "crashy")
		return vm.Status.StartFailure == nil && vm.Status.PrintableStatus == v1.VirtualMachineStatusRunning, fmt.Sprintf("%+v", vm.Status)
	})
}

func TestDeleteVMCascades(t *testing.T) {
	e := start(t)
	e.createVM(t, controllertest.VM("doomed", v1.RunStrategyAlways))
	e.runGuest(t, "doomed")
	if err := e.kv.KubevirtV1().VirtualMachines(e.ns).Delete(context.Background(), "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "VMI gone", 60*time.Second, e.vmiGone("doomed"))
	testenv.Eventually(t, "VM gone", 60*time.Second, func() (bool, string) {
		vm, err := e.kv.KubevirtV1().VirtualMachines(e.ns).Get(context.Background(), "doomed", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return false, fmt.Sprintf("finalizers %v status %s", vm.Finalizers, vm.Status.PrintableStatus)
	})
	testenv.Eventually(t, "launcher pods and token secret gone", 60*time.Second, func() (bool, string) {
		pods, _ := e.kube.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{})
		secrets, _ := e.kube.CoreV1().Secrets(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: labels.Set{v1.AppLabel: controller.TokenSecretLabelValue}.String()})
		return len(pods.Items) == 0 && len(secrets.Items) == 0, fmt.Sprintf("%d pods %d secrets", len(pods.Items), len(secrets.Items))
	})
}

func TestOrphanDeleteThenAdopt(t *testing.T) {
	e := start(t)
	orig := e.createVM(t, controllertest.VM("keeper", v1.RunStrategyAlways))
	vmi := e.runGuest(t, "keeper")
	orphan := metav1.DeletePropagationOrphan
	if err := e.kv.KubevirtV1().VirtualMachines(e.ns).Delete(context.Background(), "keeper", metav1.DeleteOptions{PropagationPolicy: &orphan}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "VM gone, VMI orphaned", 60*time.Second, func() (bool, string) {
		_, err := e.kv.KubevirtV1().VirtualMachines(e.ns).Get(context.Background(), "keeper", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return false, fmt.Sprintf("VM still there (%v)", err)
		}
		v, err := e.getVMI("keeper")
		if err != nil {
			return false, err.Error()
		}
		return v.UID == vmi.UID && metav1.GetControllerOf(v) == nil && v.DeletionTimestamp == nil, fmt.Sprintf("owners %v", v.OwnerReferences)
	})
	// Re-create the VM: it adopts the running VMI instead of creating another.
	again := e.createVM(t, controllertest.VM("keeper", v1.RunStrategyAlways))
	if again.UID == orig.UID {
		t.Fatal("same VM UID")
	}
	testenv.Eventually(t, "VMI adopted", 30*time.Second, func() (bool, string) {
		v, err := e.getVMI("keeper")
		if err != nil {
			return false, err.Error()
		}
		ref := metav1.GetControllerOf(v)
		return v.UID == vmi.UID && ref != nil && ref.UID == again.UID, fmt.Sprintf("uid %s owners %v", v.UID, v.OwnerReferences)
	})
	testenv.Eventually(t, "adopted VM Running", 30*time.Second, e.printable(t, "keeper", v1.VirtualMachineStatusRunning))
	if n := e.vmiCount(t); n != 1 {
		t.Fatalf("%d VMIs after adoption, want 1", n)
	}
	if v, _ := e.getVMI("keeper"); v.UID != vmi.UID {
		t.Fatal("the VMI was replaced instead of adopted")
	}
}

func TestRunningAndRunStrategyRejected(t *testing.T) {
	e := start(t)
	vm := controllertest.VM("both", v1.RunStrategyAlways)
	yes := true
	vm.Spec.Running = &yes
	_, err := e.kv.KubevirtV1().VirtualMachines(e.ns).Create(context.Background(), vm, metav1.CreateOptions{})
	if err == nil {
		t.Fatal("a VM with both running and runStrategy was accepted")
	}
	if !strings.Contains(err.Error(), "Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead") {
		t.Fatalf("error %q lacks KubeVirt's message", err)
	}
}

func TestUnschedulableShowsOnVM(t *testing.T) {
	e := start(t)
	vm := controllertest.VM("nospace", v1.RunStrategyAlways)
	vm.Spec.Template.ObjectMeta.Labels[unschedulableLabel] = "true"
	e.createVM(t, vm)
	testenv.Eventually(t, "ErrorUnschedulable", 30*time.Second, e.printable(t, "nospace", v1.VirtualMachineStatusUnschedulable))
	got := e.getVM(t, "nospace")
	c := got.Status.Condition(v1.VirtualMachineConditionType(v1.VirtualMachineInstancePodScheduled))
	if c == nil || c.Status != corev1.ConditionFalse || c.Reason != "Unschedulable" || !strings.Contains(c.Message, "Insufficient") {
		t.Fatalf("PodScheduled not mirrored to the VM: %+v", got.Status.Conditions)
	}
	if vmi, _ := e.getVMI("nospace"); vmi.Status.Phase != v1.Scheduling {
		t.Fatalf("VMI phase %s, want Scheduling", vmi.Status.Phase)
	}
}

func TestStandaloneVMIPauseAndDelete(t *testing.T) {
	e := start(t)
	tmpl := controllertest.VM("solo", v1.RunStrategyAlways).Spec.Template
	vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "solo", Labels: map[string]string{"app": "solo"}}, Spec: tmpl.Spec}
	if _, err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Create(context.Background(), vmi, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	running := e.runGuest(t, "solo")
	if !slices.Contains(running.Finalizers, v1.VirtualMachineInstanceFinalizer) {
		t.Fatalf("finalizers %v", running.Finalizers)
	}
	pods, err := e.kube.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: "vmi.kubevirt.io/id=solo"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("launcher pods %v err %v", pods, err)
	}
	pod := pods.Items[0]
	if pod.Labels["app"] != "solo" || !strings.HasPrefix(pod.Name, "virt-launcher-solo-") || metav1.GetControllerOf(&pod).UID != running.UID {
		t.Fatalf("pod %s labels %v owners %v", pod.Name, pod.Labels, pod.OwnerReferences)
	}
	if len(running.Status.PhaseTransitionTimestamps) < 3 {
		t.Fatalf("phaseTransitionTimestamps %+v", running.Status.PhaseTransitionTimestamps)
	}

	e.status.Set(e.ns, "solo", controller.LauncherState{Phase: controller.GuestRunning, Paused: true})
	testenv.Eventually(t, "Paused=True and Ready=False", 30*time.Second, func() (bool, string) {
		v, err := e.getVMI("solo")
		if err != nil {
			return false, err.Error()
		}
		p := v.Status.Condition(v1.VirtualMachineInstancePaused)
		return p != nil && p.Status == corev1.ConditionTrue && p.Reason == "PausedByUser" && p.Message == "VMI was paused by user" &&
			v.Status.HasCondition(v1.VirtualMachineInstanceReady, corev1.ConditionFalse) && v.Status.Phase == v1.Running, fmt.Sprintf("%+v", v.Status.Conditions)
	})
	e.status.Set(e.ns, "solo", controller.LauncherState{Phase: controller.GuestRunning})
	testenv.Eventually(t, "unpaused and Ready", 30*time.Second, func() (bool, string) {
		v, _ := e.getVMI("solo")
		return v.Status.Condition(v1.VirtualMachineInstancePaused) == nil && v.Status.HasCondition(v1.VirtualMachineInstanceReady, corev1.ConditionTrue), fmt.Sprintf("%+v", v.Status.Conditions)
	})

	// Deleting the VMI deletes its pod (gracefully: the stand-in kubelet completes it) and then the VMI.
	if err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Delete(context.Background(), "solo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "VMI gone", 30*time.Second, e.vmiGone("solo"))
	if _, err := e.kube.CoreV1().Pods(e.ns).Get(context.Background(), pod.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("launcher pod still there after its VMI was deleted: %v", err)
	}
}

// TestControllerRestartKeepsOneVMI stops the controller right after it created a VMI (its expectations
// die with it) and starts a fresh one: the new controller must adopt the state it finds, not create
// another launcher pod or replace the VMI.
func TestControllerRestartKeepsOneVMI(t *testing.T) {
	e := start(t)
	e.createVM(t, controllertest.VM("phoenix", v1.RunStrategyAlways))
	testenv.Eventually(t, "VMI with a pod", 30*time.Second, func() (bool, string) {
		vmi, err := e.getVMI("phoenix")
		if err != nil {
			return false, err.Error()
		}
		return vmi.Status.Phase == v1.Scheduling || vmi.Status.Phase == v1.Scheduled, string(vmi.Status.Phase)
	})
	before, _ := e.getVMI("phoenix")
	e.stop()
	e.stop = e.runController(t)
	e.runGuest(t, "phoenix")
	time.Sleep(2 * time.Second) // a duplicate would be created right after the caches synced
	after, err := e.getVMI("phoenix")
	if err != nil {
		t.Fatal(err)
	}
	if after.UID != before.UID {
		t.Fatalf("VMI replaced across the restart (uid %s → %s)", before.UID, after.UID)
	}
	pods, err := e.kube.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: labels.Set{v1.CreatedByLabel: string(before.UID)}.String()})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("%d launcher pods after the restart (err %v), want 1", len(pods.Items), err)
	}
	secrets, err := e.kube.CoreV1().Secrets(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: labels.Set{v1.CreatedByLabel: string(before.UID)}.String()})
	if err != nil || len(secrets.Items) != 1 {
		t.Fatalf("%d token secrets after the restart (err %v), want 1", len(secrets.Items), err)
	}
}

// The VM controller deletes a VMI with the resourceVersion it decided on as a precondition (a stale
// cache must not delete a VMI the garbage collector released from an orphaned VM); the real apiserver
// enforces that precondition for the VMI custom resource.
func TestStaleVMIDeleteRefused(t *testing.T) {
	e := startEnv(t, 1, false)
	ctx := context.Background()
	vmis := e.kv.KubevirtV1().VirtualMachineInstances(e.ns)
	old, err := vmis.Create(ctx, &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "stale", Labels: map[string]string{"v": "1"}},
		Spec: controllertest.VM("stale", v1.RunStrategyAlways).Spec.Template.Spec}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	upd := old.DeepCopy()
	upd.Labels["v"] = "2"
	if upd, err = vmis.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = vmis.Delete(ctx, "stale", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &old.UID, ResourceVersion: &old.ResourceVersion}})
	if !apierrors.IsConflict(err) {
		t.Fatalf("delete with the old resourceVersion: %v, want Conflict", err)
	}
	if _, err := vmis.Get(ctx, "stale", metav1.GetOptions{}); err != nil {
		t.Fatalf("VMI gone after a refused delete: %v", err)
	}
	if err := vmis.Delete(ctx, "stale", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &upd.UID, ResourceVersion: &upd.ResourceVersion}}); err != nil {
		t.Fatalf("delete with the current resourceVersion: %v", err)
	}
}

// RerunOnFailure end to end: a VMI that ran and then failed is replaced (its Start written first and
// consumed by the new VMI, no start failure); after a clean power-off the VM stays stopped.
func TestRerunOnFailureRerunsFailures(t *testing.T) {
	e := start(t)
	e.createVM(t, controllertest.VM("rerun", v1.RunStrategyRerunOnFailure))
	first := e.runGuest(t, "rerun")
	e.status.Set(e.ns, "rerun", controller.LauncherState{Phase: controller.GuestFailed, Reason: "Crashed"})
	testenv.Eventually(t, "a second VMI", 60*time.Second, func() (bool, string) {
		vmi, err := e.getVMI("rerun")
		if err != nil {
			return false, err.Error()
		}
		return vmi.UID != first.UID && vmi.DeletionTimestamp == nil, fmt.Sprintf("uid %s phase %s", vmi.UID, vmi.Status.Phase)
	})
	second := e.runGuest(t, "rerun")
	testenv.Eventually(t, "Start consumed, no start failure", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "rerun")
		return len(vm.Status.StateChangeRequests) == 0 && vm.Status.StartFailure == nil, fmt.Sprintf("%+v", vm.Status)
	})
	e.status.Set(e.ns, "rerun", controller.LauncherState{Phase: controller.GuestSucceeded, Reason: "Shutdown"})
	testenv.Eventually(t, "VM Stopped without a VMI", 60*time.Second, func() (bool, string) {
		ok, detail := e.vmiGone("rerun")()
		vm := e.getVM(t, "rerun")
		return ok && vm.Status.PrintableStatus == v1.VirtualMachineStatusStopped, fmt.Sprintf("%s; printableStatus %s", detail, vm.Status.PrintableStatus)
	})
	if vmi, err := e.getVMI("rerun"); err == nil {
		t.Fatalf("RerunOnFailure reran VMI %s after %s succeeded", vmi.UID, second.UID)
	}
}

// A launcher pod that disappears fails its VMI (PodGone); Manual keeps the final VMI, which gets no new
// pod, and its launcher is no longer watched.
func TestPodGoneFailsVMI(t *testing.T) {
	e := start(t)
	e.createVM(t, controllertest.VM("gone", v1.RunStrategyManual))
	e.addRequests(t, "gone", []v1.VirtualMachineStateChangeRequest{{Action: v1.StartRequest}})
	vmi := e.runGuest(t, "gone")
	testenv.Eventually(t, "the launcher watched", 30*time.Second, func() (bool, string) {
		return e.status.Watching(e.ns, "gone") == 1, fmt.Sprintf("%d watches", e.status.Watching(e.ns, "gone"))
	})
	sel := metav1.ListOptions{LabelSelector: labels.Set{v1.CreatedByLabel: string(vmi.UID)}.String()}
	pods, err := e.kube.CoreV1().Pods(e.ns).List(context.Background(), sel)
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods %v err %v", pods, err)
	}
	zero := int64(0)
	if err := e.kube.CoreV1().Pods(e.ns).Delete(context.Background(), pods.Items[0].Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "VMI Failed with PodGone", 30*time.Second, func() (bool, string) {
		v, err := e.getVMI("gone")
		if err != nil {
			return false, err.Error()
		}
		return v.Status.Phase == v1.Failed && v.Status.Reason == controller.ReasonPodGone, fmt.Sprintf("phase %s reason %q", v.Status.Phase, v.Status.Reason)
	})
	testenv.Eventually(t, "VM Stopped, launcher no longer watched", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "gone")
		w := e.status.Watching(e.ns, "gone")
		return vm.Status.PrintableStatus == v1.VirtualMachineStatusStopped && w == 0, fmt.Sprintf("printableStatus %s, %d watches", vm.Status.PrintableStatus, w)
	})
	if pods, err := e.kube.CoreV1().Pods(e.ns).List(context.Background(), sel); err != nil || len(pods.Items) != 0 {
		t.Fatalf("a pod was recreated for a final VMI: %v (err %v)", pods.Items, err)
	}
	if v, err := e.getVMI("gone"); err != nil || v.UID != vmi.UID {
		t.Fatalf("Manual did not keep its final VMI: %v", err)
	}
}
