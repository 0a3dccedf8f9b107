package controller_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	kvfake "github.com/kvirt/kvirt/api/client/clientset/versioned/fake"
	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/controller"
	"github.com/kvirt/kvirt/controller/controllertest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
)

// The tests of this file and vmisync_test.go follow client-go's sample-controller: a controller that is
// not running (newFixture), its informer caches filled by the test, one sync, and assertions on the API
// calls it made (the fake clientsets' actions, in order) and on the objects they left. Scenarios that
// need the loops running (informer events, requeues, the garbage collector) are in controller/integration,
// against a real kube-apiserver. Row names cite docs/BEHAVIOUR.md.

const ns = "default"

// fixture is one controller on fake clientsets, with its caches filled by the test.
type fixture struct {
	t      *testing.T
	kube   *kubefake.Clientset
	kv     *kvfake.Clientset
	status *controllertest.FakeStatusSource
	c      *controller.Controller
	caches controller.Caches
	events *record.FakeRecorder
	now    time.Time

	mu      sync.Mutex
	calls   []string // API calls of the last sync, in order, as "verb resource[/subresource]"
	syncing bool
	synced  []string // "verb group/resource[/subresource]" of every call a sync made
}

var fakeSeq atomic.Int64

// nameAndUID fills generateName, UID, resourceVersion and creationTimestamp on create, as the apiserver does.
func nameAndUID(action k8stesting.Action) (bool, runtime.Object, error) {
	obj := action.(k8stesting.CreateAction).GetObject()
	m, err := meta.Accessor(obj)
	if err != nil {
		return false, nil, nil
	}
	n := fakeSeq.Add(1)
	if m.GetName() == "" && m.GetGenerateName() != "" {
		m.SetName(fmt.Sprintf("%s%05d", m.GetGenerateName(), n))
	}
	if m.GetUID() == "" {
		m.SetUID(types.UID(fmt.Sprintf("uid-%d", n)))
	}
	if ct := m.GetCreationTimestamp(); ct.IsZero() {
		m.SetCreationTimestamp(metav1.NewTime(time.Unix(n, 0)))
	}
	m.SetResourceVersion(fmt.Sprint(n))
	return false, nil, nil
}

// apiserverRules gives the fake tracker the apiserver's resourceVersion rules for kubevirt.io objects:
// every write gets a new resourceVersion, an update based on an older one is a Conflict, and a delete
// whose UID or resourceVersion precondition fails is a Conflict.
func apiserverRules(tracker k8stesting.ObjectTracker) k8stesting.ReactionFunc {
	def := k8stesting.ObjectReaction(tracker)
	return func(action k8stesting.Action) (bool, runtime.Object, error) {
		gvr, namespace := action.GetResource(), action.GetNamespace()
		switch a := action.(type) {
		case k8stesting.UpdateAction:
			m, err := meta.Accessor(a.GetObject())
			if err != nil {
				return false, nil, nil
			}
			cur, err := tracker.Get(gvr, namespace, m.GetName())
			if err != nil {
				return false, nil, nil
			}
			cm, _ := meta.Accessor(cur)
			if rv := m.GetResourceVersion(); rv != "" && rv != cm.GetResourceVersion() {
				return true, nil, apierrors.NewConflict(gvr.GroupResource(), m.GetName(), fmt.Errorf("the object has been modified (resourceVersion %s, now %s)", rv, cm.GetResourceVersion()))
			}
			m.SetResourceVersion(fmt.Sprint(fakeSeq.Add(1)))
			return def(action)
		case k8stesting.PatchAction:
			handled, obj, err := def(action)
			if err != nil || obj == nil {
				return handled, obj, err
			}
			m, _ := meta.Accessor(obj)
			m.SetResourceVersion(fmt.Sprint(fakeSeq.Add(1)))
			if err := tracker.Update(gvr, obj, namespace); err != nil {
				return true, nil, err
			}
			return true, obj, nil
		case k8stesting.DeleteAction:
			pre := a.GetDeleteOptions().Preconditions
			cur, err := tracker.Get(gvr, namespace, a.GetName())
			if err != nil || pre == nil {
				return false, nil, nil
			}
			m, _ := meta.Accessor(cur)
			if (pre.UID != nil && *pre.UID != m.GetUID()) || (pre.ResourceVersion != nil && *pre.ResourceVersion != m.GetResourceVersion()) {
				return true, nil, apierrors.NewConflict(gvr.GroupResource(), a.GetName(), fmt.Errorf("precondition failed"))
			}
		}
		return false, nil, nil
	}
}

// newFixture builds a controller on fake clientsets that is not running; podIPFree: the status source
// reaches launchers by pod name (as pods/portforward does) instead of by pod IP.
func newFixture(t *testing.T, podIPFree bool) *fixture {
	t.Helper()
	f := &fixture{t: t, kube: kubefake.NewClientset(), kv: kvfake.NewSimpleClientset(), status: controllertest.NewFakeStatusSource(),
		now: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
	f.status.PodIPFree = podIPFree
	f.kube.PrependReactor("create", "*", nameAndUID)
	f.kv.PrependReactor("create", "*", nameAndUID)
	for _, verb := range []string{"update", "patch", "delete"} {
		f.kv.PrependReactor(verb, "*", apiserverRules(f.kv.Tracker()))
	}
	record := func(a k8stesting.Action) (bool, runtime.Object, error) {
		s := a.GetVerb() + " " + a.GetResource().Resource
		if sub := a.GetSubresource(); sub != "" {
			s += "/" + sub
		}
		f.mu.Lock()
		f.calls = append(f.calls, s)
		if f.syncing { // not the fixture's own calls
			f.synced = append(f.synced, a.GetVerb()+" "+a.GetResource().Group+"/"+strings.TrimPrefix(s, a.GetVerb()+" "))
		}
		f.mu.Unlock()
		return false, nil, nil
	}
	f.kube.PrependReactor("*", "*", record)
	f.kv.PrependReactor("*", "*", record)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := controller.NewWithClients(f.kube, f.kv, controller.Options{LauncherImage: "kvirt/virt-launcher:test", Status: f.status, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	c.SetClock(f.now)
	f.events = c.UseFakeRecorder()
	t.Cleanup(c.StopWatchers)
	t.Cleanup(f.checkGranted)
	f.c, f.caches = c, c.Caches()
	// node1, where the tests' launcher pods are bound, is Ready.
	node1 := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(f.now.Add(-time.Hour))}}}}
	if err := f.caches.Nodes.Add(node1); err != nil {
		t.Fatal(err)
	}
	return f
}

// checkGranted fails the test if a sync called the API in a way deploy/rbac/virt-controller.yaml does
// not grant (the deployed controller would get 403).
func (f *fixture) checkGranted() {
	grants := controllerGrants(f.t)
	for _, c := range slices.Compact(slices.Sorted(slices.Values(f.synced))) {
		if !grants[c] {
			f.t.Errorf("the controller calls %q, which deploy/rbac/virt-controller.yaml does not grant", c)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// addVM stores vm through the API (which names it and gives it a UID) and in the cache, as an informer
// would have; it returns the stored VM.
func (f *fixture) addVM(vm *v1.VirtualMachine) *v1.VirtualMachine {
	f.t.Helper()
	vm = vm.DeepCopy()
	vm.Namespace = ns
	out, err := f.kv.KubevirtV1().VirtualMachines(ns).Create(context.Background(), vm, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.caches.VMs.Add(out); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// settledVM is a VM as the VM controller leaves it after its first sync: with its finalizer, UID,
// firmware UUID and serial and MAC, so a sync has nothing to patch.
func settledVM(name string, strategy v1.VirtualMachineRunStrategy) *v1.VirtualMachine {
	vm := controllertest.VM(name, strategy)
	vm.UID = types.UID("vm-uid-" + name)
	vm.Finalizers = []string{v1.VirtualMachineControllerFinalizer}
	vm.Spec.Template.Spec.Domain.Firmware = &v1.Firmware{UUID: controller.LegacyFirmwareUUID(name), Serial: "serial-" + name}
	vm.Spec.Template.Spec.Domain.Devices.Interfaces[0].MacAddress = controller.StableMAC(vm.UID, "default")
	return vm
}

// addVMI stores vmi through the API and in the cache.
func (f *fixture) addVMI(vmi *v1.VirtualMachineInstance) *v1.VirtualMachineInstance {
	f.t.Helper()
	vmi = vmi.DeepCopy()
	vmi.Namespace = ns
	out, err := f.kv.KubevirtV1().VirtualMachineInstances(ns).Create(context.Background(), vmi, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.caches.VMIs.Add(out); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// randomUUID reports whether s is a random (version 4) UUID.
func randomUUID(s string) bool {
	u, err := uuid.Parse(s)
	return err == nil && u.Version() == 4
}

// vmiOf is the VMI vm would create, in phase (with a Running transition if ran).
func vmiOf(vm *v1.VirtualMachine, phase v1.VirtualMachineInstancePhase, ran bool) *v1.VirtualMachineInstance {
	vmi := controllertest.VMI(vm.Name)
	vmi.Spec = vm.Spec.Template.Spec
	vmi.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(vm, v1.VirtualMachineGroupVersionKind)}
	vmi.Finalizers = []string{v1.VirtualMachineControllerFinalizer, v1.VirtualMachineInstanceFinalizer}
	vmi.Status.Phase = phase
	if ran {
		vmi.Status.PhaseTransitionTimestamps = []v1.VirtualMachineInstancePhaseTransitionTimestamp{{Phase: v1.Running}, {Phase: phase}}
	}
	return vmi
}

// sync clears the recorded actions and runs one sync of kind ("vm" or "vmi") for name.
func (f *fixture) sync(kind, name string) (time.Duration, error) {
	f.t.Helper()
	f.kv.ClearActions()
	f.kube.ClearActions()
	f.mu.Lock()
	f.calls, f.syncing = nil, true
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.syncing = false; f.mu.Unlock() }()
	if kind == "vm" {
		return f.c.SyncVM(context.Background(), ns+"/"+name)
	}
	return f.c.SyncVMI(context.Background(), ns+"/"+name)
}

// mustSync is sync that fails the test on an error.
func (f *fixture) mustSync(kind, name string) time.Duration {
	f.t.Helper()
	d, err := f.sync(kind, name)
	if err != nil {
		f.t.Fatalf("sync %s %s: %v", kind, name, err)
	}
	return d
}

// actions lists the API calls of the last sync, in order, as "verb resource[/subresource]".
func (f *fixture) actions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fixture) wantActions(want ...string) {
	f.t.Helper()
	if got := f.actions(); !slices.Equal(got, want) {
		f.t.Fatalf("API calls:\n  got  %q\n  want %q", got, want)
	}
}

// recorded returns the events recorded so far ("Type Reason Message").
func (f *fixture) recorded() []string {
	var out []string
	for {
		select {
		case e := <-f.events.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func (f *fixture) wantEvent(prefix string) {
	f.t.Helper()
	evs := f.recorded()
	if !slices.ContainsFunc(evs, func(e string) bool { return strings.HasPrefix(e, prefix) }) {
		f.t.Fatalf("no event %q among %q", prefix, evs)
	}
}

func (f *fixture) getVM(name string) *v1.VirtualMachine {
	f.t.Helper()
	vm, err := f.kv.KubevirtV1().VirtualMachines(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return vm
}

func (f *fixture) getVMI(name string) *v1.VirtualMachineInstance {
	f.t.Helper()
	vmi, err := f.kv.KubevirtV1().VirtualMachineInstances(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return vmi
}

// §1 Always, first sync of a new VM: the finalizer and the ABI defaults are patched in, a VMI is created
// from the template (owned, with both finalizers, the template's labels and the defaulted MAC), and the
// status says Starting.
func TestVMSyncAlwaysCreatesVMI(t *testing.T) {
	f := newFixture(t, false)
	f.addVM(controllertest.VM("vm1", v1.RunStrategyAlways))
	f.mustSync("vm", "vm1")
	f.wantActions("patch virtualmachines", "create virtualmachineinstances", "update virtualmachines/status")

	vm := f.getVM("vm1")
	if !slices.Contains(vm.Finalizers, v1.VirtualMachineControllerFinalizer) {
		t.Fatalf("VM finalizers %v", vm.Finalizers)
	}
	// A new VM gets a random (version 4) firmware UUID and a serial, as KubeVirt's VM mutator gives.
	if got := vm.Spec.Template.Spec.Domain.Firmware; got == nil || !randomUUID(string(got.UUID)) || !randomUUID(got.Serial) {
		t.Fatalf("firmware UUID and serial not defaulted in the VM spec: %+v", got)
	}
	mac := vm.Spec.Template.Spec.Domain.Devices.Interfaces[0].MacAddress
	if mac != controller.StableMAC(vm.UID, "default") {
		t.Fatalf("MAC %q", mac)
	}
	vmi := f.getVMI("vm1")
	if ref := metav1.GetControllerOf(vmi); ref == nil || ref.UID != vm.UID || ref.Kind != "VirtualMachine" {
		t.Fatalf("VMI controller ref %+v, VM uid %s", ref, vm.UID)
	}
	if !slices.Contains(vmi.Finalizers, v1.VirtualMachineControllerFinalizer) {
		t.Fatalf("VMI finalizers %v", vmi.Finalizers)
	}
	if vmi.Labels[v1.VirtualMachineNameLabel] != "vm1" || vmi.Labels["kubevirt.io/vm"] != "vm1" {
		t.Fatalf("VMI labels %v", vmi.Labels)
	}
	if vmi.Spec.Domain.Devices.Interfaces[0].MacAddress != mac || vmi.ShouldStartPaused() {
		t.Fatalf("VMI spec %+v", vmi.Spec.Domain)
	}
	c := vm.Status.Condition(v1.VirtualMachineReady)
	if vm.Status.PrintableStatus != v1.VirtualMachineStatusStarting || vm.Status.Created || c == nil || c.Reason != v1.VMINotExistsReason {
		t.Fatalf("status %+v", vm.Status)
	}
	f.wantEvent("Normal SuccessfulCreate Started the virtual machine by creating the new virtual machine instance vm1")

	// The VMI's add event has not arrived: the next sync creates nothing.
	if err := f.caches.VMs.Update(vm); err != nil {
		t.Fatal(err)
	}
	f.mustSync("vm", "vm1")
	for _, a := range f.actions() {
		if a == "create virtualmachineinstances" {
			t.Fatal("a second VMI was created before the first reached the cache")
		}
	}
}

// §1 Halted: no VMI, ever; the status is Stopped with Ready=False/VMINotExists.
func TestVMSyncHaltedStaysStopped(t *testing.T) {
	f := newFixture(t, false)
	f.addVM(settledVM("halted", v1.RunStrategyHalted))
	if d := f.mustSync("vm", "halted"); d != 0 {
		t.Fatalf("requeue after %v", d)
	}
	f.wantActions("update virtualmachines/status")
	vm := f.getVM("halted")
	c := vm.Status.Condition(v1.VirtualMachineReady)
	if vm.Status.PrintableStatus != v1.VirtualMachineStatusStopped || c == nil || c.Reason != v1.VMINotExistsReason {
		t.Fatalf("status %+v", vm.Status)
	}
	if err := f.caches.VMs.Update(vm); err != nil {
		t.Fatal(err)
	}
	f.mustSync("vm", "halted")
	f.wantActions() // nothing changed: nothing written
}

// §1 Start with paused=true (virtctl start --paused) and a template with startStrategy Paused both create
// a VMI with startStrategy Paused.
func TestVMSyncPausedStart(t *testing.T) {
	f := newFixture(t, false)
	vm := settledVM("req", v1.RunStrategyManual)
	vm.Status.StateChangeRequests = []v1.VirtualMachineStateChangeRequest{{Action: v1.StartRequest, Data: map[string]string{"paused": "true"}}}
	f.addVM(vm)
	f.mustSync("vm", "req")
	f.wantActions("create virtualmachineinstances", "update virtualmachines/status")
	if vmi := f.getVMI("req"); !vmi.ShouldStartPaused() {
		t.Fatalf("startStrategy %v, want Paused from the start request's data", vmi.Spec.StartStrategy)
	}

	tmpl := settledVM("tmpl", v1.RunStrategyAlways)
	paused := v1.StartStrategyPaused
	tmpl.Spec.Template.Spec.StartStrategy = &paused
	f.addVM(tmpl)
	f.mustSync("vm", "tmpl")
	if vmi := f.getVMI("tmpl"); !vmi.ShouldStartPaused() {
		t.Fatalf("startStrategy %v, want Paused from the template", vmi.Spec.StartStrategy)
	}
}

// §2 crash-loop backoff: a VMI that failed without running is recorded as a start failure first
// (retryAfter 10 s, CrashLoopBackOff), deleted on the next sync, and no VMI is created before retryAfter.
func TestVMSyncStartFailureBackoff(t *testing.T) {
	f := newFixture(t, false)
	vm := f.addVM(settledVM("crash", v1.RunStrategyAlways))
	failed := f.addVMI(vmiOf(vm, v1.Failed, false))

	d := f.mustSync("vm", "crash")
	f.wantActions("update virtualmachines/status")
	st := f.getVM("crash").Status
	sf := st.StartFailure
	if sf == nil || sf.ConsecutiveFailCount != 1 || sf.LastFailedVMIUID != failed.UID || sf.RetryAfterTimestamp == nil ||
		!sf.RetryAfterTimestamp.Time.Equal(f.now.Add(10*time.Second)) {
		t.Fatalf("startFailure %+v", sf)
	}
	if st.PrintableStatus != v1.VirtualMachineStatusCrashLoopBackOff {
		t.Fatalf("printableStatus %s", st.PrintableStatus)
	}
	if d != 10*time.Second+100*time.Millisecond {
		t.Fatalf("requeue after %v, want at retryAfter", d)
	}

	// Next sync, the failure on record: the failed VMI is deleted at the version decided on.
	if err := f.caches.VMs.Update(f.getVM("crash")); err != nil {
		t.Fatal(err)
	}
	f.mustSync("vm", "crash")
	if !slices.Contains(f.actions(), "delete virtualmachineinstances") {
		t.Fatalf("failed VMI not deleted: %q", f.actions())
	}
	d0 := f.kv.Actions()[0].(k8stesting.DeleteAction).GetDeleteOptions().Preconditions
	if d0 == nil || d0.UID == nil || *d0.UID != failed.UID || d0.ResourceVersion == nil || *d0.ResourceVersion != failed.ResourceVersion {
		t.Fatalf("delete preconditions %+v", d0)
	}

	// The VMI is gone: within the backoff nothing is created, and the key comes back at retryAfter.
	if err := f.caches.VMIs.Delete(failed); err != nil {
		t.Fatal(err)
	}
	f.c.VMIExpectations().DeletionObserved(ns+"/crash", failed.UID)
	if err := f.caches.VMs.Update(f.getVM("crash")); err != nil {
		t.Fatal(err)
	}
	d = f.mustSync("vm", "crash")
	if slices.Contains(f.actions(), "create virtualmachineinstances") {
		t.Fatal("VMI recreated during the backoff")
	}
	if d != 10*time.Second+100*time.Millisecond {
		t.Fatalf("requeue after %v, want at retryAfter", d)
	}
}

// §1 RerunOnFailure: a VMI that ran and failed gets a Start appended first (status only), is deleted once
// the Start is on record, and the Start creates the next VMI; after a success the VM stays stopped.
func TestVMSyncRerunOnFailure(t *testing.T) {
	f := newFixture(t, false)
	vm := settledVM("rerun", v1.RunStrategyRerunOnFailure)
	vm.Status.RunStrategy = v1.RunStrategyRerunOnFailure
	vm = f.addVM(vm)
	failed := f.addVMI(vmiOf(vm, v1.Failed, true))

	f.mustSync("vm", "rerun")
	f.wantActions("update virtualmachines/status")
	st := f.getVM("rerun").Status
	if len(st.StateChangeRequests) != 1 || st.StateChangeRequests[0].Action != v1.StartRequest || st.StartFailure != nil {
		t.Fatalf("after a failure of a VMI that ran: %+v", st)
	}

	if err := f.caches.VMs.Update(f.getVM("rerun")); err != nil {
		t.Fatal(err)
	}
	f.mustSync("vm", "rerun")
	if got := f.actions(); len(got) == 0 || got[0] != "delete virtualmachineinstances" {
		t.Fatalf("the failed VMI was not deleted once the Start was on record: %q", got)
	}

	if err := f.caches.VMIs.Delete(failed); err != nil {
		t.Fatal(err)
	}
	f.c.VMIExpectations().DeletionObserved(ns+"/rerun", failed.UID)
	if err := f.kv.Tracker().Delete(v1.GroupVersion.WithResource("virtualmachineinstances"), ns, "rerun"); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if err := f.caches.VMs.Update(f.getVM("rerun")); err != nil {
		t.Fatal(err)
	}
	f.mustSync("vm", "rerun")
	f.wantActions("create virtualmachineinstances", "update virtualmachines/status")

	// A VMI that succeeded is deleted and not rerun.
	g := newFixture(t, false)
	vm2 := settledVM("ok", v1.RunStrategyRerunOnFailure)
	vm2.Status.RunStrategy = v1.RunStrategyRerunOnFailure
	vm2 = g.addVM(vm2)
	g.addVMI(vmiOf(vm2, v1.Succeeded, true))
	g.mustSync("vm", "ok")
	if got := g.actions(); !slices.Contains(got, "delete virtualmachineinstances") || len(g.getVM("ok").Status.StateChangeRequests) != 0 {
		t.Fatalf("succeeded VMI: %q, requests %+v", got, g.getVM("ok").Status.StateChangeRequests)
	}
	h := newFixture(t, false)
	stopped := settledVM("stopped", v1.RunStrategyRerunOnFailure)
	stopped.Status.RunStrategy = v1.RunStrategyRerunOnFailure
	h.addVM(stopped)
	h.mustSync("vm", "stopped")
	if slices.Contains(h.actions(), "create virtualmachineinstances") || h.getVM("stopped").Status.PrintableStatus != v1.VirtualMachineStatusStopped {
		t.Fatalf("RerunOnFailure after a success restarted: %q, %s", h.actions(), h.getVM("stopped").Status.PrintableStatus)
	}
}

// §2 status from the VMI: Running and Ready, Paused (condition mirrored), image pull errors, a Start
// trimmed once its VMI runs, a final VMI of Manual kept and shown Stopped.
func TestVMSyncStatusFromVMI(t *testing.T) {
	cond := func(typ v1.VirtualMachineInstanceConditionType, st corev1.ConditionStatus, reason string) v1.VirtualMachineInstanceCondition {
		return v1.VirtualMachineInstanceCondition{Type: typ, Status: st, Reason: reason}
	}
	ready := cond(v1.VirtualMachineInstanceReady, corev1.ConditionTrue, "")
	for _, tc := range []struct {
		name     string
		strategy v1.VirtualMachineRunStrategy
		reqs     []v1.VirtualMachineStateChangeRequest
		phase    v1.VirtualMachineInstancePhase
		conds    []v1.VirtualMachineInstanceCondition
		want     v1.VirtualMachinePrintableStatus
		check    func(t *testing.T, st v1.VirtualMachineStatus)
	}{
		{"Running and Ready", v1.RunStrategyAlways, nil, v1.Running, []v1.VirtualMachineInstanceCondition{ready}, v1.VirtualMachineStatusRunning,
			func(t *testing.T, st v1.VirtualMachineStatus) {
				if c := st.Condition(v1.VirtualMachineReady); !st.Ready || !st.Created || c == nil || c.Status != corev1.ConditionTrue {
					t.Errorf("status %+v", st)
				}
			}},
		{"Paused mirrored", v1.RunStrategyAlways, nil, v1.Running, []v1.VirtualMachineInstanceCondition{cond(v1.VirtualMachineInstancePaused, corev1.ConditionTrue, v1.PausedByUserReason)}, v1.VirtualMachineStatusPaused,
			func(t *testing.T, st v1.VirtualMachineStatus) {
				if st.Condition(v1.VirtualMachinePaused) == nil || st.Ready {
					t.Errorf("status %+v", st)
				}
			}},
		{"ImagePullBackOff", v1.RunStrategyAlways, nil, v1.Scheduling, []v1.VirtualMachineInstanceCondition{cond(v1.VirtualMachineInstanceSynchronized, corev1.ConditionFalse, v1.ImagePullBackOffReason)}, v1.VirtualMachineStatusImagePullBackOff, nil},
		{"Start trimmed once its VMI runs", v1.RunStrategyManual, []v1.VirtualMachineStateChangeRequest{{Action: v1.StartRequest}}, v1.Scheduling, nil, v1.VirtualMachineStatusStarting,
			func(t *testing.T, st v1.VirtualMachineStatus) {
				if len(st.StateChangeRequests) != 0 {
					t.Errorf("requests %+v", st.StateChangeRequests)
				}
			}},
		{"Manual keeps a final VMI", v1.RunStrategyManual, nil, v1.Failed, nil, v1.VirtualMachineStatusStopped, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, false)
			vm := settledVM("vm", tc.strategy)
			vm.Status.StateChangeRequests = tc.reqs
			vm = f.addVM(vm)
			vmi := vmiOf(vm, tc.phase, tc.phase == v1.Failed)
			vmi.Status.Conditions = tc.conds
			f.addVMI(vmi)
			f.mustSync("vm", "vm")
			f.wantActions("update virtualmachines/status")
			st := f.getVM("vm").Status
			if st.PrintableStatus != tc.want {
				t.Fatalf("printableStatus %s, want %s", st.PrintableStatus, tc.want)
			}
			if tc.check != nil {
				tc.check(t, st)
			}
		})
	}
}

// A VM deleted with propagation Orphan, seen after the garbage collector removed the orphan finalizer
// but beside a cached VMI that still names the VM as owner (the collector has already released it),
// must not delete that VMI: the delete carries the cached resourceVersion and the apiserver refuses
// it. This was e2e's TestOrphanedVMIAdoptedByRecreatedVM failing about once in twenty CI runs.
func TestDeletingVMDoesNotDeleteReleasedVMI(t *testing.T) {
	f := newFixture(t, false)
	ctx := context.Background()
	vm := settledVM("keeper", v1.RunStrategyAlways)
	now := metav1.NewTime(f.now)
	vm.DeletionTimestamp = &now
	vm = f.addVM(vm)
	stale := f.addVMI(vmiOf(vm, v1.Running, true))
	// The garbage collector releases it (a newer resourceVersion), not yet seen by the cache.
	released := stale.DeepCopy()
	released.OwnerReferences = nil
	if _, err := f.kv.KubevirtV1().VirtualMachineInstances(ns).Update(ctx, released, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sync("vm", "keeper"); err != nil {
		t.Logf("sync: %v", err)
	}
	if got := f.getVMI("keeper"); got.UID != stale.UID {
		t.Fatalf("the released VMI was deleted from a stale cache (now %v)", got)
	}

	// With the current version in the cache the same VM does stop it (a cascading delete).
	cur := f.getVMI("keeper")
	cur.OwnerReferences = stale.OwnerReferences
	cur, err := f.kv.KubevirtV1().VirtualMachineInstances(ns).Update(ctx, cur, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.caches.VMIs.Update(cur); err != nil {
		t.Fatal(err)
	}
	if err := f.caches.VMs.Update(f.getVM("keeper")); err != nil {
		t.Fatal(err)
	}
	f.mustSync("vm", "keeper")
	if _, err := f.kv.KubevirtV1().VirtualMachineInstances(ns).Get(ctx, "keeper", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the owned VMI was not deleted: %v", err)
	}
}

// §2 RestartRequired: a VMI records the VM generation and template it was created from; a template change
// on a running VM shows RestartRequired=True with observedGeneration behind desiredGeneration, and a change
// that leaves the template alone moves the VMI's generation on (a patch of its annotation).
func TestVMSyncRestartRequired(t *testing.T) {
	f := newFixture(t, false)
	vm := settledVM("vm1", v1.RunStrategyAlways)
	vm.Generation = 2
	f.addVM(vm)
	f.mustSync("vm", "vm1")
	vmi := f.getVMI("vm1")
	if vmi.Annotations[v1.VirtualMachineGenerationAnnotation] != "2" || vmi.Annotations[controller.TemplateHashAnnotation] == "" {
		t.Fatalf("VMI annotations %v", vmi.Annotations)
	}
	vmi.Status.Phase = v1.Running
	if err := f.caches.VMIs.Add(vmi); err != nil {
		t.Fatal(err)
	}
	f.c.VMIExpectations().CreationObserved(ns + "/vm1")

	// The run strategy changes (generation 3), the template does not: the VMI's generation follows.
	vm = f.getVM("vm1")
	vm.Generation = 3
	vm.Spec.RunStrategy = ptr(v1.RunStrategyRerunOnFailure)
	f.updateVM(vm)
	f.mustSync("vm", "vm1")
	if got := f.getVMI("vm1").Annotations[v1.VirtualMachineGenerationAnnotation]; got != "3" {
		t.Fatalf("VMI generation %q after a run-strategy change, want 3", got)
	}
	if st := f.getVM("vm1").Status; st.ObservedGeneration != 3 || st.DesiredGeneration != 3 || st.Condition(v1.VirtualMachineRestartRequired) != nil {
		t.Fatalf("status %+v", st)
	}
	if err := f.caches.VMIs.Update(f.getVMI("vm1")); err != nil {
		t.Fatal(err)
	}

	// The template changes (generation 4): RestartRequired, the VMI's generation stays.
	vm = f.getVM("vm1")
	vm.Generation = 4
	vm.Spec.Template.Spec.Domain.Resources.Requests = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")}
	f.updateVM(vm)
	f.mustSync("vm", "vm1")
	st := f.getVM("vm1").Status
	rr := st.Condition(v1.VirtualMachineRestartRequired)
	if rr == nil || rr.Status != corev1.ConditionTrue || rr.Message != "a non-live-updatable field was changed in the template spec" ||
		st.ObservedGeneration != 3 || st.DesiredGeneration != 4 {
		t.Fatalf("status %+v", st)
	}
	for _, a := range f.actions() {
		if a == "patch virtualmachineinstances" {
			t.Fatal("the VMI's generation moved on although it runs the old template")
		}
	}
}

// updateVM stores vm through the API and in the cache.
func (f *fixture) updateVM(vm *v1.VirtualMachine) {
	f.t.Helper()
	out, err := f.kv.KubevirtV1().VirtualMachines(ns).Update(context.Background(), vm, metav1.UpdateOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.caches.VMs.Update(out); err != nil {
		f.t.Fatal(err)
	}
}
