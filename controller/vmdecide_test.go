package controller

import (
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func uidp(s string) *types.UID { u := types.UID(s); return &u }

func vmiIn(phase v1.VirtualMachineInstancePhase) *v1.VirtualMachineInstance {
	return &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "vm", UID: "u1"}, Status: v1.VirtualMachineInstanceStatus{Phase: phase}}
}

// vmiRan is a final VMI that was Running once.
func vmiRan(phase v1.VirtualMachineInstancePhase) *v1.VirtualMachineInstance {
	v := vmiIn(phase)
	v.Status.PhaseTransitionTimestamps = []v1.VirtualMachineInstancePhaseTransitionTimestamp{{Phase: v1.Running}, {Phase: phase}}
	return v
}

func deletingVMI(phase v1.VirtualMachineInstancePhase) *v1.VirtualMachineInstance {
	v := vmiIn(phase)
	ts := metav1.Now()
	v.DeletionTimestamp = &ts
	return v
}

func TestDecideRunStrategy(t *testing.T) {
	now := time.Unix(1000, 0)
	start := []v1.VirtualMachineStateChangeRequest{{Action: v1.StartRequest}}
	startPausedReq := []v1.VirtualMachineStateChangeRequest{{Action: v1.StartRequest, Data: map[string]string{"paused": "true"}}}
	stopU1 := []v1.VirtualMachineStateChangeRequest{{Action: v1.StopRequest, UID: uidp("u1")}}
	stopOther := []v1.VirtualMachineStateChangeRequest{{Action: v1.StopRequest, UID: uidp("u0")}}
	stopNoUID := []v1.VirtualMachineStateChangeRequest{{Action: v1.StopRequest}}
	stopThenStart := []v1.VirtualMachineStateChangeRequest{{Action: v1.StopRequest, UID: uidp("u1")}, {Action: v1.StartRequest}}
	future := metav1.NewTime(now.Add(30 * time.Second))
	backoff := &v1.VirtualMachineStartFailure{ConsecutiveFailCount: 1, RetryAfterTimestamp: &future}
	recorded := &v1.VirtualMachineStartFailure{ConsecutiveFailCount: 1, LastFailedVMIUID: "u1"}

	cases := []struct {
		name     string
		strategy v1.VirtualMachineRunStrategy
		reqs     []v1.VirtualMachineStateChangeRequest
		statusRS v1.VirtualMachineRunStrategy
		sf       *v1.VirtualMachineStartFailure
		vmi      *v1.VirtualMachineInstance
		want     vmActions
	}{
		{"Always/no VMI creates", v1.RunStrategyAlways, nil, "", nil, nil, vmActions{create: true}},
		{"Always/no VMI in backoff waits", v1.RunStrategyAlways, nil, "", backoff, nil, vmActions{waitUntil: future.Time}},
		{"Always/paused start", v1.RunStrategyAlways, startPausedReq, "", nil, nil, vmActions{create: true, startPaused: true}},
		{"Always/running kept", v1.RunStrategyAlways, nil, "", nil, vmiIn(v1.Running), vmActions{}},
		{"Always/succeeded deleted", v1.RunStrategyAlways, nil, "", nil, vmiRan(v1.Succeeded), vmActions{deleteVMI: true}},
		{"Always/failed: record first", v1.RunStrategyAlways, nil, "", nil, vmiIn(v1.Failed), vmActions{deleteVMI: true, recordFailureFirst: true}},
		{"Always/failed recorded: deleted", v1.RunStrategyAlways, nil, "", recorded, vmiIn(v1.Failed), vmActions{deleteVMI: true}},
		{"Always/matching stop deletes", v1.RunStrategyAlways, stopU1, "", nil, vmiIn(v1.Running), vmActions{deleteVMI: true}},
		{"Always/other stop ignored", v1.RunStrategyAlways, stopOther, "", nil, vmiIn(v1.Running), vmActions{}},
		{"Always/deleting VMI left alone", v1.RunStrategyAlways, nil, "", nil, deletingVMI(v1.Failed), vmActions{}},
		{"Rerun/first start", v1.RunStrategyRerunOnFailure, nil, "", nil, nil, vmActions{create: true}},
		{"Rerun/after success stays stopped", v1.RunStrategyRerunOnFailure, nil, v1.RunStrategyRerunOnFailure, nil, nil, vmActions{}},
		{"Rerun/start request", v1.RunStrategyRerunOnFailure, start, v1.RunStrategyRerunOnFailure, nil, nil, vmActions{create: true}},
		{"Rerun/succeeded deleted", v1.RunStrategyRerunOnFailure, nil, v1.RunStrategyRerunOnFailure, nil, vmiRan(v1.Succeeded), vmActions{deleteVMI: true}},
		{"Rerun/failed: Start appended first", v1.RunStrategyRerunOnFailure, nil, v1.RunStrategyRerunOnFailure, recorded, vmiIn(v1.Failed), vmActions{appendStart: true}},
		{"Rerun/failed with Start: deleted", v1.RunStrategyRerunOnFailure, start, v1.RunStrategyRerunOnFailure, recorded, vmiIn(v1.Failed), vmActions{deleteVMI: true}},
		{"Rerun/deleting VMI left alone", v1.RunStrategyRerunOnFailure, nil, v1.RunStrategyRerunOnFailure, nil, deletingVMI(v1.Failed), vmActions{}},
		{"Manual/no VMI no request", v1.RunStrategyManual, nil, "", nil, nil, vmActions{}},
		{"Manual/start", v1.RunStrategyManual, start, "", nil, nil, vmActions{create: true}},
		{"Manual/final kept", v1.RunStrategyManual, nil, "", nil, vmiIn(v1.Failed), vmActions{}},
		{"Manual/stop", v1.RunStrategyManual, stopU1, "", nil, vmiIn(v1.Running), vmActions{deleteVMI: true}},
		{"Manual/no backoff", v1.RunStrategyManual, start, "", backoff, nil, vmActions{create: true}},
		{"Halted/no VMI", v1.RunStrategyHalted, nil, "", nil, nil, vmActions{}},
		{"Halted/VMI deleted", v1.RunStrategyHalted, nil, "", nil, vmiIn(v1.Running), vmActions{deleteVMI: true}},
		{"Halted/start switches to Always", v1.RunStrategyHalted, startPausedReq, "", nil, nil, vmActions{switchToAlways: true}},
		{"Once/no VMI creates", v1.RunStrategyOnce, nil, "", nil, nil, vmActions{create: true}},
		{"Once/final kept", v1.RunStrategyOnce, nil, "", nil, vmiRan(v1.Succeeded), vmActions{}},
		{"Once/stop ignored", v1.RunStrategyOnce, stopU1, "", nil, vmiIn(v1.Running), vmActions{}},
		// Rows added after re-checking BEHAVIOUR.md §1 against KubeVirt's syncRunStrategy.
		{"Always/stop without UID ignored", v1.RunStrategyAlways, stopNoUID, "", nil, vmiIn(v1.Running), vmActions{}},
		{"Always/restart [Stop{uid},Start] deletes", v1.RunStrategyAlways, stopThenStart, "", nil, vmiIn(v1.Running), vmActions{deleteVMI: true}},
		{"Always/failed VMI in backoff still deleted", v1.RunStrategyAlways, nil, "", &v1.VirtualMachineStartFailure{ConsecutiveFailCount: 1, LastFailedVMIUID: "u1", RetryAfterTimestamp: &future}, vmiIn(v1.Failed), vmActions{deleteVMI: true}},
		{"Rerun/strategy switched from Manual starts", v1.RunStrategyRerunOnFailure, nil, v1.RunStrategyManual, nil, nil, vmActions{create: true}},
		{"Rerun/first start in backoff waits", v1.RunStrategyRerunOnFailure, start, v1.RunStrategyRerunOnFailure, backoff, nil, vmActions{waitUntil: future.Time}},
		{"Rerun/matching stop deletes", v1.RunStrategyRerunOnFailure, stopU1, v1.RunStrategyRerunOnFailure, nil, vmiIn(v1.Running), vmActions{deleteVMI: true}},
		{"Rerun/stop without UID ignored", v1.RunStrategyRerunOnFailure, stopNoUID, v1.RunStrategyRerunOnFailure, nil, vmiIn(v1.Running), vmActions{}},
		{"Rerun/running kept", v1.RunStrategyRerunOnFailure, nil, v1.RunStrategyRerunOnFailure, nil, vmiIn(v1.Running), vmActions{}},
		{"Manual/paused start", v1.RunStrategyManual, startPausedReq, "", nil, nil, vmActions{create: true, startPaused: true}},
		{"Manual/stop without UID ignored", v1.RunStrategyManual, stopNoUID, "", nil, vmiIn(v1.Running), vmActions{}},
		{"Manual/other stop ignored", v1.RunStrategyManual, stopOther, "", nil, vmiIn(v1.Running), vmActions{}},
		{"Manual/start with final VMI waits for the stop", v1.RunStrategyManual, start, "", nil, vmiRan(v1.Succeeded), vmActions{}},
		{"Halted/final VMI deleted", v1.RunStrategyHalted, nil, "", nil, vmiRan(v1.Succeeded), vmActions{deleteVMI: true}},
		{"Halted/start with a VMI: delete it first, no switch", v1.RunStrategyHalted, startPausedReq, "", nil, vmiIn(v1.Running), vmActions{deleteVMI: true}},
		{"Halted/start while the VMI is deleted: wait", v1.RunStrategyHalted, startPausedReq, "", nil, deletingVMI(v1.Running), vmActions{}},
		{"Halted/deleting VMI left alone", v1.RunStrategyHalted, nil, "", nil, deletingVMI(v1.Running), vmActions{}},
		{"Once/user-deleted VMI recreated without backoff", v1.RunStrategyOnce, nil, v1.RunStrategyOnce, backoff, nil, vmActions{create: true}},
		{"Once/failed kept", v1.RunStrategyOnce, nil, v1.RunStrategyOnce, recorded, vmiIn(v1.Failed), vmActions{}},
		// Node loss (§3): a VMI whose node is lost is Unknown, not final, so no strategy starts another
		// while it may still run; once it failed (its pod is gone) the strategy applies.
		{"Always/unknown (node lost) kept, none created", v1.RunStrategyAlways, nil, "", nil, vmiRan(v1.Unknown), vmActions{}},
		{"Rerun/unknown (node lost) kept", v1.RunStrategyRerunOnFailure, nil, v1.RunStrategyRerunOnFailure, nil, vmiRan(v1.Unknown), vmActions{}},
		{"Manual/start with an unknown VMI waits", v1.RunStrategyManual, start, "", nil, vmiRan(v1.Unknown), vmActions{}},
		{"Halted/unknown VMI deleted", v1.RunStrategyHalted, nil, "", nil, vmiRan(v1.Unknown), vmActions{deleteVMI: true}},
		{"Always/unknown VMI being deleted: none created", v1.RunStrategyAlways, nil, "", nil, deletingVMI(v1.Unknown), vmActions{}},
		{"Always/failed on a lost node after running: deleted, no start failure", v1.RunStrategyAlways, nil, "", nil, vmiRan(v1.Failed), vmActions{deleteVMI: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "vm"}}
			vm.Status.StateChangeRequests = tc.reqs
			vm.Status.RunStrategy = tc.statusRS
			vm.Status.StartFailure = tc.sf
			got := decideRunStrategy(vm, tc.strategy, tc.vmi, now)
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	t.Run("VM being deleted deletes its VMI", func(t *testing.T) {
		ts := metav1.Now()
		vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "vm", DeletionTimestamp: &ts}}
		if got := decideRunStrategy(vm, v1.RunStrategyAlways, vmiIn(v1.Running), now); !got.deleteVMI || got.create {
			t.Fatalf("got %+v", got)
		}
		if got := decideRunStrategy(vm, v1.RunStrategyAlways, nil, now); got.create {
			t.Fatalf("a VM being deleted must not create: %+v", got)
		}
	})
}

func TestTrimRequests(t *testing.T) {
	stop := v1.VirtualMachineStateChangeRequest{Action: v1.StopRequest, UID: uidp("u1")}
	start := v1.VirtualMachineStateChangeRequest{Action: v1.StartRequest}
	cases := []struct {
		name string
		reqs []v1.VirtualMachineStateChangeRequest
		vmi  *v1.VirtualMachineInstance
		want int
	}{
		{"stop kept while its VMI exists", []v1.VirtualMachineStateChangeRequest{stop, start}, vmiIn(v1.Running), 2},
		{"stop popped without VMI", []v1.VirtualMachineStateChangeRequest{stop, start}, nil, 1},
		{"stop popped for another VMI", []v1.VirtualMachineStateChangeRequest{stop}, &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{UID: "u2"}}, 0},
		{"start kept without VMI", []v1.VirtualMachineStateChangeRequest{start}, nil, 1},
		{"start kept for final VMI", []v1.VirtualMachineStateChangeRequest{start}, vmiIn(v1.Succeeded), 1},
		{"start kept for deleting VMI", []v1.VirtualMachineStateChangeRequest{start}, deletingVMI(v1.Running), 1},
		{"start popped for live VMI", []v1.VirtualMachineStateChangeRequest{start}, vmiIn(v1.Scheduling), 0},
		{"stop without UID popped although a VMI exists", []v1.VirtualMachineStateChangeRequest{{Action: v1.StopRequest}, start}, vmiIn(v1.Running), 1},
		{"only the first request is looked at", []v1.VirtualMachineStateChangeRequest{start, stop}, nil, 2},
		{"empty list", nil, vmiIn(v1.Running), 0},
	}
	for _, tc := range cases {
		if got := trimRequests(tc.reqs, tc.vmi); len(got) != tc.want {
			t.Errorf("%s: %d requests left, want %d", tc.name, len(got), tc.want)
		}
	}
}

func TestStartBackoff(t *testing.T) {
	noJitter := func(int64) int64 { return 0 }
	maxJitter := func(n int64) int64 { return n - 1 }
	for _, tc := range []struct {
		n        int
		min, max time.Duration
	}{
		{1, 10 * time.Second, 15 * time.Second},
		{2, 40 * time.Second, 60 * time.Second},
		{3, 90 * time.Second, 135 * time.Second},
		{10, 300 * time.Second, 300 * time.Second},
	} {
		if got := startBackoff(tc.n, noJitter); got != tc.min {
			t.Errorf("n=%d no jitter: %v, want %v", tc.n, got, tc.min)
		}
		if got := startBackoff(tc.n, maxJitter); got != tc.max {
			t.Errorf("n=%d max jitter: %v, want %v", tc.n, got, tc.max)
		}
	}
}

func TestNextStartFailure(t *testing.T) {
	now := time.Unix(1000, 0)
	j := func(int64) int64 { return 0 }
	failed := vmiIn(v1.Failed)
	sf := nextStartFailure(nil, v1.RunStrategyAlways, failed, now, j)
	if sf == nil || sf.ConsecutiveFailCount != 1 || sf.LastFailedVMIUID != "u1" || !sf.RetryAfterTimestamp.Time.Equal(now.Add(10*time.Second)) {
		t.Fatalf("first failure: %+v", sf)
	}
	if again := nextStartFailure(sf, v1.RunStrategyAlways, failed, now, j); again.ConsecutiveFailCount != 1 {
		t.Fatalf("the same VMI counted twice: %+v", again)
	}
	second := vmiIn(v1.Failed)
	second.UID = "u2"
	if sf2 := nextStartFailure(sf, v1.RunStrategyAlways, second, now, j); sf2.ConsecutiveFailCount != 2 {
		t.Fatalf("second failure: %+v", sf2)
	}
	ranThenFailed := vmiIn(v1.Failed)
	ranThenFailed.UID = "u3"
	ranThenFailed.Status.PhaseTransitionTimestamps = []v1.VirtualMachineInstancePhaseTransitionTimestamp{{Phase: v1.Running}}
	if got := nextStartFailure(sf, v1.RunStrategyAlways, ranThenFailed, now, j); got != sf {
		t.Fatalf("a VMI that ran is not a start failure: %+v", got)
	}
	if got := nextStartFailure(sf, v1.RunStrategyAlways, vmiIn(v1.Running), now, j); got != nil {
		t.Fatalf("Running clears: %+v", got)
	}
	if got := nextStartFailure(sf, v1.RunStrategyManual, nil, now, j); got != nil {
		t.Fatalf("Manual clears: %+v", got)
	}
}

func TestPrintableStatus(t *testing.T) {
	ts := metav1.Now()
	withCond := func(phase v1.VirtualMachineInstancePhase, typ v1.VirtualMachineInstanceConditionType, st corev1.ConditionStatus, reason string) *v1.VirtualMachineInstance {
		v := vmiIn(phase)
		v.Status.Conditions = []v1.VirtualMachineInstanceCondition{{Type: typ, Status: st, Reason: reason}}
		return v
	}
	paused := withCond(v1.Running, v1.VirtualMachineInstancePaused, corev1.ConditionTrue, v1.PausedByUserReason)
	unsched := withCond(v1.Scheduling, v1.VirtualMachineInstancePodScheduled, corev1.ConditionFalse, "Unschedulable")
	pvc := withCond(v1.Pending, v1.VirtualMachineInstanceSynchronized, corev1.ConditionFalse, "FailedPvcNotFound")
	pull := withCond(v1.Scheduled, v1.VirtualMachineInstanceSynchronized, corev1.ConditionFalse, "ErrImagePull")
	pullBackOff := withCond(v1.Scheduled, v1.VirtualMachineInstanceSynchronized, corev1.ConditionFalse, "ImagePullBackOff")
	pullTrue := withCond(v1.Scheduled, v1.VirtualMachineInstanceSynchronized, corev1.ConditionTrue, "ErrImagePull")
	sf := &v1.VirtualMachineStartFailure{ConsecutiveFailCount: 1}
	start := []v1.VirtualMachineStateChangeRequest{{Action: v1.StartRequest}}
	stopU1 := []v1.VirtualMachineStateChangeRequest{{Action: v1.StopRequest, UID: uidp("u1")}}
	cases := []struct {
		name       string
		vmDeleting bool
		strategy   v1.VirtualMachineRunStrategy
		statusRS   v1.VirtualMachineRunStrategy
		reqs       []v1.VirtualMachineStateChangeRequest
		vmi        *v1.VirtualMachineInstance
		adds, dels bool
		sf         *v1.VirtualMachineStartFailure
		unboundPVC bool
		want       v1.VirtualMachinePrintableStatus
	}{
		{"1 terminating", true, v1.RunStrategyAlways, "", nil, vmiIn(v1.Running), false, false, nil, false, v1.VirtualMachineStatusTerminating},
		{"1 terminating beats stopping", true, v1.RunStrategyAlways, "", nil, deletingVMI(v1.Running), false, true, nil, false, v1.VirtualMachineStatusTerminating},
		{"2 stopping (deleting)", false, v1.RunStrategyHalted, "", nil, deletingVMI(v1.Running), false, false, nil, false, v1.VirtualMachineStatusStopping},
		{"2 stopping (expected)", false, v1.RunStrategyHalted, "", nil, vmiIn(v1.Running), false, true, nil, false, v1.VirtualMachineStatusStopping},
		{"2 final VMI being deleted is not stopping", false, v1.RunStrategyHalted, "", nil, deletingVMI(v1.Succeeded), false, false, nil, false, v1.VirtualMachineStatusStopped},
		{"4 paused", false, v1.RunStrategyAlways, "", nil, paused, false, false, nil, false, v1.VirtualMachineStatusPaused},
		{"5 running", false, v1.RunStrategyAlways, "", nil, vmiIn(v1.Running), false, false, nil, false, v1.VirtualMachineStatusRunning},
		{"5 running beats an unbound PVC", false, v1.RunStrategyAlways, "", nil, vmiIn(v1.Running), false, false, nil, true, v1.VirtualMachineStatusRunning},
		{"6 pvc not found", false, v1.RunStrategyAlways, "", nil, pvc, false, false, nil, false, v1.VirtualMachineStatusPvcNotFound},
		{"8 unschedulable", false, v1.RunStrategyAlways, "", nil, unsched, false, false, nil, false, v1.VirtualMachineStatusUnschedulable},
		{"8 unschedulable beats volume binding", false, v1.RunStrategyAlways, "", nil, unsched, false, false, nil, true, v1.VirtualMachineStatusUnschedulable},
		{"10 volume binding (Always, no VMI)", false, v1.RunStrategyAlways, "", nil, nil, false, false, nil, true, v1.VirtualMachineStatusWaitingForVolumeBinding},
		{"10 volume binding (Always, pending VMI)", false, v1.RunStrategyAlways, "", nil, vmiIn(v1.Pending), false, false, nil, true, v1.VirtualMachineStatusWaitingForVolumeBinding},
		{"10 volume binding beats image pull", false, v1.RunStrategyAlways, "", nil, pull, false, false, nil, true, v1.VirtualMachineStatusWaitingForVolumeBinding},
		{"10 volume binding (Manual, start request)", false, v1.RunStrategyManual, "", start, nil, true, false, nil, true, v1.VirtualMachineStatusWaitingForVolumeBinding},
		{"10 volume binding (Rerun, never started)", false, v1.RunStrategyRerunOnFailure, "", nil, nil, false, false, nil, true, v1.VirtualMachineStatusWaitingForVolumeBinding},
		{"10 volume binding (Once, no VMI)", false, v1.RunStrategyOnce, "", nil, nil, false, false, nil, true, v1.VirtualMachineStatusWaitingForVolumeBinding},
		{"10 not set to start: Halted stays stopped", false, v1.RunStrategyHalted, "", nil, nil, false, false, nil, true, v1.VirtualMachineStatusStopped},
		{"10 not set to start: Manual without request", false, v1.RunStrategyManual, "", nil, nil, false, false, nil, true, v1.VirtualMachineStatusStopped},
		{"10 not set to start: Manual with its stop", false, v1.RunStrategyManual, "", stopU1, vmiIn(v1.Pending), false, false, nil, true, v1.VirtualMachineStatusStarting},
		{"10 not set to start: Rerun after success", false, v1.RunStrategyRerunOnFailure, v1.RunStrategyRerunOnFailure, nil, nil, false, false, nil, true, v1.VirtualMachineStatusStopped},
		{"10 not set to start: Once with a final VMI", false, v1.RunStrategyOnce, v1.RunStrategyOnce, nil, vmiRan(v1.Succeeded), false, false, nil, true, v1.VirtualMachineStatusStopped},
		{"11 err image pull", false, v1.RunStrategyAlways, "", nil, pull, false, false, nil, false, v1.VirtualMachineStatusErrImagePull},
		{"11 image pull back-off", false, v1.RunStrategyAlways, "", nil, pullBackOff, false, false, nil, false, v1.VirtualMachineStatusImagePullBackOff},
		{"11 Synchronized=True is no pull error", false, v1.RunStrategyAlways, "", nil, pullTrue, false, false, nil, false, v1.VirtualMachineStatusStarting},
		{"12 starting (expected)", false, v1.RunStrategyAlways, "", nil, nil, true, false, nil, false, v1.VirtualMachineStatusStarting},
		{"12 starting (expected) beats crash loop", false, v1.RunStrategyAlways, "", nil, nil, true, false, sf, false, v1.VirtualMachineStatusStarting},
		{"12 starting (unset phase)", false, v1.RunStrategyAlways, "", nil, vmiIn(v1.VmPhaseUnset), false, false, nil, false, v1.VirtualMachineStatusStarting},
		{"12 starting (pending)", false, v1.RunStrategyAlways, "", nil, vmiIn(v1.Pending), false, false, nil, false, v1.VirtualMachineStatusStarting},
		{"12 starting (scheduling)", false, v1.RunStrategyAlways, "", nil, vmiIn(v1.Scheduling), false, false, nil, false, v1.VirtualMachineStatusStarting},
		{"12 starting (scheduled)", false, v1.RunStrategyAlways, "", nil, vmiIn(v1.Scheduled), false, false, nil, false, v1.VirtualMachineStatusStarting},
		{"13 crash loop (no VMI)", false, v1.RunStrategyAlways, "", nil, nil, false, false, sf, false, v1.VirtualMachineStatusCrashLoopBackOff},
		{"13 crash loop (failed VMI)", false, v1.RunStrategyAlways, "", nil, vmiIn(v1.Failed), false, false, sf, false, v1.VirtualMachineStatusCrashLoopBackOff},
		{"13 crash loop (RerunOnFailure)", false, v1.RunStrategyRerunOnFailure, v1.RunStrategyRerunOnFailure, nil, nil, false, false, sf, false, v1.VirtualMachineStatusCrashLoopBackOff},
		{"13 crash loop (Once)", false, v1.RunStrategyOnce, v1.RunStrategyOnce, nil, vmiIn(v1.Failed), false, false, sf, false, v1.VirtualMachineStatusCrashLoopBackOff},
		{"13 zero count is no crash loop", false, v1.RunStrategyAlways, "", nil, nil, false, false, &v1.VirtualMachineStartFailure{}, false, v1.VirtualMachineStatusStopped},
		{"13 manual: no crash loop", false, v1.RunStrategyManual, "", nil, vmiIn(v1.Failed), false, false, sf, false, v1.VirtualMachineStatusStopped},
		{"13 halted: no crash loop", false, v1.RunStrategyHalted, "", nil, nil, false, false, sf, false, v1.VirtualMachineStatusStopped},
		{"14 stopped (none)", false, v1.RunStrategyHalted, "", nil, nil, false, false, nil, false, v1.VirtualMachineStatusStopped},
		{"14 stopped (final)", false, v1.RunStrategyOnce, "", nil, vmiRan(v1.Succeeded), false, false, nil, false, v1.VirtualMachineStatusStopped},
		{"– unknown (VMI Unknown: node lost)", false, v1.RunStrategyAlways, "", nil, vmiIn(v1.Unknown), false, false, nil, false, v1.VirtualMachineStatusUnknown},
		{"– unknown beats crash loop (the VMI is not final)", false, v1.RunStrategyAlways, "", nil, vmiIn(v1.Unknown), false, false, sf, false, v1.VirtualMachineStatusUnknown},
		{"2 stopping beats unknown (VMI deleted while its node is lost)", false, v1.RunStrategyHalted, "", nil, deletingVMI(v1.Unknown), false, false, nil, false, v1.VirtualMachineStatusStopping},
	}
	for _, tc := range cases {
		vm := &v1.VirtualMachine{}
		if tc.vmDeleting {
			vm.DeletionTimestamp = &ts
		}
		vm.Status.RunStrategy = tc.statusRS
		vm.Status.StateChangeRequests = tc.reqs
		if got := printableStatus(vm, tc.strategy, tc.vmi, tc.adds, tc.dels, tc.sf, tc.unboundPVC); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestVMReadyAndRunStrategyStatus(t *testing.T) {
	readyVMI := func(st corev1.ConditionStatus) *v1.VirtualMachineInstance {
		v := vmiIn(v1.Running)
		v.Status.Conditions = []v1.VirtualMachineInstanceCondition{{Type: v1.VirtualMachineInstanceReady, Status: st, Reason: "R", Message: "M"}}
		return v
	}
	deletingReady := readyVMI(corev1.ConditionTrue)
	ts := metav1.Now()
	deletingReady.DeletionTimestamp = &ts

	for _, tc := range []struct {
		name      string
		vmi       *v1.VirtualMachineInstance
		ready     bool
		condition v1.VirtualMachineCondition
	}{
		{"no VMI", nil, false, v1.VirtualMachineCondition{Type: v1.VirtualMachineReady, Status: corev1.ConditionFalse, Reason: "VMINotExists", Message: "VMI does not exist"}},
		{"VMI without Ready", vmiIn(v1.Pending), false, v1.VirtualMachineCondition{Type: v1.VirtualMachineReady, Status: corev1.ConditionFalse, Reason: "VMIConditionMissing", Message: "VMI is missing the Ready condition"}},
		{"VMI Ready=False copied", readyVMI(corev1.ConditionFalse), false, v1.VirtualMachineCondition{Type: v1.VirtualMachineReady, Status: corev1.ConditionFalse, Reason: "R", Message: "M"}},
		{"VMI Ready=True", readyVMI(corev1.ConditionTrue), true, v1.VirtualMachineCondition{Type: v1.VirtualMachineReady, Status: corev1.ConditionTrue, Reason: "R", Message: "M"}},
		{"VMI being deleted but still Ready=True", deletingReady, true, v1.VirtualMachineCondition{Type: v1.VirtualMachineReady, Status: corev1.ConditionTrue, Reason: "R", Message: "M"}},
	} {
		if got := vmReady(tc.vmi); got != tc.ready {
			t.Errorf("%s: ready %v, want %v", tc.name, got, tc.ready)
		}
		if got := vmReadyCondition(tc.vmi); got != tc.condition {
			t.Errorf("%s: condition %+v, want %+v", tc.name, got, tc.condition)
		}
	}

	for _, tc := range []struct {
		name          string
		cur, strategy v1.VirtualMachineRunStrategy
		vmi           *v1.VirtualMachineInstance
		want          v1.VirtualMachineRunStrategy
	}{
		{"never started: not recorded", "", v1.RunStrategyRerunOnFailure, nil, ""},
		{"first VMI records it", "", v1.RunStrategyRerunOnFailure, vmiIn(v1.Pending), v1.RunStrategyRerunOnFailure},
		{"follows the spec without a VMI", v1.RunStrategyRerunOnFailure, v1.RunStrategyManual, nil, v1.RunStrategyManual},
		{"and back", v1.RunStrategyManual, v1.RunStrategyRerunOnFailure, nil, v1.RunStrategyRerunOnFailure},
		{"with a VMI", v1.RunStrategyAlways, v1.RunStrategyHalted, vmiIn(v1.Running), v1.RunStrategyHalted},
	} {
		if got := statusRunStrategy(tc.cur, tc.strategy, tc.vmi); got != tc.want {
			t.Errorf("status.runStrategy %s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
