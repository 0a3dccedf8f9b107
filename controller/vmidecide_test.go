package controller

import (
	"reflect"
	"slices"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The rows of these tables are keyed to docs/BEHAVIOUR.md §3 ("situation/outcome", as the rows there).

var t0 = time.Unix(2000, 0)

func testVMI(phase v1.VirtualMachineInstancePhase) *v1.VirtualMachineInstance {
	vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "vmi", Namespace: "ns", UID: "vmi-uid",
		Finalizers: []string{v1.VirtualMachineInstanceFinalizer}}}
	vmi.Spec.Domain.Devices.Interfaces = []v1.Interface{{Name: "default", MacAddress: "02:00:00:00:00:01"}}
	vmi.Status.Phase = phase
	return vmi
}

type podOpt func(*corev1.Pod)

func testPod(opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pod", Namespace: "ns", UID: "pod-uid"}}
	p.Status.Phase = corev1.PodPending
	for _, o := range opts {
		o(p)
	}
	return p
}

func onNode(p *corev1.Pod) { p.Spec.NodeName = "node1" }
func withIP(p *corev1.Pod) { p.Status.PodIP = "10.0.0.5" }
func podRunning(p *corev1.Pod) {
	onNode(p)
	withIP(p)
	p.Status.Phase = corev1.PodRunning
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: LauncherContainerName, Ready: true, Image: "launcher:1"}}
}
func gateTrue(p *corev1.Pod) {
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: v1.VirtualMachineUnpausedPodCondition, Status: corev1.ConditionTrue})
}
func podDeleting(p *corev1.Pod) { ts := metav1.NewTime(t0); p.DeletionTimestamp = &ts }
func podExited(code int32, phase corev1.PodPhase, msg string) podOpt {
	return func(p *corev1.Pod) {
		onNode(p)
		p.Status.Phase = phase
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: LauncherContainerName,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: "Error", Message: msg}}}}
	}
}
func pulling(reason string) podOpt {
	return func(p *corev1.Pod) {
		onNode(p)
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: LauncherContainerName,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "pulling"}}}}
	}
}

func guest(phase GuestPhase) *LauncherState { return &LauncherState{Phase: phase} }

// BEHAVIOUR.md §3 phases: what the VMI's phase and reason become from its pod and its launcher's report.
func TestVMIStatusPhase(t *testing.T) {
	paused := &LauncherState{Phase: GuestRunning, Paused: true}
	for _, tc := range []struct {
		name          string
		from          v1.VirtualMachineInstancePhase
		pod           *corev1.Pod
		state         *LauncherState
		createPending bool
		want          v1.VirtualMachineInstancePhase
		reason        string
	}{
		{"new VMI/Pending", v1.VmPhaseUnset, nil, nil, false, v1.Pending, ""},
		{"pod created/Scheduling", v1.Pending, testPod(), nil, false, v1.Scheduling, ""},
		{"pod bound, not ready/Scheduling", v1.Scheduling, testPod(onNode), nil, false, v1.Scheduling, ""},
		{"pod ready/Scheduled", v1.Scheduling, testPod(podRunning), nil, false, v1.Scheduled, ""},
		{"guest running/Running", v1.Scheduled, testPod(podRunning), guest(GuestRunning), false, v1.Running, ""},
		{"guest running before the pod is ready/Running", v1.Scheduling, testPod(onNode), guest(GuestRunning), false, v1.Running, ""},
		{"guest paused/Running", v1.Scheduled, testPod(podRunning), paused, false, v1.Running, ""},
		{"guest starting/Scheduled", v1.Scheduled, testPod(podRunning), guest(GuestStarting), false, v1.Scheduled, ""},
		{"guest powered off/Succeeded", v1.Running, testPod(podRunning), &LauncherState{Phase: GuestSucceeded, Reason: "Shutdown"}, false, v1.Succeeded, "Shutdown"},
		{"guest failed/Failed with its reason", v1.Running, testPod(podRunning), &LauncherState{Phase: GuestFailed, Reason: "Crashed"}, false, v1.Failed, "Crashed"},
		{"guest failed without reason/Failed LauncherFailed", v1.Running, testPod(podRunning), guest(GuestFailed), false, v1.Failed, ReasonLauncherFailed},
		{"launcher exited 0 while Running/Succeeded", v1.Running, testPod(podExited(0, corev1.PodSucceeded, "")), nil, false, v1.Succeeded, ""},
		{"launcher exited 0 before Scheduled/Failed", v1.Scheduling, testPod(podExited(0, corev1.PodSucceeded, "")), nil, false, v1.Failed, "Error"},
		{"launcher exited 1/Failed with the termination reason", v1.Running, testPod(podExited(1, corev1.PodFailed, "")), nil, false, v1.Failed, "Error"},
		{"launcher outcome in the termination message/its reason", v1.Running, testPod(podExited(1, corev1.PodFailed, `{"phase":"Failed","reason":"VMMError","message":"boom"}`)), nil, false, v1.Failed, "VMMError"},
		{"pod deleted by someone/Scheduling until it is gone", v1.Pending, testPod(onNode, podDeleting), nil, false, v1.Scheduling, ""},
		{"pod deleted by someone while Running/Running", v1.Running, testPod(podRunning, podDeleting), nil, false, v1.Running, ""},
		{"pod gone/Failed PodGone", v1.Running, nil, nil, false, v1.Failed, ReasonPodGone},
		{"pod gone while Scheduling/Failed PodGone", v1.Scheduling, nil, nil, false, v1.Failed, ReasonPodGone},
		{"pod not in the cache yet, creation pending/unchanged", v1.Scheduling, nil, nil, true, v1.Scheduling, ""},
		{"no pod while Pending/Pending", v1.Pending, nil, nil, false, v1.Pending, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := vmiStatus(testVMI(tc.from), tc.pod, tc.state, tc.createPending, false, t0)
			if st.Phase != tc.want || st.Reason != tc.reason {
				t.Fatalf("phase %q reason %q, want %q %q", st.Phase, st.Reason, tc.want, tc.reason)
			}
			n := len(st.PhaseTransitionTimestamps)
			if tc.want != tc.from && (n == 0 || st.PhaseTransitionTimestamps[n-1].Phase != tc.want || !st.PhaseTransitionTimestamps[n-1].PhaseTransitionTimestamp.Time.Equal(t0)) {
				t.Fatalf("no transition to %s at now: %+v", tc.want, st.PhaseTransitionTimestamps)
			}
			if tc.want == tc.from && n != 0 {
				t.Fatalf("a transition without a phase change: %+v", st.PhaseTransitionTimestamps)
			}
		})
	}
}

// BEHAVIOUR.md §3 node loss: a VMI whose launcher's node is lost (nodeLost) is Unknown while the pod
// may still run, Failed/NodeUnresponsive once it is gone, and back where it was when the node returns.
func TestVMIStatusNodeLost(t *testing.T) {
	gcFailed := func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed } // pod GC: Failed, containers untouched
	ranThenUnknown := func(from v1.VirtualMachineInstancePhase) *v1.VirtualMachineInstance {
		vmi := testVMI(v1.Unknown)
		vmi.Status.NodeName = "node1"
		vmi.Status.PhaseTransitionTimestamps = []v1.VirtualMachineInstancePhaseTransitionTimestamp{{Phase: v1.Scheduled}, {Phase: from}, {Phase: v1.Unknown}}
		return vmi
	}
	running := testVMI(v1.Running)
	running.Status.NodeName = "node1"
	for _, tc := range []struct {
		name   string
		vmi    *v1.VirtualMachineInstance
		pod    *corev1.Pod
		state  *LauncherState
		lost   bool
		want   v1.VirtualMachineInstancePhase
		reason string
	}{
		{"node lost while Running/Unknown", running, testPod(podRunning), guest(GuestRunning), true, v1.Unknown, ""},
		{"node lost while Scheduling/Unknown", testVMI(v1.Scheduling), testPod(onNode), nil, true, v1.Unknown, ""},
		{"node lost, pod terminating/Unknown", running, testPod(podRunning, podDeleting), guest(GuestRunning), true, v1.Unknown, ""},
		{"node lost, still Unknown/unchanged", ranThenUnknown(v1.Running), testPod(podRunning, podDeleting), guest(GuestRunning), true, v1.Unknown, ""},
		{"node lost, pod gone/Failed NodeUnresponsive", ranThenUnknown(v1.Running), nil, nil, true, v1.Failed, ReasonNodeUnresponsive},
		{"node lost, pod marked Failed by pod GC/Failed NodeUnresponsive", ranThenUnknown(v1.Running), testPod(podRunning, podDeleting, gcFailed), guest(GuestRunning), true, v1.Failed, ReasonNodeUnresponsive},
		{"node lost, launcher had exited 1/its reason", running, testPod(podExited(1, corev1.PodFailed, "")), nil, true, v1.Failed, "Error"},
		{"node lost, launcher exited 0 after the guest/Succeeded", ranThenUnknown(v1.Running), testPod(podExited(0, corev1.PodSucceeded, "")), nil, true, v1.Succeeded, ""},
		{"node lost after the guest powered off/Succeeded", running, testPod(podRunning), &LauncherState{Phase: GuestSucceeded, Reason: "Shutdown"}, true, v1.Succeeded, "Shutdown"},
		{"node back/Running again", ranThenUnknown(v1.Running), testPod(podRunning), guest(GuestRunning), false, v1.Running, ""},
		{"node back before the guest ran/Scheduled again", ranThenUnknown(v1.Scheduled), testPod(podRunning), nil, false, v1.Scheduled, ""},
		{"node back, pod gone/Failed PodGone", ranThenUnknown(v1.Running), nil, nil, false, v1.Failed, ReasonPodGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := vmiStatus(tc.vmi, tc.pod, tc.state, false, tc.lost, t0)
			if st.Phase != tc.want || st.Reason != tc.reason {
				t.Fatalf("phase %q reason %q, want %q %q", st.Phase, st.Reason, tc.want, tc.reason)
			}
			if tc.want == v1.Unknown && st.NodeName != "node1" {
				t.Fatalf("Unknown on node %q, want the pod's node1", st.NodeName)
			}
			if c := st.Condition(v1.VirtualMachineInstanceReady); tc.want == v1.Unknown && (c == nil || c.Status != corev1.ConditionFalse) {
				t.Fatalf("Ready %+v while Unknown", c)
			}
		})
	}

	t.Run("paused guest, node lost/Paused kept", func(t *testing.T) {
		paused := &LauncherState{Phase: GuestRunning, Paused: true}
		vmi := testVMI(v1.Running)
		vmi.Status.PhaseTransitionTimestamps = []v1.VirtualMachineInstancePhaseTransitionTimestamp{{Phase: v1.Running}}
		vmi.Status = vmiStatus(vmi, testPod(podRunning), paused, false, false, t0)
		vmi.Status = vmiStatus(vmi, testPod(podRunning), paused, false, true, t0)
		if vmi.Status.Phase != v1.Unknown || !vmi.Status.HasCondition(v1.VirtualMachineInstancePaused, corev1.ConditionTrue) {
			t.Fatalf("phase %s conditions %+v", vmi.Status.Phase, vmi.Status.Conditions)
		}
		back := vmiStatus(vmi, testPod(podRunning), paused, false, false, t0)
		if evs := vmiEvents(&vmi.Status, &back, paused, nil); back.Phase != v1.Running || len(evs) != 0 {
			t.Fatalf("node back: phase %s events %+v (the guest neither starts nor pauses again)", back.Phase, evs)
		}
	})
}

// nodeLost: KubeVirt's unresponsive node, from the node's Ready condition (BEHAVIOUR.md §3 node loss).
func TestNodeLost(t *testing.T) {
	const timeout = 30 * time.Second
	node := func(status corev1.ConditionStatus, since time.Duration) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse},
			{Type: corev1.NodeReady, Status: status, LastTransitionTime: metav1.NewTime(t0.Add(-since))}}}}
	}
	for _, tc := range []struct {
		name     string
		nodeName string
		node     *corev1.Node
		lost     bool
		recheck  time.Duration
	}{
		{"not bound to a node/not lost", "", nil, false, 0},
		{"Ready/not lost", "node1", node(corev1.ConditionTrue, time.Hour), false, 0},
		{"no Ready condition yet/not lost", "node1", &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}}, false, 0},
		{"Unknown for less than the timeout/recheck when it runs out", "node1", node(corev1.ConditionUnknown, 10*time.Second), false, 20 * time.Second},
		{"NotReady for less than the timeout/recheck when it runs out", "node1", node(corev1.ConditionFalse, 29*time.Second), false, time.Second},
		{"Unknown for the timeout/lost", "node1", node(corev1.ConditionUnknown, timeout), true, 0},
		{"NotReady for longer/lost", "node1", node(corev1.ConditionFalse, time.Hour), true, 0},
		{"Node deleted/lost at once", "node1", nil, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lost, recheck := nodeLost(tc.nodeName, tc.node, timeout, t0)
			if lost != tc.lost || recheck != tc.recheck {
				t.Fatalf("lost %v recheck %v, want %v %v", lost, recheck, tc.lost, tc.recheck)
			}
		})
	}
}

// BEHAVIOUR.md §3 conditions: Ready (with KubeVirt's reasons), Paused, PodScheduled and Synchronized.
func TestVMIStatusConditions(t *testing.T) {
	unsched := func(p *corev1.Pod) {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: "0/1 nodes"}}
	}
	paused := &LauncherState{Phase: GuestRunning, Paused: true}
	notReady := func(p *corev1.Pod) { p.Status.ContainerStatuses[0].Ready = false }
	for _, tc := range []struct {
		name  string
		from  v1.VirtualMachineInstancePhase
		pod   *corev1.Pod
		state *LauncherState
		ready corev1.ConditionStatus
		why   string
		check func(t *testing.T, st *v1.VirtualMachineInstanceStatus)
	}{
		{"no pod/Ready=False PodNotExists", v1.VmPhaseUnset, nil, nil, corev1.ConditionFalse, v1.PodNotExistsReason, nil},
		{"pod terminating/Ready=False PodTerminating", v1.Running, testPod(podRunning, podDeleting), guest(GuestRunning), corev1.ConditionFalse, v1.PodTerminatingReason, nil},
		{"guest not running/Ready=False GuestNotRunning", v1.Scheduled, testPod(podRunning), nil, corev1.ConditionFalse, v1.GuestNotRunningReason, nil},
		{"guest paused/Ready=False PausedByUser, Paused=True", v1.Running, testPod(podRunning), paused, corev1.ConditionFalse, v1.PausedByUserReason,
			func(t *testing.T, st *v1.VirtualMachineInstanceStatus) {
				c := st.Condition(v1.VirtualMachineInstancePaused)
				if c == nil || c.Status != corev1.ConditionTrue || c.Reason != v1.PausedByUserReason || c.Message != v1.PausedByUserMessage {
					t.Errorf("Paused %+v", c)
				}
			}},
		{"pod not ready/Ready=False PodConditionMissing", v1.Running, testPod(podRunning, notReady), guest(GuestRunning), corev1.ConditionFalse, v1.PodConditionMissingReason, nil},
		{"guest running, pod ready/Ready=True", v1.Running, testPod(podRunning), guest(GuestRunning), corev1.ConditionTrue, "",
			func(t *testing.T, st *v1.VirtualMachineInstanceStatus) {
				if st.Condition(v1.VirtualMachineInstancePaused) != nil {
					t.Error("Paused while running")
				}
				if st.NodeName != "node1" || st.LauncherContainerImageVersion != "launcher:1" || st.ActivePods["pod-uid"] != "node1" {
					t.Errorf("node %q image %q activePods %v", st.NodeName, st.LauncherContainerImageVersion, st.ActivePods)
				}
			}},
		{"pod unschedulable/PodScheduled=False copied", v1.Scheduling, testPod(unsched), nil, corev1.ConditionFalse, v1.GuestNotRunningReason,
			func(t *testing.T, st *v1.VirtualMachineInstanceStatus) {
				c := st.Condition(v1.VirtualMachineInstancePodScheduled)
				if c == nil || c.Status != corev1.ConditionFalse || c.Reason != corev1.PodReasonUnschedulable || c.Message != "0/1 nodes" {
					t.Errorf("PodScheduled %+v", c)
				}
			}},
		{"image pull error/Synchronized=False ErrImagePull", v1.Scheduling, testPod(pulling(v1.ErrImagePullReason)), nil, corev1.ConditionFalse, v1.GuestNotRunningReason,
			func(t *testing.T, st *v1.VirtualMachineInstanceStatus) {
				if c := st.Condition(v1.VirtualMachineInstanceSynchronized); c == nil || c.Status != corev1.ConditionFalse || c.Reason != v1.ErrImagePullReason {
					t.Errorf("Synchronized %+v", c)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := vmiStatus(testVMI(tc.from), tc.pod, tc.state, false, false, t0)
			c := st.Condition(v1.VirtualMachineInstanceReady)
			if c == nil || c.Status != tc.ready || c.Reason != tc.why {
				t.Fatalf("Ready %+v, want %s/%s", c, tc.ready, tc.why)
			}
			if tc.check != nil {
				tc.check(t, &st)
			}
		})
	}

	t.Run("image pulled/Synchronized removed, transition time kept", func(t *testing.T) {
		vmi := testVMI(v1.Scheduling)
		st := vmiStatus(vmi, testPod(pulling(v1.ImagePullBackOffReason)), nil, false, false, t0)
		vmi.Status = st
		later := t0.Add(time.Minute)
		st = vmiStatus(vmi, testPod(podRunning), nil, false, false, later)
		if st.Condition(v1.VirtualMachineInstanceSynchronized) != nil {
			t.Fatalf("Synchronized left after the pull: %+v", st.Conditions)
		}
		// Ready stayed False (GuestNotRunning): its transition time is the first one.
		if c := st.Condition(v1.VirtualMachineInstanceReady); c == nil || !c.LastTransitionTime.Time.Equal(t0) {
			t.Fatalf("Ready %+v: transition time moved without a change", c)
		}
	})
	t.Run("unpaused/Paused removed, Ready=True at now", func(t *testing.T) {
		vmi := testVMI(v1.Running)
		vmi.Status = vmiStatus(vmi, testPod(podRunning), paused, false, false, t0)
		later := t0.Add(time.Minute)
		st := vmiStatus(vmi, testPod(podRunning), guest(GuestRunning), false, false, later)
		c := st.Condition(v1.VirtualMachineInstanceReady)
		if st.Condition(v1.VirtualMachineInstancePaused) != nil || c == nil || c.Status != corev1.ConditionTrue || !c.LastTransitionTime.Time.Equal(later) {
			t.Fatalf("conditions %+v", st.Conditions)
		}
	})
}

// BEHAVIOUR.md §3 interfaces: the launcher's list when it reports one, else the pod IP on the first
// interface of the spec.
func TestVMIStatusInterfaces(t *testing.T) {
	st := vmiStatus(testVMI(v1.Scheduled), testPod(podRunning), nil, false, false, t0)
	if ifs := st.Interfaces; len(ifs) != 1 || ifs[0].IP != "10.0.0.5" || !slices.Equal(ifs[0].IPs, []string{"10.0.0.5"}) || ifs[0].MAC != "02:00:00:00:00:01" || ifs[0].Name != "default" || ifs[0].InfoSource != "domain" {
		t.Fatalf("from the pod: %+v", ifs)
	}
	reported := []v1.VirtualMachineInstanceNetworkInterface{{Name: "default", IP: "10.0.2.2", MAC: "02:00:00:00:00:01", InterfaceName: "eth0"}}
	st = vmiStatus(testVMI(v1.Running), testPod(podRunning), &LauncherState{Phase: GuestRunning, Interfaces: reported}, false, false, t0)
	if !reflect.DeepEqual(st.Interfaces, reported) {
		t.Fatalf("from the launcher: %+v", st.Interfaces)
	}
	reported[0].IP = "changed"
	if st.Interfaces[0].IP == "changed" {
		t.Fatal("the status shares the launcher's slice")
	}
}

// BEHAVIOUR.md §3 events: virt-handler's, for what the written status says happened.
func TestVMIEvents(t *testing.T) {
	st := func(phase v1.VirtualMachineInstancePhase, reason string, paused bool) *v1.VirtualMachineInstanceStatus {
		s := &v1.VirtualMachineInstanceStatus{Phase: phase, Reason: reason}
		if paused {
			s.Conditions = []v1.VirtualMachineInstanceCondition{{Type: v1.VirtualMachineInstancePaused, Status: corev1.ConditionTrue}}
		}
		return s
	}
	for _, tc := range []struct {
		name     string
		old, new *v1.VirtualMachineInstanceStatus
		state    *LauncherState
		pod      *corev1.Pod
		want     []vmiEvent
	}{
		{"Running/Started", st(v1.Scheduled, "", false), st(v1.Running, "", false), nil, nil,
			[]vmiEvent{{corev1.EventTypeNormal, ReasonStarted, "VirtualMachineInstance started."}}},
		{"Scheduled/Created", st(v1.Scheduling, "", false), st(v1.Scheduled, "", false), nil, nil,
			[]vmiEvent{{corev1.EventTypeNormal, ReasonCreated, "VirtualMachineInstance defined."}}},
		{"Running before Scheduled/Created then Started", st(v1.Scheduling, "", false), st(v1.Running, "", false), nil, nil,
			[]vmiEvent{evDefined, {corev1.EventTypeNormal, ReasonStarted, "VirtualMachineInstance started."}}},
		{"Succeeded/Stopped", st(v1.Running, "", false), st(v1.Succeeded, "", false), nil, nil,
			[]vmiEvent{{corev1.EventTypeNormal, ReasonStopped, "The VirtualMachineInstance was shut down."}}},
		{"Failed with a launcher message/Stopped warning with it", st(v1.Running, "", false), st(v1.Failed, "Crashed", false), &LauncherState{Phase: GuestFailed, Message: "triple fault"}, nil,
			[]vmiEvent{{corev1.EventTypeWarning, ReasonStopped, "The VirtualMachineInstance crashed. triple fault"}}},
		{"Failed with a termination message/Stopped warning with it", st(v1.Running, "", false), st(v1.Failed, "Error", false), nil, testPod(podExited(1, corev1.PodFailed, "last words\n")),
			[]vmiEvent{{corev1.EventTypeWarning, ReasonStopped, "The VirtualMachineInstance crashed. last words"}}},
		{"Failed with a reason only/Stopped warning with it", st(v1.Running, "", false), st(v1.Failed, ReasonPodGone, false), nil, nil,
			[]vmiEvent{{corev1.EventTypeWarning, ReasonStopped, "The VirtualMachineInstance crashed. (PodGone)"}}},
		{"paused/Paused", st(v1.Running, "", false), st(v1.Running, "", true), nil, nil,
			[]vmiEvent{{corev1.EventTypeNormal, ReasonPaused, "VirtualMachineInstance paused"}}},
		{"unpaused/Unpaused", st(v1.Running, "", true), st(v1.Running, "", false), nil, nil,
			[]vmiEvent{{corev1.EventTypeNormal, ReasonUnpaused, "VirtualMachineInstance unpaused"}}},
		{"stopped while paused/Stopped, no Unpaused", st(v1.Running, "", true), st(v1.Succeeded, "", false), nil, nil,
			[]vmiEvent{{corev1.EventTypeNormal, ReasonStopped, "The VirtualMachineInstance was shut down."}}},
		{"Failed on a lost node/NodeUnresponsive, no Stopped", st(v1.Unknown, "", false), &v1.VirtualMachineInstanceStatus{Phase: v1.Failed, Reason: ReasonNodeUnresponsive, NodeName: "node1"}, nil, nil,
			[]vmiEvent{{corev1.EventTypeNormal, ReasonNodeUnresponsive, "node node1 is not responsive, marking VMI as failed"}}},
		{"Unknown/none", st(v1.Running, "", false), st(v1.Unknown, "", false), nil, nil, nil},
		{"Running again after Unknown/none", &v1.VirtualMachineInstanceStatus{Phase: v1.Unknown, PhaseTransitionTimestamps: []v1.VirtualMachineInstancePhaseTransitionTimestamp{{Phase: v1.Running}, {Phase: v1.Unknown}}},
			st(v1.Running, "", false), nil, nil, nil},
		{"no change/none", st(v1.Running, "", false), st(v1.Running, "", false), nil, nil, nil},
	} {
		if got := vmiEvents(tc.old, tc.new, tc.state, tc.pod); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// BEHAVIOUR.md §3 actions: what one VMI sync does, given what it read.
func TestDecideVMI(t *testing.T) {
	deleting := func(v *v1.VirtualMachineInstance) *v1.VirtualMachineInstance {
		ts := metav1.NewTime(t0)
		v.DeletionTimestamp = &ts
		return v
	}
	withFinalizers := func(v *v1.VirtualMachineInstance, f ...string) *v1.VirtualMachineInstance { v.Finalizers = f; return v }
	isController := true
	ownedByVM := func(v *v1.VirtualMachineInstance) *v1.VirtualMachineInstance {
		v.OwnerReferences = []metav1.OwnerReference{{APIVersion: v1.GroupVersion.String(), Kind: "VirtualMachine", Name: "vm", UID: "vm-uid", Controller: &isController}}
		return v
	}
	labelled := func(v *v1.VirtualMachineInstance) *v1.VirtualMachineInstance {
		v.Labels = map[string]string{v1.NodeNameLabel: "node1"}
		return v
	}
	live, old := testPod(podRunning, gateTrue), testPod(podRunning)
	old.Name = "old"
	done := testPod(podExited(0, corev1.PodSucceeded, ""))
	type want struct {
		addFinalizer, stopWatch, createPod, noToken, removeFinalizers bool
		deletePods                                                    []string
		watchIP                                                       string // "-": no watch
		gate                                                          corev1.ConditionStatus
		nodeLabel                                                     string
		status                                                        v1.VirtualMachineInstancePhase // "-": not written
		deleteAfter                                                   bool
		finalizers                                                    []string
	}
	for _, tc := range []struct {
		name          string
		vmi           *v1.VirtualMachineInstance
		pods          []*corev1.Pod
		state         *LauncherState
		createPending bool
		noToken       bool
		podIPFree     bool
		want          want
	}{
		{"new VMI/finalizer, token secret and pod", withFinalizers(testVMI(v1.VmPhaseUnset)), nil, nil, false, false, false,
			want{addFinalizer: true, createPod: true, watchIP: "-", status: v1.Pending}},
		{"Pending, creation pending/nothing", testVMI(v1.Pending), nil, nil, true, false, false,
			want{watchIP: "-", status: "-"}},
		{"Pending, no pod, creation observed/create again", testVMI(v1.Pending), nil, nil, false, false, false,
			want{createPod: true, watchIP: "-", status: v1.Pending}},
		{"final VMI/stop the watch, delete live pods, nothing else", testVMI(v1.Failed), []*corev1.Pod{live, done, testPod(podRunning, podDeleting)}, nil, false, false, false,
			want{stopWatch: true, deletePods: []string{"pod"}, watchIP: "-", status: "-"}},
		{"pod bound without IP, pod-IP source/no watch", testVMI(v1.Scheduling), []*corev1.Pod{testPod(onNode)}, nil, false, false, false,
			want{watchIP: "-", status: v1.Scheduling}},
		{"pod bound without IP, port-forward source/watch by name", testVMI(v1.Scheduling), []*corev1.Pod{testPod(onNode)}, nil, false, false, true,
			want{watchIP: "", status: v1.Scheduling}},
		{"pod with IP/watch by IP, gate True, node label", testVMI(v1.Scheduling), []*corev1.Pod{testPod(podRunning)}, nil, false, false, false,
			want{watchIP: "10.0.0.5", gate: corev1.ConditionTrue, nodeLabel: "node1", status: v1.Scheduled}},
		{"no token yet/no watch", testVMI(v1.Scheduling), []*corev1.Pod{testPod(podRunning)}, nil, false, true, false,
			want{noToken: true, watchIP: "-", gate: corev1.ConditionTrue, nodeLabel: "node1", status: v1.Scheduled}},
		{"gate and label set/only the status", labelled(testVMI(v1.Scheduled)), []*corev1.Pod{live}, guest(GuestRunning), false, false, false,
			want{watchIP: "10.0.0.5", status: v1.Running}},
		{"guest paused/gate False", labelled(testVMI(v1.Running)), []*corev1.Pod{live}, &LauncherState{Phase: GuestRunning, Paused: true}, false, false, false,
			want{watchIP: "10.0.0.5", gate: corev1.ConditionFalse, status: v1.Running}},
		{"newest pod counts/old one left alone", labelled(testVMI(v1.Scheduled)), []*corev1.Pod{live, old}, guest(GuestRunning), false, false, false,
			want{watchIP: "10.0.0.5", status: v1.Running}},
		{"guest powered off/status, then the pod is deleted", labelled(testVMI(v1.Running)), []*corev1.Pod{live}, guest(GuestSucceeded), false, false, false,
			want{stopWatch: true, watchIP: "-", status: v1.Succeeded, deleteAfter: true}},
		{"launcher exited/status, pod left (terminated)", labelled(testVMI(v1.Running)), []*corev1.Pod{done}, nil, false, false, false,
			want{stopWatch: true, watchIP: "-", status: v1.Succeeded}},
		{"pod deleted by someone/no watch, no gate", labelled(testVMI(v1.Running)), []*corev1.Pod{testPod(podRunning, gateTrue, podDeleting)}, nil, false, false, false,
			want{watchIP: "-", status: v1.Running}},
		{"deleting with a live pod/delete it, record the status", deleting(testVMI(v1.Running)), []*corev1.Pod{live}, guest(GuestRunning), false, false, false,
			want{deletePods: []string{"pod"}, watchIP: "-", status: v1.Running}},
		{"deleting, pod shutting down/no delete again", deleting(testVMI(v1.Running)), []*corev1.Pod{testPod(podRunning, podDeleting)}, guest(GuestSucceeded), false, false, false,
			want{watchIP: "-", status: v1.Succeeded}},
		{"deleting, pods terminated/finalizers removed", deleting(withFinalizers(testVMI(v1.Succeeded), v1.VirtualMachineInstanceFinalizer, v1.VirtualMachineControllerFinalizer, "other")), []*corev1.Pod{done}, nil, false, false, false,
			want{stopWatch: true, watchIP: "-", status: "-", removeFinalizers: true, finalizers: []string{"other"}}},
		{"deleting, owned by a VM/its finalizer kept for the VM", deleting(ownedByVM(withFinalizers(testVMI(v1.Succeeded), v1.VirtualMachineInstanceFinalizer, v1.VirtualMachineControllerFinalizer))), nil, nil, false, false, false,
			want{stopWatch: true, watchIP: "-", status: "-", removeFinalizers: true, finalizers: []string{v1.VirtualMachineControllerFinalizer}}},
		{"deleting, finalizers already gone/nothing", deleting(withFinalizers(testVMI(v1.Succeeded))), nil, nil, false, false, false,
			want{stopWatch: true, watchIP: "-", status: "-"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := vmiInput{vmi: tc.vmi, pods: tc.pods, createPending: tc.createPending, state: tc.state,
				token: "tok", hasToken: !tc.noToken, needIP: !tc.podIPFree, port: 8186, now: t0}
			if tc.vmi.Status.Phase != v1.VmPhaseUnset && tc.vmi.DeletionTimestamp == nil && len(tc.vmi.Finalizers) == 0 {
				t.Fatal("row error: every VMI past its first sync has its finalizer")
			}
			a := decideVMI(in)
			w := tc.want
			var deleted []string
			for _, p := range a.deletePods {
				deleted = append(deleted, p.Name)
			}
			if a.addFinalizer != w.addFinalizer || a.stopWatch != w.stopWatch || a.createPod != w.createPod || a.noToken != w.noToken ||
				!slices.Equal(deleted, w.deletePods) || a.unpausedGate != w.gate || a.nodeLabel != w.nodeLabel {
				t.Fatalf("got addFinalizer %v stopWatch %v createPod %v noToken %v deletePods %v gate %q nodeLabel %q; want %+v",
					a.addFinalizer, a.stopWatch, a.createPod, a.noToken, deleted, a.unpausedGate, a.nodeLabel, w)
			}
			switch {
			case w.watchIP == "-" && a.watch != nil:
				t.Fatalf("watch %+v, want none", a.watch)
			case w.watchIP != "-" && (a.watch == nil || a.watch.PodIP != w.watchIP || a.watch.Token != "tok" || a.watch.Port != 8186 || a.watch.VMIUID != "vmi-uid"):
				t.Fatalf("watch %+v, want one with pod IP %q", a.watch, w.watchIP)
			}
			if a.unpausedGate != "" && a.gatePod != tc.pods[0] {
				t.Fatalf("gate on pod %v", a.gatePod)
			}
			switch {
			case w.status == "-" && a.status != nil:
				t.Fatalf("status written: %+v", a.status)
			case w.status != "-" && (a.status == nil || a.status.Phase != w.status):
				t.Fatalf("status %+v, want phase %s", a.status, w.status)
			}
			if (a.deletePodAfterStatus != nil) != w.deleteAfter {
				t.Fatalf("deletePodAfterStatus %v, want %v", a.deletePodAfterStatus, w.deleteAfter)
			}
			if a.removeFinalizers != w.removeFinalizers || !slices.Equal(a.finalizers, w.finalizers) {
				t.Fatalf("finalizers %v (remove %v), want %v", a.finalizers, a.removeFinalizers, w.finalizers)
			}
		})
	}
}

// The decisions never change what sync read (the cache's objects are shared).
func TestDecideVMIDoesNotModifyItsInput(t *testing.T) {
	vmi := testVMI(v1.Scheduling)
	ts := metav1.NewTime(t0)
	vmi.DeletionTimestamp = &ts
	vmi.Finalizers = []string{v1.VirtualMachineInstanceFinalizer, v1.VirtualMachineControllerFinalizer}
	before := vmi.DeepCopy()
	pod := testPod(podRunning)
	podBefore := pod.DeepCopy()
	decideVMI(vmiInput{vmi: vmi, pods: []*corev1.Pod{pod}, state: guest(GuestRunning), now: t0})
	decideVMI(vmiInput{vmi: vmi, now: t0})
	vmi.DeletionTimestamp = nil
	before.DeletionTimestamp = nil
	decideVMI(vmiInput{vmi: vmi, pods: []*corev1.Pod{pod}, state: guest(GuestRunning), hasToken: true, now: t0})
	if !reflect.DeepEqual(vmi, before) || !reflect.DeepEqual(pod, podBefore) {
		t.Fatal("decideVMI modified the cached VMI or pod")
	}
}

// A VMI naming a claim that does not exist gets no pod, KubeVirt's ErrorPvcNotFound conditions and one
// FailedPvcNotFound event; once the claim is in the cache the pod is created and the conditions go.
func TestDecideVMIMissingClaim(t *testing.T) {
	vmi := testVMI(v1.Pending)
	vmi.Spec.Volumes = []v1.Volume{{Name: "root", PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}
	a := decideVMI(vmiInput{vmi: vmi, now: t0})
	if a.createPod {
		t.Fatal("a pod for a VMI whose claim does not exist")
	}
	sync := a.status.Condition(v1.VirtualMachineInstanceSynchronized)
	if a.status == nil || sync == nil || sync.Reason != v1.FailedPvcNotFoundReason || sync.Message != "PVC ns/data does not exist, waiting for it to appear" {
		t.Fatalf("status %+v", a.status)
	}
	if len(a.events) != 1 || a.events[0].reason != v1.FailedPvcNotFoundReason {
		t.Fatalf("events %+v", a.events)
	}
	vmi.Status = *a.status
	if again := decideVMI(vmiInput{vmi: vmi, now: t0}); again.status != nil || len(again.events) != 0 {
		t.Fatalf("an unchanged missing claim rewrote the status or repeated the event: %+v", again)
	}
	found := decideVMI(vmiInput{vmi: vmi, claims: map[string]*corev1.PersistentVolumeClaim{"data": {}}, now: t0})
	if !found.createPod || found.status == nil || found.status.Condition(v1.VirtualMachineInstanceSynchronized) != nil {
		t.Fatalf("claim present: createPod %v, status %+v", found.createPod, found.status)
	}
}

// BEHAVIOUR.md §3 shutdown: what the controller asks of a launcher (virt-handler's part of stopping a
// VMI) and the event it records once the launcher took the request.
func TestDecideLauncherCall(t *testing.T) {
	grace := func(s int64) func(*v1.VirtualMachineInstance) {
		return func(v *v1.VirtualMachineInstance) { v.Spec.TerminationGracePeriodSeconds = &s }
	}
	deleting := func(v *v1.VirtualMachineInstance) { ts := metav1.NewTime(t0); v.DeletionTimestamp = &ts }
	vmiWith := func(opts ...func(*v1.VirtualMachineInstance)) *v1.VirtualMachineInstance {
		v := testVMI(v1.Running)
		for _, o := range opts {
			o(v)
		}
		return v
	}
	s := func(n int64) *int64 { return &n }
	running := &LauncherState{Phase: GuestRunning, GracePeriodSeconds: s(30)}
	shutting := func(g int64) *LauncherState {
		return &LauncherState{Phase: GuestRunning, ShuttingDown: true, GracePeriodSeconds: s(g)}
	}
	podGrace := func(g int64) podOpt { return func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = &g } }
	for _, tc := range []struct {
		name      string
		vmi       *v1.VirtualMachineInstance
		pod       *corev1.Pod
		state     *LauncherState
		sent      launcherSent
		noCmd     bool
		noToken   bool
		op        LauncherOp // "": no call
		grace     time.Duration
		wantEvent *vmiEvent
	}{
		{"deleted/graceful shutdown with the VMI's grace, ShuttingDown", vmiWith(deleting), testPod(podRunning), running, launcherSent{}, false, false,
			OpShutdown, 30 * time.Second, &evShuttingDown},
		{"deleted, shutdown signalled/nothing again", vmiWith(deleting), testPod(podRunning), running, launcherSent{shutdown: true, grace: s(30)}, false, false, "", 0, nil},
		{"deleted, launcher shutting down on its own (SIGTERM first)/nothing", vmiWith(deleting), testPod(podRunning, podDeleting), shutting(30), launcherSent{}, false, false, "", 0, nil},
		{"force stop with grace 5 during a 600 s shutdown/grace passed on", vmiWith(deleting, grace(5)), testPod(podRunning, podDeleting), shutting(600), launcherSent{shutdown: true, grace: s(600)}, false, false,
			OpSetGrace, 5 * time.Second, nil},
		{"force stop with grace 5, passed on/nothing again", vmiWith(deleting, grace(5)), testPod(podRunning, podDeleting), shutting(600), launcherSent{shutdown: true, grace: s(5)}, false, false, "", 0, nil},
		{"force stop with grace 0/stop now, Deleted", vmiWith(deleting, grace(0)), testPod(podRunning, podDeleting), shutting(600), launcherSent{shutdown: true}, false, false,
			OpStop, 0, &evStopping},
		{"force stop with grace 0 sent/nothing again", vmiWith(deleting, grace(0)), testPod(podRunning, podDeleting), shutting(600), launcherSent{stop: true}, false, false, "", 0, nil},
		{"deleted with grace 0, not shutting down/stop now", vmiWith(deleting, grace(0)), testPod(podRunning), running, launcherSent{}, false, false, OpStop, 0, &evStopping},
		{"running, grace lowered/passed on for the next SIGTERM", vmiWith(grace(10)), testPod(podRunning), running, launcherSent{}, false, false, OpSetGrace, 10 * time.Second, nil},
		{"running, grace unchanged/nothing", vmiWith(), testPod(podRunning), running, launcherSent{}, false, false, "", 0, nil},
		{"running, launcher grace not reported/the pod's less the margin", vmiWith(grace(30)), testPod(podRunning, podGrace(615)), guest(GuestRunning), launcherSent{}, false, false,
			OpSetGrace, 30 * time.Second, nil},
		{"running, launcher grace not reported, pod as rendered/nothing", vmiWith(), testPod(podRunning, podGrace(45)), guest(GuestRunning), launcherSent{}, false, false, "", 0, nil},
		{"deleted, launcher never reported/nothing (the pod's SIGTERM)", vmiWith(deleting), testPod(podRunning), nil, launcherSent{}, false, false, "", 0, nil},
		{"deleted, guest already off/nothing", vmiWith(deleting), testPod(podRunning), guest(GuestSucceeded), launcherSent{}, false, false, "", 0, nil},
		{"deleted, launcher exited/nothing", vmiWith(deleting), testPod(podExited(0, corev1.PodSucceeded, "")), running, launcherSent{}, false, false, "", 0, nil},
		{"deleted, no token/nothing", vmiWith(deleting), testPod(podRunning), running, launcherSent{}, false, true, "", 0, nil},
		{"deleted, source cannot send/nothing", vmiWith(deleting), testPod(podRunning), running, launcherSent{}, true, false, "", 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := vmiInput{vmi: tc.vmi, pods: []*corev1.Pod{tc.pod}, state: tc.state, sent: tc.sent, commander: !tc.noCmd,
				token: "tok", hasToken: !tc.noToken, needIP: true, port: 8186, now: t0}
			c := decideLauncherCall(in, tc.pod)
			if tc.op == "" {
				if c != nil {
					t.Fatalf("call %+v, want none", c.cmd)
				}
				return
			}
			if c == nil || c.cmd.Op != tc.op || c.cmd.Grace != tc.grace {
				t.Fatalf("call %+v, want %s %v", c, tc.op, tc.grace)
			}
			if c.ep.PodName != "pod" || c.ep.PodIP != "10.0.0.5" || c.ep.Token != "tok" {
				t.Fatalf("endpoint %+v", c.ep)
			}
			if (c.event == nil) != (tc.wantEvent == nil) || (c.event != nil && *c.event != *tc.wantEvent) {
				t.Fatalf("event %+v, want %+v", c.event, tc.wantEvent)
			}
			// decideVMI makes the same call, before the pods are deleted.
			if a := decideVMI(in); a.call == nil || a.call.cmd != c.cmd {
				t.Fatalf("decideVMI call %+v", a.call)
			}
		})
	}
}

// BEHAVIOUR.md §3 deletion: a deleted VMI's pods get no longer a grace period than the VMI's now plus the
// launcher's margin; a deletion under way with a longer one is cut.
func TestDecideVMIPodGrace(t *testing.T) {
	g := func(n int64) *int64 { return &n }
	vmi := testVMI(v1.Running)
	ts := metav1.NewTime(t0)
	vmi.DeletionTimestamp = &ts
	live := testPod(podRunning)
	live.Spec.TerminationGracePeriodSeconds = g(45)
	going := testPod(podRunning, podDeleting)
	going.Name, going.DeletionGracePeriodSeconds = "going", g(615)
	names := func(ps []*corev1.Pod) (out []string) {
		for _, p := range ps {
			out = append(out, p.Name)
		}
		return out
	}
	a := decideVMI(vmiInput{vmi: vmi, pods: []*corev1.Pod{live, going}, now: t0})
	if !slices.Equal(names(a.deletePods), []string{"pod"}) || !slices.Equal(names(a.shortenPods), []string{"going"}) || a.podGrace != 45 {
		t.Fatalf("grace 30: delete %v, shorten %v to %d", names(a.deletePods), names(a.shortenPods), a.podGrace)
	}
	vmi.Spec.TerminationGracePeriodSeconds = g(0)
	a = decideVMI(vmiInput{vmi: vmi, pods: []*corev1.Pod{live, going}, now: t0})
	if len(a.deletePods) != 0 || !slices.Equal(names(a.shortenPods), []string{"pod", "going"}) || a.podGrace != 15 {
		t.Fatalf("grace 0: delete %v, shorten %v to %d", names(a.deletePods), names(a.shortenPods), a.podGrace)
	}
}

// BEHAVIOUR.md §3 node loss, actions: the decision waits for the node's timeout, marks the VMI Unknown,
// and never creates a pod or drops the finalizer while the old pod exists.
func TestDecideVMINodeLost(t *testing.T) {
	const timeout = 30 * time.Second
	notReadyFor := func(d time.Duration) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionUnknown, LastTransitionTime: metav1.NewTime(t0.Add(-d))}}}}
	}
	running := testVMI(v1.Running)
	running.Labels = map[string]string{v1.NodeNameLabel: "node1"}
	running.Status.NodeName = "node1"
	unknown := running.DeepCopy()
	unknown.Status.Phase = v1.Unknown
	deleting := running.DeepCopy()
	ts := metav1.NewTime(t0)
	deleting.DeletionTimestamp = &ts
	live, terminating := testPod(podRunning, gateTrue), testPod(podRunning, gateTrue, podDeleting)
	for _, tc := range []struct {
		name    string
		vmi     *v1.VirtualMachineInstance
		pods    []*corev1.Pod
		node    *corev1.Node
		status  v1.VirtualMachineInstancePhase // "-": not written
		recheck time.Duration
	}{
		{"NotReady within the timeout/still Running, recheck then", running, []*corev1.Pod{live}, notReadyFor(10 * time.Second), v1.Running, 20 * time.Second},
		{"NotReady past the timeout/Unknown", running, []*corev1.Pod{live}, notReadyFor(timeout), v1.Unknown, 0},
		{"node deleted/Unknown", running, []*corev1.Pod{live}, nil, v1.Unknown, 0},
		{"pod terminating on a lost node/Unknown, held", unknown, []*corev1.Pod{terminating}, notReadyFor(time.Hour), v1.Unknown, 0},
		{"VMI deleted, pod terminating on a lost node/Unknown, finalizer kept", deleting, []*corev1.Pod{terminating}, notReadyFor(time.Hour), v1.Unknown, 0},
		{"pod gone from a lost node/Failed NodeUnresponsive, no new pod", unknown, nil, notReadyFor(time.Hour), v1.Failed, 0},
		{"final VMI on a NotReady node/no recheck", testVMI(v1.Failed), []*corev1.Pod{terminating}, notReadyFor(time.Second), "-", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := decideVMI(vmiInput{vmi: tc.vmi, pods: tc.pods, state: guest(GuestRunning), token: "tok", hasToken: true, port: 8186,
				nodeName: "node1", node: tc.node, notReadyTimeout: timeout, now: t0})
			if a.createPod || a.removeFinalizers || len(a.deletePods) != 0 || a.deletePodAfterStatus != nil {
				t.Fatalf("createPod %v removeFinalizers %v deletePods %v deleteAfter %v: nothing may go or start while the pod may run",
					a.createPod, a.removeFinalizers, a.deletePods, a.deletePodAfterStatus)
			}
			switch {
			case tc.status == "-" && a.status != nil:
				t.Fatalf("status written: %+v", a.status)
			case tc.status != "-" && (a.status == nil || a.status.Phase != tc.status):
				t.Fatalf("status %+v, want phase %s", a.status, tc.status)
			}
			if a.recheck != tc.recheck {
				t.Fatalf("recheck %v, want %v", a.recheck, tc.recheck)
			}
		})
	}
}
