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
	paused := vmiIn(v1.Running)
	paused.Status.Conditions = []v1.VirtualMachineInstanceCondition{{Type: v1.VirtualMachineInstancePaused, Status: corev1.ConditionTrue}}
	unsched := vmiIn(v1.Scheduling)
	unsched.Status.Conditions = []v1.VirtualMachineInstanceCondition{{Type: v1.VirtualMachineInstancePodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable"}}
	pvc := vmiIn(v1.Pending)
	pvc.Status.Conditions = []v1.VirtualMachineInstanceCondition{{Type: v1.VirtualMachineInstanceSynchronized, Status: corev1.ConditionFalse, Reason: "FailedPvcNotFound"}}
	sf := &v1.VirtualMachineStartFailure{ConsecutiveFailCount: 1}
	cases := []struct {
		name       string
		vmDeleting bool
		strategy   v1.VirtualMachineRunStrategy
		vmi        *v1.VirtualMachineInstance
		adds, dels bool
		sf         *v1.VirtualMachineStartFailure
		want       v1.VirtualMachinePrintableStatus
	}{
		{"terminating", true, v1.RunStrategyAlways, vmiIn(v1.Running), false, false, nil, v1.VirtualMachineStatusTerminating},
		{"stopping (deleting)", false, v1.RunStrategyHalted, deletingVMI(v1.Running), false, false, nil, v1.VirtualMachineStatusStopping},
		{"stopping (expected)", false, v1.RunStrategyHalted, vmiIn(v1.Running), false, true, nil, v1.VirtualMachineStatusStopping},
		{"paused", false, v1.RunStrategyAlways, paused, false, false, nil, v1.VirtualMachineStatusPaused},
		{"running", false, v1.RunStrategyAlways, vmiIn(v1.Running), false, false, nil, v1.VirtualMachineStatusRunning},
		{"pvc", false, v1.RunStrategyAlways, pvc, false, false, nil, v1.VirtualMachineStatusPvcNotFound},
		{"unschedulable", false, v1.RunStrategyAlways, unsched, false, false, nil, v1.VirtualMachineStatusUnschedulable},
		{"starting (expected)", false, v1.RunStrategyAlways, nil, true, false, nil, v1.VirtualMachineStatusStarting},
		{"starting (scheduled)", false, v1.RunStrategyAlways, vmiIn(v1.Scheduled), false, false, nil, v1.VirtualMachineStatusStarting},
		{"crash loop (no VMI)", false, v1.RunStrategyAlways, nil, false, false, sf, v1.VirtualMachineStatusCrashLoopBackOff},
		{"crash loop (failed VMI)", false, v1.RunStrategyAlways, vmiIn(v1.Failed), false, false, sf, v1.VirtualMachineStatusCrashLoopBackOff},
		{"manual: no crash loop", false, v1.RunStrategyManual, vmiIn(v1.Failed), false, false, sf, v1.VirtualMachineStatusStopped},
		{"stopped (none)", false, v1.RunStrategyHalted, nil, false, false, nil, v1.VirtualMachineStatusStopped},
		{"stopped (final)", false, v1.RunStrategyOnce, vmiIn(v1.Succeeded), false, false, nil, v1.VirtualMachineStatusStopped},
		{"unknown", false, v1.RunStrategyAlways, vmiIn(v1.Unknown), false, false, nil, v1.VirtualMachineStatusUnknown},
	}
	for _, tc := range cases {
		vm := &v1.VirtualMachine{}
		if tc.vmDeleting {
			vm.DeletionTimestamp = &ts
		}
		if got := printableStatus(vm, tc.strategy, tc.vmi, tc.adds, tc.dels, tc.sf); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestABIDefaults(t *testing.T) {
	vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "testvm", UID: "11111111-2222-3333-4444-555555555555"},
		Spec: v1.VirtualMachineSpec{Template: &v1.VirtualMachineInstanceTemplateSpec{}}}
	vm.Spec.Template.Spec.Domain.Devices.Interfaces = []v1.Interface{{Name: "default"}, {Name: "second", MacAddress: "02:00:00:00:00:09"}, {Name: "third"}}
	if !applyABIDefaults(vm) {
		t.Fatal("nothing applied")
	}
	d := vm.Spec.Template.Spec.Domain
	// UUIDv5 of "testvm" in KubeVirt's namespace, as KubeVirt computes it.
	if got := d.Firmware.UUID; got != DefaultFirmwareUUID("testvm") || len(got) != 36 || got[14] != '5' {
		t.Fatalf("firmware uuid %q", got)
	}
	ifs := d.Devices.Interfaces
	if ifs[1].MacAddress != "02:00:00:00:00:09" {
		t.Fatalf("user MAC overwritten: %s", ifs[1].MacAddress)
	}
	if ifs[0].MacAddress == "" || ifs[0].MacAddress == ifs[2].MacAddress || ifs[0].MacAddress[:3] != "02:" {
		t.Fatalf("MACs %q %q", ifs[0].MacAddress, ifs[2].MacAddress)
	}
	if ifs[0].MacAddress != StableMAC(vm.UID, "default") {
		t.Fatal("MAC not stable")
	}
	if applyABIDefaults(vm) {
		t.Fatal("second application changed something")
	}
}
