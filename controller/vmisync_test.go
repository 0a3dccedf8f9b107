package controller_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/controller"
	"github.com/kvirt/kvirt/controller/controllertest"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"
)

// addLauncherPod stores the launcher pod the VMI controller renders for vmi, with status (the kubelet's
// part) applied by set, through the API and in the cache.
func (f *fixture) addLauncherPod(vmi *v1.VirtualMachineInstance, set func(*corev1.Pod)) *corev1.Pod {
	f.t.Helper()
	pod, err := f.c.RenderLauncherPod(vmi)
	if err != nil {
		f.t.Fatal(err)
	}
	pod.Namespace = ns
	if set != nil {
		set(pod)
	}
	out, err := f.kube.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.caches.Pods.Add(out); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// addToken stores vmi's launcher token secret in the cache.
func (f *fixture) addToken(vmi *v1.VirtualMachineInstance) {
	f.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: controller.TokenSecretName(vmi.Name), Namespace: ns,
		Labels: map[string]string{v1.CreatedByLabel: string(vmi.UID)}}, Data: map[string][]byte{controller.TokenSecretKey: []byte("tok")}}
	if err := f.caches.Secrets.Add(s); err != nil {
		f.t.Fatal(err)
	}
}

// bound is what the scheduler's binding writes; running what a kubelet writes once the launcher runs.
func bound(p *corev1.Pod) { p.Spec.NodeName = "node1" }

func running(p *corev1.Pod) {
	bound(p)
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = "10.244.0.7"
	p.Status.PodIPs = []corev1.PodIP{{IP: "10.244.0.7"}}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: controller.LauncherContainerName, Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}
}

// gated is running with the readiness gate already True (set by an earlier sync).
func gated(p *corev1.Pod) {
	running(p)
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: v1.VirtualMachineUnpausedPodCondition, Status: corev1.ConditionTrue})
}

func (f *fixture) getPod(name string) *corev1.Pod {
	f.t.Helper()
	p, err := f.kube.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

func gate(p *corev1.Pod) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == v1.VirtualMachineUnpausedPodCondition {
			return c.Status
		}
	}
	return ""
}

// §3 a new VMI: its finalizer, its token secret and its launcher pod (KubeVirt's pod layout: labels,
// restartPolicy Never, grace period + 15 s, the unpaused readiness gate, memory with overhead, the KVM
// and tun devices), and the status Pending with Ready=False/PodNotExists.
func TestVMISyncCreatesLauncherPod(t *testing.T) {
	f := newFixture(t, false)
	vmi := f.addVMI(controllertest.VMI("vm1"))
	f.mustSync("vmi", "vm1")
	f.wantActions("patch virtualmachineinstances", "create secrets", "create pods", "update virtualmachineinstances/status")

	pods, err := f.kube.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods %v err %v", pods, err)
	}
	pod := pods.Items[0]
	if pod.Labels[v1.AppLabel] != v1.VirtLauncherValue || pod.Labels[v1.VirtualMachineInstanceIDLabel] != "vm1" || pod.Labels[v1.CreatedByLabel] != string(vmi.UID) {
		t.Fatalf("pod labels %v", pod.Labels)
	}
	if ref := metav1.GetControllerOf(&pod); ref == nil || ref.UID != vmi.UID {
		t.Fatalf("pod owner %+v", ref)
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever || *pod.Spec.TerminationGracePeriodSeconds != 45 || pod.Spec.ReadinessGates[0].ConditionType != v1.VirtualMachineUnpausedPodCondition {
		t.Fatalf("pod spec %+v", pod.Spec)
	}
	res := pod.Spec.Containers[0].Resources
	wantMem := resource.MustParse("98432Ki") // 64Mi guest + 32Mi + 64Mi/512
	if res.Requests.Memory().Cmp(wantMem) != 0 || res.Limits[v1.KVMDeviceResource] != resource.MustParse("1") || res.Limits[v1.TunDeviceResource] != resource.MustParse("1") {
		t.Fatalf("resources %+v", res)
	}
	if pod.Annotations[controller.VMIAnnotation] == "" {
		t.Fatal("no VMI annotation on the pod")
	}
	sec, err := f.kube.CoreV1().Secrets(ns).Get(context.Background(), controller.TokenSecretName("vm1"), metav1.GetOptions{})
	if err != nil || len(sec.Data[controller.TokenSecretKey]) != 64 || metav1.GetControllerOf(sec).UID != vmi.UID {
		t.Fatalf("token secret %+v err %v", sec, err)
	}
	got := f.getVMI("vm1")
	if !slices.Contains(got.Finalizers, v1.VirtualMachineInstanceFinalizer) {
		t.Fatalf("finalizers %v", got.Finalizers)
	}
	if c := got.Status.Condition(v1.VirtualMachineInstanceReady); got.Status.Phase != v1.Pending || c == nil || c.Reason != v1.PodNotExistsReason {
		t.Fatalf("status %+v", got.Status)
	}
	f.wantEvent("Normal SuccessfulCreate Created virtual machine pod " + pod.Name)

	// The pod's add event has not arrived yet: the next sync must not create a second pod.
	if err := f.caches.VMIs.Update(got); err != nil {
		t.Fatal(err)
	}
	f.mustSync("vmi", "vm1")
	f.wantActions()
}

// §3 one sync per row: the pod and the launcher's report make the phase; the sync writes the status,
// sets the readiness gate and the node label, and keeps (or stops) the launcher watch.
func TestVMISyncPhases(t *testing.T) {
	pullBackOff := func(p *corev1.Pod) {
		bound(p)
		p.Status.Phase = corev1.PodPending
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: controller.LauncherContainerName,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: v1.ImagePullBackOffReason, Message: "Back-off pulling image"}}}}
	}
	exited := func(p *corev1.Pod) {
		bound(p)
		p.Status.Phase = corev1.PodSucceeded
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: controller.LauncherContainerName,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}}}
	}
	type watch int
	const (
		noWatch watch = iota
		watchByIP
		watchByName
	)
	for _, tc := range []struct {
		name      string
		from      v1.VirtualMachineInstancePhase
		pod       func(*corev1.Pod) // nil: no pod
		state     *controller.LauncherState
		podIPFree bool
		want      v1.VirtualMachineInstancePhase
		actions   []string
		watch     watch
		events    []string
		check     func(t *testing.T, f *fixture, vmi *v1.VirtualMachineInstance, pod *corev1.Pod)
	}{
		{name: "unbound pod: Scheduling", from: v1.Pending, pod: func(*corev1.Pod) {}, want: v1.Scheduling,
			actions: []string{"update virtualmachineinstances/status"}},
		{name: "bound pod without IP, pod-IP source: not watched yet", from: v1.Scheduling, pod: bound, want: v1.Scheduling,
			actions: []string{"update virtualmachineinstances/status"}},
		{name: "bound pod without IP, port-forward source: watched by pod name", from: v1.Scheduling, pod: bound, podIPFree: true, want: v1.Scheduling,
			actions: []string{"update virtualmachineinstances/status"}, watch: watchByName},
		{name: "running pod: Scheduled on its node, gate True, watched by IP", from: v1.Scheduling, pod: running, want: v1.Scheduled,
			actions: []string{"update pods/status", "patch virtualmachineinstances", "update virtualmachineinstances/status"}, watch: watchByIP,
			check: func(t *testing.T, f *fixture, vmi *v1.VirtualMachineInstance, pod *corev1.Pod) {
				if vmi.Status.NodeName != "node1" || vmi.Labels[v1.NodeNameLabel] != "node1" || gate(f.getPod(pod.Name)) != corev1.ConditionTrue {
					t.Errorf("node %q label %q gate %q", vmi.Status.NodeName, vmi.Labels[v1.NodeNameLabel], gate(f.getPod(pod.Name)))
				}
			}},
		{name: "guest running: Running and Ready with the pod IP", from: v1.Scheduled, pod: gated, state: &controller.LauncherState{Phase: controller.GuestRunning}, want: v1.Running,
			actions: []string{"update virtualmachineinstances/status"}, watch: watchByIP, events: []string{"Normal Started"},
			check: func(t *testing.T, f *fixture, vmi *v1.VirtualMachineInstance, pod *corev1.Pod) {
				ifs := vmi.Status.Interfaces
				if !vmi.Status.HasCondition(v1.VirtualMachineInstanceReady, corev1.ConditionTrue) || len(ifs) != 1 || ifs[0].IP != "10.244.0.7" || ifs[0].MAC != vmi.Spec.Domain.Devices.Interfaces[0].MacAddress {
					t.Errorf("status %+v", vmi.Status)
				}
			}},
		{name: "guest paused: Paused, not Ready, gate False", from: v1.Running, pod: gated, state: &controller.LauncherState{Phase: controller.GuestRunning, Paused: true}, want: v1.Running,
			actions: []string{"update pods/status", "update virtualmachineinstances/status"}, watch: watchByIP, events: []string{"Normal Paused"},
			check: func(t *testing.T, f *fixture, vmi *v1.VirtualMachineInstance, pod *corev1.Pod) {
				c := vmi.Status.Condition(v1.VirtualMachineInstancePaused)
				if c == nil || c.Reason != v1.PausedByUserReason || c.Message != v1.PausedByUserMessage || vmi.Status.HasCondition(v1.VirtualMachineInstanceReady, corev1.ConditionTrue) {
					t.Errorf("conditions %+v", vmi.Status.Conditions)
				}
				if g := gate(f.getPod(pod.Name)); g != corev1.ConditionFalse {
					t.Errorf("gate %q", g)
				}
			}},
		{name: "guest powered off: Succeeded, then the pod is deleted", from: v1.Running, pod: gated, state: &controller.LauncherState{Phase: controller.GuestSucceeded, Reason: "Shutdown"}, want: v1.Succeeded,
			actions: []string{"update virtualmachineinstances/status", "delete pods"}, events: []string{"Normal Stopped The VirtualMachineInstance was shut down."}},
		{name: "launcher failed: Failed with its reason", from: v1.Scheduled, pod: gated, state: &controller.LauncherState{Phase: controller.GuestFailed, Reason: "VMMError", Message: "boot failed"}, want: v1.Failed,
			actions: []string{"update virtualmachineinstances/status", "delete pods"}, events: []string{"Warning Stopped The VirtualMachineInstance crashed. boot failed"},
			check: func(t *testing.T, f *fixture, vmi *v1.VirtualMachineInstance, pod *corev1.Pod) {
				if vmi.Status.Reason != "VMMError" {
					t.Errorf("reason %q", vmi.Status.Reason)
				}
			}},
		{name: "launcher exited 0 while Running: Succeeded", from: v1.Running, pod: exited, want: v1.Succeeded,
			actions: []string{"update virtualmachineinstances/status"}},
		{name: "pod gone: Failed PodGone, no new pod", from: v1.Scheduled, want: v1.Failed,
			actions: []string{"update virtualmachineinstances/status"},
			check: func(t *testing.T, f *fixture, vmi *v1.VirtualMachineInstance, pod *corev1.Pod) {
				if vmi.Status.Reason != controller.ReasonPodGone {
					t.Errorf("reason %q", vmi.Status.Reason)
				}
			}},
		{name: "image pull back-off: Synchronized=False", from: v1.Scheduling, pod: pullBackOff, want: v1.Scheduling,
			actions: []string{"update virtualmachineinstances/status"},
			check: func(t *testing.T, f *fixture, vmi *v1.VirtualMachineInstance, pod *corev1.Pod) {
				if c := vmi.Status.Condition(v1.VirtualMachineInstanceSynchronized); c == nil || c.Status != corev1.ConditionFalse || c.Reason != v1.ImagePullBackOffReason {
					t.Errorf("Synchronized %+v", c)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.podIPFree)
			vmi := controllertest.VMI("vm")
			vmi.Finalizers = []string{v1.VirtualMachineInstanceFinalizer}
			vmi.Spec.Domain.Devices.Interfaces[0].MacAddress = "02:00:00:00:00:01"
			vmi.Status.Phase = tc.from
			if tc.from == v1.Scheduled || tc.from == v1.Running {
				vmi.Labels = map[string]string{v1.NodeNameLabel: "node1"}
				vmi.Status.NodeName = "node1"
			}
			vmi = f.addVMI(vmi)
			f.addToken(vmi)
			var pod *corev1.Pod
			if tc.pod != nil {
				pod = f.addLauncherPod(vmi, tc.pod)
				if tc.state != nil {
					f.c.SetLauncherState(ns+"/vm", pod.Name, *tc.state)
				}
			}
			f.mustSync("vmi", "vm")
			f.wantActions(tc.actions...)
			got := f.getVMI("vm")
			if got.Status.Phase != tc.want {
				t.Fatalf("phase %s, want %s (status %+v)", got.Status.Phase, tc.want, got.Status)
			}
			ep, watched := f.c.WatchedEndpoint(ns + "/vm")
			switch {
			case tc.watch == noWatch && watched:
				t.Errorf("launcher watched: %+v", ep)
			case tc.watch != noWatch && (!watched || ep.PodName != pod.Name || ep.Token != "tok" || ep.VMIUID != vmi.UID):
				t.Errorf("launcher watch %+v (watched %v)", ep, watched)
			case tc.watch == watchByIP && ep.PodIP != "10.244.0.7", tc.watch == watchByName && ep.PodIP != "":
				t.Errorf("launcher watch by the wrong address: %+v", ep)
			}
			evs := f.recorded()
			for _, want := range tc.events {
				if !slices.ContainsFunc(evs, func(e string) bool { return strings.HasPrefix(e, want) }) {
					t.Errorf("no event %q among %q", want, evs)
				}
			}
			if tc.check != nil {
				tc.check(t, f, got, pod)
			}
		})
	}
}

// §3 a final VMI: its live pods are deleted and nothing else is written.
func TestVMISyncFinalVMIDeletesItsPods(t *testing.T) {
	f := newFixture(t, false)
	vmi := controllertest.VMI("done")
	vmi.Finalizers = []string{v1.VirtualMachineInstanceFinalizer}
	vmi.Status.Phase = v1.Failed
	vmi = f.addVMI(vmi)
	f.addLauncherPod(vmi, running)
	f.mustSync("vmi", "done")
	f.wantActions("delete pods")
}

// §3 deletion: a VMI being deleted has its pods deleted gracefully and keeps its finalizer while one is
// left (recording what the launcher reports); without pods its finalizers go (an orphaned VMI's VM
// finalizer too, as no VM controller will look at it again).
func TestVMISyncDeleting(t *testing.T) {
	f := newFixture(t, false)
	vmi := controllertest.VMI("bye")
	vmi.Finalizers = []string{v1.VirtualMachineInstanceFinalizer, v1.VirtualMachineControllerFinalizer}
	vmi.Status.Phase = v1.Running
	now := metav1.NewTime(f.now)
	vmi.DeletionTimestamp = &now
	vmi = f.addVMI(vmi)
	pod := f.addLauncherPod(vmi, gated)
	f.c.SetLauncherState(ns+"/bye", pod.Name, controller.LauncherState{Phase: controller.GuestSucceeded})
	f.mustSync("vmi", "bye")
	f.wantActions("delete pods", "update virtualmachineinstances/status")
	if got := f.getVMI("bye"); got.Status.Phase != v1.Succeeded || len(got.Finalizers) != 2 {
		t.Fatalf("phase %s finalizers %v", got.Status.Phase, got.Finalizers)
	}

	if err := f.caches.Pods.Delete(pod); err != nil {
		t.Fatal(err)
	}
	if err := f.caches.VMIs.Update(f.getVMI("bye")); err != nil {
		t.Fatal(err)
	}
	f.mustSync("vmi", "bye")
	f.wantActions("patch virtualmachineinstances")
	if got := f.getVMI("bye"); len(got.Finalizers) != 0 {
		t.Fatalf("finalizers %v left", got.Finalizers)
	}
	if _, watched := f.c.WatchedEndpoint(ns + "/bye"); watched {
		t.Fatal("the launcher of a VMI without pods is still watched")
	}
}

// The VMI controller forgets a VMI that is gone: no watch, no expectations.
func TestVMISyncGone(t *testing.T) {
	f := newFixture(t, false)
	f.c.SetLauncherState(ns+"/gone", "p", controller.LauncherState{Phase: controller.GuestRunning})
	f.c.PodExpectations().ExpectCreations(ns+"/gone", 1)
	if d := f.mustSync("vmi", "gone"); d != 0 {
		t.Fatalf("requeue %v", d)
	}
	f.wantActions()
	if _, watched := f.c.WatchedEndpoint(ns + "/gone"); watched {
		t.Fatal("still watched")
	}
	if !f.c.PodExpectations().Satisfied(ns + "/gone") {
		t.Fatal("expectations kept")
	}
}

// podDeleteGraces returns the grace period of each pod deletion of the last sync (-1: the pod's own).
func (f *fixture) podDeleteGraces() []int64 {
	var out []int64
	for _, a := range f.kube.Actions() {
		if d, ok := a.(k8stesting.DeleteAction); ok && d.GetResource().Resource == "pods" {
			g := int64(-1)
			if o := d.GetDeleteOptions(); o.GracePeriodSeconds != nil {
				g = *o.GracePeriodSeconds
			}
			out = append(out, g)
		}
	}
	return out
}

// §3 shutdown: a VMI deleted with its default grace period has its launcher told to shut the guest down
// gracefully (ShuttingDown, once) before its pod is deleted with the pod's own grace period; a force stop
// (virtctl stop --force --grace-period=0 patches the VMI's grace period to 0) stops the guest at once
// (Deleted "VirtualMachineInstance stopping", once) and cuts the pod's deletion to GraceMargin.
func TestVMISyncDeletedVMIStopsItsLauncher(t *testing.T) {
	f := newFixture(t, false)
	vmi := controllertest.VMI("bye")
	vmi.Finalizers = []string{v1.VirtualMachineInstanceFinalizer}
	vmi.Status.Phase = v1.Running
	g := int64(600)
	vmi.Spec.TerminationGracePeriodSeconds = &g
	now := metav1.NewTime(f.now)
	vmi.DeletionTimestamp = &now
	vmi = f.addVMI(vmi)
	f.addToken(vmi)
	pod := f.addLauncherPod(vmi, gated)
	f.c.SetLauncherState(ns+"/bye", pod.Name, controller.LauncherState{Phase: controller.GuestRunning})

	f.mustSync("vmi", "bye")
	if got := f.status.Commands(ns, "bye"); !slices.Equal(got, []controller.LauncherCommand{{Op: controller.OpShutdown, Grace: 600 * time.Second}}) {
		t.Fatalf("launcher requests %+v", got)
	}
	if got := f.podDeleteGraces(); !slices.Equal(got, []int64{-1}) {
		t.Fatalf("pod deletions with grace %v, want the pod's own (615 s)", got)
	}
	f.wantEvent("Normal ShuttingDown Signaled Graceful Shutdown")
	f.refreshVMI("bye")
	f.mustSync("vmi", "bye") // the launcher has not reported yet: nothing is sent twice
	if got := f.status.Commands(ns, "bye"); len(got) != 1 {
		t.Fatalf("launcher requests %+v after a second sync", got)
	}
	if evs := f.recorded(); slices.ContainsFunc(evs, func(e string) bool { return strings.Contains(e, "ShuttingDown") }) {
		t.Fatalf("ShuttingDown again: %q", evs)
	}

	// virtctl stop --force --grace-period=0, the pod (in the cache) still terminating with 615 s.
	zero := int64(0)
	forced := f.getVMI("bye")
	forced.Spec.TerminationGracePeriodSeconds = &zero
	if err := f.caches.VMIs.Update(forced); err != nil {
		t.Fatal(err)
	}
	terminating := pod.DeepCopy()
	terminating.DeletionTimestamp, terminating.DeletionGracePeriodSeconds = &now, ptr(int64(615))
	if err := f.caches.Pods.Update(terminating); err != nil {
		t.Fatal(err)
	}
	f.c.SetLauncherState(ns+"/bye", pod.Name, controller.LauncherState{Phase: controller.GuestRunning, ShuttingDown: true, GracePeriodSeconds: ptr(int64(600))})
	f.mustSync("vmi", "bye")
	if got := f.status.Commands(ns, "bye"); len(got) != 2 || got[1].Op != controller.OpStop {
		t.Fatalf("launcher requests %+v, want a Stop", got)
	}
	if got := f.podDeleteGraces(); !slices.Equal(got, []int64{controller.GraceMargin}) {
		t.Fatalf("pod deletions with grace %v, want %d", got, controller.GraceMargin)
	}
	f.wantEvent("Normal Deleted VirtualMachineInstance stopping")
	f.refreshVMI("bye")
	f.mustSync("vmi", "bye")
	if got := f.status.Commands(ns, "bye"); len(got) != 2 {
		t.Fatalf("launcher requests %+v after another sync", got)
	}
}

// §3 events: a launcher that cannot be reached is virt-handler's SyncFailed warning with the error; the
// pod is deleted all the same, and the sync returns the error (a retry).
func TestVMISyncFailedLauncherRequest(t *testing.T) {
	f := newFixture(t, false)
	vmi := controllertest.VMI("bye")
	vmi.Finalizers = []string{v1.VirtualMachineInstanceFinalizer}
	vmi.Status.Phase = v1.Running
	now := metav1.NewTime(f.now)
	vmi.DeletionTimestamp = &now
	vmi = f.addVMI(vmi)
	f.addToken(vmi)
	pod := f.addLauncherPod(vmi, gated)
	f.c.SetLauncherState(ns+"/bye", pod.Name, controller.LauncherState{Phase: controller.GuestRunning})
	f.status.FailCommands(errors.New("connection refused"))
	if _, err := f.sync("vmi", "bye"); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("sync error %v", err)
	}
	if got := f.podDeleteGraces(); len(got) != 1 {
		t.Fatalf("pod deletions %v: an unreachable launcher held its pod's deletion back", got)
	}
	evs := f.recorded()
	if !slices.Contains(evs, "Warning SyncFailed launcher Shutdown (grace period 30s): connection refused") ||
		slices.ContainsFunc(evs, func(e string) bool { return strings.Contains(e, "ShuttingDown") }) {
		t.Fatalf("events %q: want SyncFailed and no ShuttingDown for a request that did not arrive", evs)
	}
	// The retry sends it.
	f.status.FailCommands(nil)
	f.refreshVMI("bye")
	f.mustSync("vmi", "bye")
	f.wantEvent("Normal ShuttingDown")
}

// §3 events: the guest of a deleted VMI is down: virt-handler's Deleted "Signaled Deletion", then Stopped.
func TestVMISyncDeletedGuestDown(t *testing.T) {
	f := newFixture(t, false)
	vmi := controllertest.VMI("bye")
	vmi.Finalizers = []string{v1.VirtualMachineInstanceFinalizer}
	vmi.Status.Phase = v1.Running
	now := metav1.NewTime(f.now)
	vmi.DeletionTimestamp = &now
	vmi = f.addVMI(vmi)
	pod := f.addLauncherPod(vmi, func(p *corev1.Pod) { gated(p); p.DeletionTimestamp = &now })
	f.c.SetLauncherState(ns+"/bye", pod.Name, controller.LauncherState{Phase: controller.GuestSucceeded, Reason: "Shutdown"})
	f.mustSync("vmi", "bye")
	if got := f.recorded(); !slices.Equal(got, []string{"Normal Deleted Signaled Deletion", "Normal Stopped The VirtualMachineInstance was shut down."}) {
		t.Fatalf("events %q", got)
	}
}

// Review finding F2: the control API listened on every pod address, the guest's gateway among them. Through
// pods/portforward (the default) the runtime enters the pod on 127.0.0.1, so the launcher listens there
// only; the direct pod-ip mode still needs every address.
func TestLauncherControlAddrFollowsTheTransport(t *testing.T) {
	for _, tc := range []struct {
		podIPFree bool
		want      string
	}{
		{podIPFree: true, want: "--control-addr 127.0.0.1:8186"},
		{podIPFree: false, want: "--control-addr :8186"},
	} {
		f := newFixture(t, tc.podIPFree)
		pod, err := f.c.RenderLauncherPod(controllertest.VMI("vm"))
		if err != nil {
			t.Fatal(err)
		}
		if args := strings.Join(pod.Spec.Containers[0].Args, " "); !strings.Contains(args, tc.want) {
			t.Errorf("podIPFree %v: launcher args %q, want %q", tc.podIPFree, args, tc.want)
		}
	}
}

// Review finding F6: creating a VMI deleted any Secret named "<vmi>-launcher-token" with kvirt's label
// whose created-by label differed. kvirt now deletes only a token secret it made for an earlier VMI of the
// same name (controlled by that VMI); a Secret it did not create stays, and the VMI waits with a warning.
func TestVMISyncTokenSecretOwnership(t *testing.T) {
	oldUID := types.UID("old-vmi-uid")
	userData := map[string][]byte{"password": []byte("hunter2")}
	for _, tc := range []struct {
		name    string
		secret  corev1.Secret
		cached  bool // the label-scoped informer sees it
		replace bool // kvirt deletes it and creates its own
	}{
		{name: "stale token of an earlier VMI", cached: true, replace: true, secret: corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			Labels:          map[string]string{v1.AppLabel: controller.TokenSecretLabelValue, v1.CreatedByLabel: string(oldUID)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "kubevirt.io/v1", Kind: "VirtualMachineInstance", Name: "vm1", UID: oldUID, Controller: ptr(true)}}}}},
		{name: "user secret with kvirt's labels, no owner", cached: true, secret: corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			Labels: map[string]string{v1.AppLabel: controller.TokenSecretLabelValue, v1.CreatedByLabel: string(oldUID)}}}},
		{name: "user secret owned by something else", cached: true, secret: corev1.Secret{ObjectMeta: metav1.ObjectMeta{
			Labels:          map[string]string{v1.AppLabel: controller.TokenSecretLabelValue, v1.CreatedByLabel: string(oldUID)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "x", UID: oldUID, Controller: ptr(true)}}}}},
		{name: "user secret without kvirt's label", secret: corev1.Secret{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, false)
			vmi := f.addVMI(controllertest.VMI("vm1"))
			s := tc.secret.DeepCopy()
			s.Name, s.Namespace, s.UID, s.Data = controller.TokenSecretName("vm1"), ns, "user-secret-uid", userData
			if _, err := f.kube.CoreV1().Secrets(ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if tc.cached {
				if err := f.caches.Secrets.Add(s); err != nil {
					t.Fatal(err)
				}
			}
			_, err := f.sync("vmi", "vm1")
			got, gerr := f.kube.CoreV1().Secrets(ns).Get(context.Background(), s.Name, metav1.GetOptions{})
			if gerr != nil {
				t.Fatal(gerr)
			}
			if tc.replace {
				if err != nil || slices.Contains(f.actions(), "create pods") == false || got.Labels[v1.CreatedByLabel] != string(vmi.UID) {
					t.Fatalf("sync: %v, calls %q, secret %+v", err, f.actions(), got.ObjectMeta)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "rename or delete it for the VMI to start") {
				t.Fatalf("sync ended with %v, want the name conflict", err)
			}
			if got.UID != s.UID || string(got.Data["password"]) != "hunter2" {
				t.Fatalf("the user's secret was replaced: %+v", got)
			}
			if slices.Contains(f.actions(), "delete secrets") || slices.Contains(f.actions(), "create pods") {
				t.Fatalf("calls %q: no delete of the user's secret, no pod", f.actions())
			}
			f.wantEvent("Warning FailedCreate Error creating pod: Secret default/vm1-launcher-token")
		})
	}
}

func ptr[T any](v T) *T { return &v }

// refreshVMI puts the stored VMI in the cache, as the informer would after a sync wrote it.
func (f *fixture) refreshVMI(name string) {
	f.t.Helper()
	if err := f.caches.VMIs.Update(f.getVMI(name)); err != nil {
		f.t.Fatal(err)
	}
}

// §3 node loss, one sync: the VMI controller reads the pod's Node from its cache. NotReady for less
// than the timeout: the VMI stays Running and the sync asks to be run again when the timeout ends;
// past it: Unknown, with no pod deleted or created.
func TestVMISyncNodeLost(t *testing.T) {
	f := newFixture(t, false)
	vmi := controllertest.VMI("far")
	vmi.Finalizers = []string{v1.VirtualMachineInstanceFinalizer}
	vmi.Labels = map[string]string{v1.NodeNameLabel: "node1"}
	vmi.Status.Phase = v1.Running
	vmi.Status.NodeName = "node1"
	vmi = f.addVMI(vmi)
	f.addToken(vmi)
	pod := f.addLauncherPod(vmi, gated)
	f.c.SetLauncherState(ns+"/far", pod.Name, controller.LauncherState{Phase: controller.GuestRunning})
	f.mustSync("vmi", "far")
	if err := f.caches.VMIs.Update(f.getVMI("far")); err != nil {
		t.Fatal(err)
	}

	setReady := func(status corev1.ConditionStatus, since time.Duration) {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: status, LastTransitionTime: metav1.NewTime(f.now.Add(-since))}}}}
		if err := f.caches.Nodes.Update(n); err != nil {
			t.Fatal(err)
		}
	}
	setReady(corev1.ConditionUnknown, 10*time.Second)
	if d := f.mustSync("vmi", "far"); d != controller.DefaultNodeNotReadyTimeout-10*time.Second {
		t.Fatalf("requeue %v, want when the %v timeout ends", d, controller.DefaultNodeNotReadyTimeout)
	}
	f.wantActions()

	setReady(corev1.ConditionUnknown, controller.DefaultNodeNotReadyTimeout)
	if d := f.mustSync("vmi", "far"); d != 0 {
		t.Fatalf("requeue %v", d)
	}
	f.wantActions("update virtualmachineinstances/status")
	if got := f.getVMI("far"); got.Status.Phase != v1.Unknown || got.Status.HasCondition(v1.VirtualMachineInstanceReady, corev1.ConditionTrue) {
		t.Fatalf("status %+v, want Unknown and not Ready", got.Status)
	}
}
