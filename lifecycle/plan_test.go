package lifecycle

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/lifecycle/lifecycletest"
)

var (
	testVM  = lifecycletest.VM
	testVMI = lifecycletest.VMI
)

// apply runs a JSON patch against obj (as the apiserver would) and returns the result.
func apply[T any](t *testing.T, obj *T, patch []byte) (*T, error) {
	t.Helper()
	doc, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("patch %s does not decode: %v", patch, err)
	}
	out, err := p.Apply(doc)
	if err != nil {
		return nil, err
	}
	var res T
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return &res, nil
}

type outcome struct {
	err         string // full error message, or ""
	runStrategy string // spec.runStrategy after the VM patch ("" = no VM patch)
	running     string // spec.running after the VM patch ("" = no VM patch)
	requests    string // stateChangeRequests after the status patch, "Action[/uid][+paused]" joined by ","
	vmiGrace    string // VMI terminationGracePeriodSeconds after the VMI patch
	deletePod   bool
}

func requestsString(r []v1.VirtualMachineStateChangeRequest) string {
	var parts []string
	for _, c := range r {
		s := string(c.Action)
		if c.UID != nil {
			s += "/" + string(*c.UID)
		}
		if c.Data[v1.StartRequestDataPausedKey] == v1.StartRequestDataPausedTrue {
			s += "+paused"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ",")
}

func check(t *testing.T, vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance, p Plan, err error, want outcome) {
	t.Helper()
	var got outcome
	if err != nil {
		got.err = err.Error()
	} else {
		if p.VMPatch != nil {
			n, err := apply(t, vm, p.VMPatch)
			if err != nil {
				t.Fatalf("VM patch %s does not apply: %v", p.VMPatch, err)
			}
			if n.Spec.RunStrategy != nil {
				got.runStrategy = string(*n.Spec.RunStrategy)
			}
			if n.Spec.Running != nil {
				got.running = map[bool]string{true: "true", false: "false"}[*n.Spec.Running]
			}
		}
		if p.StatusPatch != nil {
			n, err := apply(t, vm, p.StatusPatch)
			if err != nil {
				t.Fatalf("status patch %s does not apply: %v", p.StatusPatch, err)
			}
			got.requests = requestsString(n.Status.StateChangeRequests)
			if n.Status.StartFailure != nil {
				t.Errorf("status patch %s keeps startFailure", p.StatusPatch)
			}
		}
		if p.VMIPatch != nil {
			n, err := apply(t, vmi, p.VMIPatch)
			if err != nil {
				t.Fatalf("VMI patch %s does not apply: %v", p.VMIPatch, err)
			}
			if g := n.Spec.TerminationGracePeriodSeconds; g != nil {
				got.vmiGrace = itoa(*g)
			}
		}
		got.deletePod = p.DeletePodGrace != nil
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func itoa(i int64) string { b, _ := json.Marshal(i); return string(b) }

const conflictPrefix = `Operation cannot be fulfilled on virtualmachine.kubevirt.io "my-vm": `

func TestStartPlan(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rs     v1.VirtualMachineRunStrategy
		phase  v1.VirtualMachineInstancePhase // "none" = no VMI
		paused bool
		want   outcome
	}{
		{"Always", v1.RunStrategyAlways, "none", false, outcome{err: conflictPrefix + "Always does not support manual start requests"}},
		{"Once", v1.RunStrategyOnce, "none", false, outcome{err: conflictPrefix + "Once does not support manual start requests"}},
		{"Halted", v1.RunStrategyHalted, "none", false, outcome{runStrategy: "Always"}},
		{"Halted paused", v1.RunStrategyHalted, "none", true, outcome{requests: "Start+paused"}},
		{"running=false", "running=false", "none", false, outcome{running: "true"}},
		{"Manual", v1.RunStrategyManual, "none", false, outcome{requests: "Start"}},
		{"Manual paused", v1.RunStrategyManual, "none", true, outcome{requests: "Start+paused"}},
		{"Manual Succeeded", v1.RunStrategyManual, v1.Succeeded, false, outcome{requests: "Stop/vmi-uid-1,Start"}},
		{"Manual Failed", v1.RunStrategyManual, v1.Failed, false, outcome{requests: "Stop/vmi-uid-1,Start"}},
		{"RerunOnFailure", v1.RunStrategyRerunOnFailure, "none", false, outcome{requests: "Start"}},
		{"RerunOnFailure Succeeded", v1.RunStrategyRerunOnFailure, v1.Succeeded, false, outcome{requests: "Stop/vmi-uid-1,Start"}},
		{"RerunOnFailure Failed", v1.RunStrategyRerunOnFailure, v1.Failed, false, outcome{err: conflictPrefix + "RerunOnFailure does not support starting VM from failed state"}},
		{"running VMI", v1.RunStrategyManual, v1.Running, false, outcome{err: conflictPrefix + "VM is already running"}},
		{"scheduling VMI", v1.RunStrategyHalted, v1.Scheduling, false, outcome{err: conflictPrefix + "VM is already running"}},
		{"Always running", v1.RunStrategyAlways, v1.Running, false, outcome{err: conflictPrefix + "VM is already running"}},
		{"unset-phase VMI", v1.RunStrategyManual, v1.VmPhaseUnset, false, outcome{requests: "Start"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := testVM(tc.rs)
			var vmi *v1.VirtualMachineInstance
			if tc.phase != "none" {
				vmi = testVMI(tc.phase)
			}
			p, err := StartPlan(vm, vmi, tc.paused)
			check(t, vm, vmi, p, err, tc.want)
			if err != nil && !apierrors.IsConflict(err) {
				t.Errorf("error %v is not a 409 Conflict", err)
			}
		})
	}
}

func TestStopPlan(t *testing.T) {
	zero, five, thirty := int64(0), int64(5), int64(30)
	for _, tc := range []struct {
		name     string
		rs       v1.VirtualMachineRunStrategy
		phase    v1.VirtualMachineInstancePhase
		vmiGrace *int64
		grace    *int64
		want     outcome
	}{
		{"Always no VMI", v1.RunStrategyAlways, "none", nil, nil, outcome{runStrategy: "Halted"}},
		{"Always running", v1.RunStrategyAlways, v1.Running, nil, nil, outcome{runStrategy: "Halted"}},
		{"running=true", "running=true", v1.Running, nil, nil, outcome{running: "false"}},
		{"Once", v1.RunStrategyOnce, v1.Running, nil, nil, outcome{runStrategy: "Halted"}},
		{"Always force", v1.RunStrategyAlways, v1.Running, &thirty, &zero, outcome{runStrategy: "Halted", vmiGrace: "0"}},
		{"Always force no grace set", v1.RunStrategyAlways, v1.Running, nil, &zero, outcome{runStrategy: "Halted", vmiGrace: "0"}},
		{"Manual running", v1.RunStrategyManual, v1.Running, nil, nil, outcome{requests: "Stop/vmi-uid-1"}},
		{"Manual no VMI", v1.RunStrategyManual, "none", nil, nil, outcome{err: conflictPrefix + "VM is not running"}},
		{"Manual Succeeded", v1.RunStrategyManual, v1.Succeeded, nil, nil, outcome{err: conflictPrefix + "VM is not running"}},
		{"RerunOnFailure running", v1.RunStrategyRerunOnFailure, v1.Running, nil, nil, outcome{requests: "Stop/vmi-uid-1"}},
		{"RerunOnFailure Failed", v1.RunStrategyRerunOnFailure, v1.Failed, nil, nil, outcome{err: conflictPrefix + "VM is not running"}},
		{"Halted no VMI", v1.RunStrategyHalted, "none", nil, nil, outcome{err: conflictPrefix + "VM is not running"}},
		{"Halted running", v1.RunStrategyHalted, v1.Running, nil, nil, outcome{err: conflictPrefix + "Halted only supports manual stop requests with a shorter graceperiod"}},
		{"Halted longer grace", v1.RunStrategyHalted, v1.Running, &five, &thirty, outcome{err: conflictPrefix + "Halted only supports manual stop requests with a shorter graceperiod"}},
		{"Halted shorter grace", v1.RunStrategyHalted, v1.Running, &thirty, &zero, outcome{requests: "Stop/vmi-uid-1", vmiGrace: "0"}},
		{"Halted grace unset", v1.RunStrategyHalted, v1.Running, nil, &five, outcome{requests: "Stop/vmi-uid-1", vmiGrace: "5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := testVM(tc.rs)
			var vmi *v1.VirtualMachineInstance
			if tc.phase != "none" {
				vmi = testVMI(tc.phase)
				vmi.Spec.TerminationGracePeriodSeconds = tc.vmiGrace
			}
			p, err := StopPlan(vm, vmi, tc.grace)
			check(t, vm, vmi, p, err, tc.want)
		})
	}
}

func TestRestartPlan(t *testing.T) {
	zero, one, minus := int64(0), int64(1), int64(-1)
	for _, tc := range []struct {
		name  string
		rs    v1.VirtualMachineRunStrategy
		phase v1.VirtualMachineInstancePhase
		grace *int64
		want  outcome
	}{
		{"Always", v1.RunStrategyAlways, v1.Running, nil, outcome{requests: "Stop/vmi-uid-1,Start"}},
		{"Manual", v1.RunStrategyManual, v1.Running, nil, outcome{requests: "Stop/vmi-uid-1,Start"}},
		{"RerunOnFailure", v1.RunStrategyRerunOnFailure, v1.Running, nil, outcome{requests: "Stop/vmi-uid-1,Start"}},
		{"Manual Succeeded", v1.RunStrategyManual, v1.Succeeded, nil, outcome{requests: "Stop/vmi-uid-1,Start"}},
		{"Halted", v1.RunStrategyHalted, v1.Running, nil, outcome{err: conflictPrefix + "RunStategy Halted does not support manual restart requests"}},
		{"Once", v1.RunStrategyOnce, v1.Running, nil, outcome{err: conflictPrefix + "RunStategy Once does not support manual restart requests"}},
		{"no VMI", v1.RunStrategyAlways, "none", nil, outcome{err: conflictPrefix + "VM is not running: Halted"}},
		{"force", v1.RunStrategyAlways, v1.Running, &zero, outcome{requests: "Stop/vmi-uid-1,Start", vmiGrace: "1", deletePod: true}},
		{"force grace 1", v1.RunStrategyAlways, v1.Running, &one, outcome{err: "For force restart, only gracePeriod=0 is supported for now"}},
		{"force grace -1", v1.RunStrategyAlways, v1.Running, &minus, outcome{err: "gracePeriod has to be greater or equal to 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := testVM(tc.rs)
			var vmi *v1.VirtualMachineInstance
			if tc.phase != "none" {
				vmi = testVMI(tc.phase)
			}
			p, err := RestartPlan(vm, vmi, tc.grace)
			check(t, vm, vmi, p, err, tc.want)
		})
	}
}

// The stateChangeRequests guard: a second request while one is queued is refused, except a lone Stop,
// which replaces the queue; and the test op makes a stale read fail instead of overwriting.
func TestChangeRequestQueue(t *testing.T) {
	vm := testVM(v1.RunStrategyManual)
	vm.Status.StateChangeRequests = []v1.VirtualMachineStateChangeRequest{{Action: v1.StartRequest}}
	vm.Status.StartFailure = &v1.VirtualMachineStartFailure{ConsecutiveFailCount: 2}

	_, err := StartPlan(vm, nil, false)
	if err == nil || err.Error() != "Internal error occurred: unable to complete request: stop/start already underway" {
		t.Fatalf("start with a queued Start: %v", err)
	}
	_, err = RestartPlan(vm, testVMI(v1.Running), nil)
	if err == nil || !strings.Contains(err.Error(), msgUnderway) {
		t.Fatalf("restart with a queued Start: %v", err)
	}
	p, err := StopPlan(vm, testVMI(v1.Running), nil)
	if err != nil {
		t.Fatal(err)
	}
	check(t, vm, nil, p, nil, outcome{requests: "Stop/vmi-uid-1"})

	// A plan made from a stale read must not apply to the VM as it is now.
	stale := testVM(v1.RunStrategyManual)
	p, err = StartPlan(stale, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := apply(t, vm, p.StatusPatch); err == nil || !strings.Contains(err.Error(), "test failed") && !strings.Contains(err.Error(), "test operation does not apply") {
		t.Fatalf("stale start plan applied to a VM with a queued request: %v", err)
	}
	staleRS := testVM(v1.RunStrategyAlways)
	p, _ = StopPlan(staleRS, nil, nil)
	if _, err := apply(t, testVM(v1.RunStrategyHalted), p.VMPatch); err == nil {
		t.Fatal("stale stop plan applied to a VM whose runStrategy changed")
	}
}

// An entirely empty status (a VM no controller has seen) gets the whole status added.
func TestChangeRequestEmptyStatus(t *testing.T) {
	vm := testVM(v1.RunStrategyManual)
	vm.Status = v1.VirtualMachineStatus{}
	p, err := StartPlan(vm, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(p.StatusPatch), `"op":"add","path":"/status"`) {
		t.Errorf("patch %s does not add /status", p.StatusPatch)
	}
	check(t, vm, nil, p, nil, outcome{requests: "Start+paused"})
}

func TestPatchOpEncoding(t *testing.T) {
	var jp jsonPatch
	jp.test("/a", nil)
	jp.remove("/b")
	jp.add("/c", []int{1})
	b, err := jp.bytes()
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"op":"test","path":"/a","value":null},{"op":"remove","path":"/b"},{"op":"add","path":"/c","value":[1]}]`
	if string(b) != want {
		t.Errorf("got %s want %s", b, want)
	}
}
