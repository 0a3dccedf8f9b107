// Package lifecycle is KubeVirt's VM and VMI lifecycle requests as one implementation: start, stop and
// restart of a VirtualMachine, pause and unpause of a VirtualMachineInstance. It decides each request
// from the objects as read (StartPlan, StopPlan, RestartPlan, PauseCheck, UnpauseCheck: pure functions,
// KubeVirt's rules and messages from its virt-api, pkg/virt-api/rest/lifecycle.go) and applies the
// decision with guarded JSON patches (Apply) or through the VMI's launcher pod (PauseVMI).
//
// Both callers use it: virt-api (cmd/virt-api) serves it as the subresources.kubevirt.io/v1 API with its
// own service account, after the apiserver authorised the user; virtctl (cmd/virtctl) applies it with the
// user's own credentials. Errors are Kubernetes API status errors with KubeVirt's codes and texts (409
// Conflict for a request that does not fit the VM's state, 404 for a missing object, 500 otherwise).
package lifecycle

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	v1 "github.com/kvirt/kvirt/api/v1"
)

// KubeVirt's texts, kept byte for byte (including the "RunStategy" typo) so scripts and habits carry over.
const (
	msgAlreadyRunning     = "VM is already running"
	msgNotRunning         = "VM is not running"
	msgVMINotRunning      = "VMI is not running"
	msgAlreadyPaused      = "VMI is already paused"
	msgNotPaused          = "VMI is not paused"
	msgUnderway           = "unable to complete request: stop/start already underway"
	msgForceRestartGrace  = "For force restart, only gracePeriod=0 is supported for now"
	msgNegativeGrace      = "gracePeriod has to be greater or equal to 0"
	fmtNoManualStart      = "%v does not support manual start requests"
	fmtNoStartFromFailed  = "%v does not support starting VM from failed state"
	fmtHaltedShorterGrace = "%v only supports manual stop requests with a shorter graceperiod"
	fmtNoManualRestart    = "RunStategy %v does not support manual restart requests"
	fmtRestartNoVMI       = "VM is not running: %v"
)

// forceRestartPodGrace is the grace period a force restart gives the launcher pod (KubeVirt: 1 s, "the
// shortest safe restart period").
const forceRestartPodGrace int64 = 1

// Plan is what one start, stop or restart changes, applied in this order: VMIPatch (JSON patch on the
// VMI), VMPatch (JSON patch on the VM), StatusPatch (JSON patch on the VM's /status subresource), then
// deletion of the VMI's running launcher pod with DeletePodGrace seconds. Empty fields are skipped; an
// empty Plan changes nothing (KubeVirt answers such requests with 202 too).
type Plan struct {
	VMIPatch       []byte
	VMPatch        []byte
	StatusPatch    []byte
	DeletePodGrace *int64
}

func conflict(vmName string, msg string) error {
	return apierrors.NewConflict(v1.Resource("virtualmachine"), vmName, errors.New(msg))
}

// StartPlan decides a start request as KubeVirt's virt-api does (rest/lifecycle.go StartVMRequestHandler).
// vmi is nil when the VM has no instance.
func StartPlan(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance, paused bool) (Plan, error) {
	if vmi != nil && !vmi.IsFinal() && vmi.Status.Phase != v1.Unknown && vmi.Status.Phase != v1.VmPhaseUnset {
		return Plan{}, conflict(vm.Name, msgAlreadyRunning)
	}
	rs, err := vm.RunStrategy()
	if err != nil {
		return Plan{}, apierrors.NewInternalError(err)
	}
	var data map[string]string
	if paused {
		data = map[string]string{v1.StartRequestDataPausedKey: v1.StartRequestDataPausedTrue}
	}
	start := v1.VirtualMachineStateChangeRequest{Action: v1.StartRequest, Data: data}
	var p Plan
	switch rs {
	case v1.RunStrategyHalted:
		// A paused start goes through a Start request; the controller switches the spec to Always when
		// it acts on it. KubeVirt sends the request for every --paused start (its template check compares
		// pointers and never matches), and so do we.
		if paused {
			p.StatusPatch, err = changeRequestPatch(vm, start)
		} else {
			p.VMPatch, err = runningPatch(vm, true)
		}
	case v1.RunStrategyRerunOnFailure, v1.RunStrategyManual:
		switch {
		case rs == v1.RunStrategyRerunOnFailure && vmi != nil && vmi.Status.Phase == v1.Failed:
			return Plan{}, conflict(vm.Name, fmt.Sprintf(fmtNoStartFromFailed, rs))
		case (rs == v1.RunStrategyRerunOnFailure && vmi != nil && vmi.Status.Phase == v1.Succeeded) ||
			(rs == v1.RunStrategyManual && vmi != nil && vmi.IsFinal()):
			uid := vmi.UID
			p.StatusPatch, err = changeRequestPatch(vm, v1.VirtualMachineStateChangeRequest{Action: v1.StopRequest, UID: &uid}, start)
		default:
			p.StatusPatch, err = changeRequestPatch(vm, start)
		}
	case v1.RunStrategyAlways, v1.RunStrategyOnce:
		return Plan{}, conflict(vm.Name, fmt.Sprintf(fmtNoManualStart, rs))
	}
	if err != nil {
		return Plan{}, apierrors.NewInternalError(err)
	}
	return p, nil
}

// StopPlan decides a stop request (StopVMRequestHandler). grace is nil unless the request has a grace
// period (virtctl stop --force --grace-period N); then a VMI that still runs gets
// spec.terminationGracePeriodSeconds=N first.
//
// One deliberate difference: KubeVirt patches the VMI's grace period before it looks at the run
// strategy, so a refused Halted stop still changes the VMI. kvirt decides first and changes nothing
// when the request is refused.
func StopPlan(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance, grace *int64) (Plan, error) {
	rs, err := vm.RunStrategy()
	if err != nil {
		return Plan{}, apierrors.NewInternalError(err)
	}
	var p Plan
	running := vmi != nil && !vmi.IsFinal()
	var oldGrace int64
	if running && grace != nil {
		var jp jsonPatch
		if vmi.Spec.TerminationGracePeriodSeconds != nil {
			oldGrace = *vmi.Spec.TerminationGracePeriodSeconds
			jp.test("/spec/terminationGracePeriodSeconds", oldGrace)
		} else {
			jp.test("/spec/terminationGracePeriodSeconds", nil)
		}
		jp.replace("/spec/terminationGracePeriodSeconds", *grace)
		if p.VMIPatch, err = jp.bytes(); err != nil {
			return Plan{}, apierrors.NewInternalError(err)
		}
	}
	switch rs {
	case v1.RunStrategyHalted:
		if !running {
			return Plan{}, conflict(vm.Name, msgNotRunning)
		}
		if grace == nil || (vmi.Spec.TerminationGracePeriodSeconds != nil && *grace >= oldGrace) {
			return Plan{}, conflict(vm.Name, fmt.Sprintf(fmtHaltedShorterGrace, rs))
		}
		uid := vmi.UID
		p.StatusPatch, err = changeRequestPatch(vm, v1.VirtualMachineStateChangeRequest{Action: v1.StopRequest, UID: &uid})
	case v1.RunStrategyRerunOnFailure, v1.RunStrategyManual:
		if !running {
			return Plan{}, conflict(vm.Name, msgNotRunning)
		}
		uid := vmi.UID
		p.StatusPatch, err = changeRequestPatch(vm, v1.VirtualMachineStateChangeRequest{Action: v1.StopRequest, UID: &uid})
	case v1.RunStrategyAlways, v1.RunStrategyOnce:
		p.VMPatch, err = runningPatch(vm, false)
	}
	if err != nil {
		return Plan{}, apierrors.NewInternalError(err)
	}
	return p, nil
}

// RestartPlan decides a restart request (RestartVMRequestHandler): a Stop for the current VMI followed by
// a Start. grace, when set, must be 0 (force restart): then the VMI's grace period becomes 1 s and its
// launcher pod is deleted with a 1 s grace period so the guest comes back at once.
func RestartPlan(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance, grace *int64) (Plan, error) {
	if err := RestartGraceCheck(grace); err != nil {
		return Plan{}, err
	}
	rs, err := vm.RunStrategy()
	if err != nil {
		return Plan{}, apierrors.NewInternalError(err)
	}
	if rs == v1.RunStrategyHalted || rs == v1.RunStrategyOnce {
		return Plan{}, conflict(vm.Name, fmt.Sprintf(fmtNoManualRestart, rs))
	}
	if vmi == nil {
		return Plan{}, conflict(vm.Name, fmt.Sprintf(fmtRestartNoVMI, v1.RunStrategyHalted))
	}
	var p Plan
	uid := vmi.UID
	p.StatusPatch, err = changeRequestPatch(vm,
		v1.VirtualMachineStateChangeRequest{Action: v1.StopRequest, UID: &uid},
		v1.VirtualMachineStateChangeRequest{Action: v1.StartRequest})
	if err != nil {
		return Plan{}, apierrors.NewInternalError(err)
	}
	if grace != nil && !vmi.IsFinal() {
		var jp jsonPatch
		jp.test("/spec/terminationGracePeriodSeconds", vmi.Spec.TerminationGracePeriodSeconds)
		jp.replace("/spec/terminationGracePeriodSeconds", forceRestartPodGrace)
		if p.VMIPatch, err = jp.bytes(); err != nil {
			return Plan{}, apierrors.NewInternalError(err)
		}
		g := forceRestartPodGrace
		p.DeletePodGrace = &g
	}
	return p, nil
}

// RestartGraceCheck refuses a restart's grace period other than none or 0 with KubeVirt's 400s. virt-api
// checks it before it reads the VM, as KubeVirt does; RestartPlan checks it too.
func RestartGraceCheck(grace *int64) error {
	switch {
	case grace == nil || *grace == 0:
		return nil
	case *grace > 0:
		return apierrors.NewBadRequest(msgForceRestartGrace)
	default:
		return apierrors.NewBadRequest(msgNegativeGrace)
	}
}

// changeRequestPatch is KubeVirt's getChangeRequestJson: a test-and-add (or test-and-replace for a lone
// Stop) of status.stateChangeRequests, so two concurrent requests cannot both win; any write also
// drops status.startFailure. A VM with an entirely empty status gets the whole status added.
func changeRequestPatch(vm *v1.VirtualMachine, changes ...v1.VirtualMachineStateChangeRequest) ([]byte, error) {
	var jp jsonPatch
	if equality.Semantic.DeepEqual(vm.Status, v1.VirtualMachineStatus{}) {
		jp.add("/status", v1.VirtualMachineStatus{StateChangeRequests: changes})
	} else {
		jp.test("/status/stateChangeRequests", vm.Status.StateChangeRequests)
		switch {
		case len(vm.Status.StateChangeRequests) == 0:
			jp.add("/status/stateChangeRequests", changes)
		case len(changes) == 1 && changes[0].Action == v1.StopRequest:
			jp.replace("/status/stateChangeRequests", changes)
		default:
			return nil, errors.New(msgUnderway)
		}
	}
	if vm.Status.StartFailure != nil {
		jp.remove("/status/startFailure")
	}
	return jp.bytes()
}

// runningPatch is KubeVirt's getRunningPatch: flip spec.runStrategy to Always/Halted, or the deprecated
// spec.running to true/false when that is the field in use, guarded by a test of the current value.
func runningPatch(vm *v1.VirtualMachine, running bool) ([]byte, error) {
	var jp jsonPatch
	if vm.Spec.RunStrategy != nil {
		rs := v1.RunStrategyHalted
		if running {
			rs = v1.RunStrategyAlways
		}
		jp.test("/spec/runStrategy", *vm.Spec.RunStrategy)
		jp.replace("/spec/runStrategy", rs)
	} else {
		jp.test("/spec/running", vm.Spec.Running)
		jp.replace("/spec/running", running)
	}
	return jp.bytes()
}
