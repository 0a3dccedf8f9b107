package controller

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// This file holds the VM controller's decisions as pure functions of (VM, VMI, expectations, now), so
// they can be tested row by row against BEHAVIOUR.md §1–§2 without a cluster.

// vmActions is what one VM sync should do.
type vmActions struct {
	// create a VMI from the template (startPaused: with startStrategy Paused).
	create      bool
	startPaused bool
	// deleteVMI deletes the current VMI.
	deleteVMI bool
	// appendStart appends a Start request (RerunOnFailure after a failure).
	appendStart bool
	// switchToAlways turns a Halted VM with a pending Start into Always (`virtctl start --paused`).
	switchToAlways bool
	// recordFailureFirst: the VMI is a start failure not yet in the status; write the status before
	// deleting the VMI (the status write brings the VM back).
	recordFailureFirst bool
	// waitUntil: a create is due but blocked by the crash-loop backoff until then.
	waitUntil time.Time
}

func firstRequest(vm *v1.VirtualMachine) *v1.VirtualMachineStateChangeRequest {
	if len(vm.Status.StateChangeRequests) == 0 {
		return nil
	}
	return &vm.Status.StateChangeRequests[0]
}

// stopMatches is hasStopRequestForVMI: Stop[0] names this VMI's UID. A Stop without a UID names no VMI
// (KubeVirt never acts on it and trims it, see trimRequests).
func stopMatches(req *v1.VirtualMachineStateChangeRequest, vmi *v1.VirtualMachineInstance) bool {
	return req != nil && req.Action == v1.StopRequest && vmi != nil && req.UID != nil && *req.UID == vmi.UID
}

func hasStartRequest(vm *v1.VirtualMachine) bool {
	for _, r := range vm.Status.StateChangeRequests {
		if r.Action == v1.StartRequest {
			return true
		}
	}
	return false
}

func startPaused(req *v1.VirtualMachineStateChangeRequest) bool {
	return req != nil && req.Action == v1.StartRequest && req.Data[v1.StartRequestDataPausedKey] == v1.StartRequestDataPausedTrue
}

// autoRestarting reports whether the strategy recreates VMIs by itself (and so has a crash-loop backoff).
func autoRestarting(s v1.VirtualMachineRunStrategy) bool {
	return s == v1.RunStrategyAlways || s == v1.RunStrategyRerunOnFailure || s == v1.RunStrategyOnce
}

// decideRunStrategy is syncRunStrategy of KubeVirt's vm.go: which VMI to create or delete. vmi is the
// VMI this VM controls (nil if none).
func decideRunStrategy(vm *v1.VirtualMachine, strategy v1.VirtualMachineRunStrategy, vmi *v1.VirtualMachineInstance, now time.Time) vmActions {
	var a vmActions
	req := firstRequest(vm)
	if vm.DeletionTimestamp != nil {
		a.deleteVMI = vmi != nil && vmi.DeletionTimestamp == nil
		return a
	}
	backoffUntil := func() time.Time {
		if sf := vm.Status.StartFailure; sf != nil && sf.RetryAfterTimestamp != nil && autoRestarting(strategy) && sf.RetryAfterTimestamp.Time.After(now) {
			return sf.RetryAfterTimestamp.Time
		}
		return time.Time{}
	}
	wantCreate := func() {
		if t := backoffUntil(); !t.IsZero() {
			a.waitUntil = t
			return
		}
		a.create = true
		a.startPaused = startPaused(req)
	}
	deleting := vmi != nil && vmi.DeletionTimestamp != nil
	// A start failure is recorded in the status before its VMI is deleted (the record must exist when
	// the VMI is gone, or the next sync would recreate it at once from a stale cache).
	if vmi != nil && !deleting && vmi.IsFinal() && !wasRunning(vmi) && autoRestarting(strategy) &&
		(vm.Status.StartFailure == nil || vm.Status.StartFailure.LastFailedVMIUID != vmi.UID) {
		a.recordFailureFirst = true
	}
	switch strategy {
	case v1.RunStrategyAlways:
		if vmi == nil {
			wantCreate()
		} else if !deleting && (vmi.IsFinal() || stopMatches(req, vmi)) {
			a.deleteVMI = true
		}
	case v1.RunStrategyRerunOnFailure:
		if vmi == nil {
			if (req != nil && req.Action == v1.StartRequest) || vm.Status.RunStrategy != v1.RunStrategyRerunOnFailure {
				wantCreate()
			}
		} else if !deleting && (vmi.IsFinal() || stopMatches(req, vmi)) {
			if vmi.Status.Phase == v1.Failed && !stopMatches(req, vmi) && !hasStartRequest(vm) {
				// Failed: rerun. The Start is written first and the VMI deleted on a later sync,
				// so a lost status write can never leave the VM stopped.
				a.appendStart = true
			} else {
				a.deleteVMI = true
			}
		}
	case v1.RunStrategyManual:
		if vmi == nil {
			if req != nil && req.Action == v1.StartRequest {
				wantCreate()
			}
		} else if !deleting && stopMatches(req, vmi) {
			a.deleteVMI = true
		}
	case v1.RunStrategyHalted:
		// A Start (virtctl start --paused) switches the spec to Always only once no VMI is left: the
		// old VMI must be gone before a new one can be created for it (fencing).
		if vmi != nil && !deleting {
			a.deleteVMI = true
		}
		if vmi == nil && req != nil && req.Action == v1.StartRequest {
			a.switchToAlways = true
		}
	case v1.RunStrategyOnce:
		// Once starts at once, without the crash-loop backoff (KubeVirt checks it for Always and
		// RerunOnFailure only); its VMI is kept when final, so this is a first start or a user delete.
		if vmi == nil {
			a.create = true
			a.startPaused = startPaused(req)
		}
	}
	return a
}

// trimRequests drops stateChangeRequests[0] once it has been acted on (isTrimFirstChangeRequestNeeded):
// a Stop when there is no VMI, it has no UID (it can never be acted on) or names another VMI; a Start once
// a running (not final, not deleting) VMI exists.
func trimRequests(reqs []v1.VirtualMachineStateChangeRequest, vmi *v1.VirtualMachineInstance) []v1.VirtualMachineStateChangeRequest {
	if len(reqs) == 0 {
		return reqs
	}
	r := reqs[0]
	trim := false
	switch r.Action {
	case v1.StopRequest:
		trim = vmi == nil || r.UID == nil || *r.UID != vmi.UID
	case v1.StartRequest:
		trim = vmi != nil && !vmi.IsFinal() && vmi.DeletionTimestamp == nil
	}
	if !trim {
		return reqs
	}
	if len(reqs) == 1 {
		return nil
	}
	return append([]v1.VirtualMachineStateChangeRequest(nil), reqs[1:]...)
}

// startBackoff is calculateStartBackoffTime: 10·n² s plus up to half of that again, capped at 300 s.
func startBackoff(failures int, jitter func(n int64) int64) time.Duration {
	const maxDelay = 300
	if failures < 1 {
		failures = 1
	}
	delay := int64(failures*failures) * 10
	if delay > maxDelay {
		delay = maxDelay
	}
	if j := delay / 2; j > 0 {
		delay += jitter(j + 1)
	}
	if delay > maxDelay {
		delay = maxDelay
	}
	return time.Duration(delay) * time.Second
}

func randJitter(n int64) int64 { return rand.Int64N(n) }

// wasRunning reports whether the VMI ever reached Running.
func wasRunning(vmi *v1.VirtualMachineInstance) bool {
	if vmi.Status.Phase == v1.Running {
		return true
	}
	for _, t := range vmi.Status.PhaseTransitionTimestamps {
		if t.Phase == v1.Running {
			return true
		}
	}
	return false
}

// nextStartFailure returns the startFailure record after looking at vmi (syncStartFailureStatus).
func nextStartFailure(cur *v1.VirtualMachineStartFailure, strategy v1.VirtualMachineRunStrategy, vmi *v1.VirtualMachineInstance, now time.Time, jitter func(int64) int64) *v1.VirtualMachineStartFailure {
	if !autoRestarting(strategy) {
		return nil
	}
	if vmi == nil {
		return cur
	}
	if vmi.Status.Phase == v1.Running {
		return nil
	}
	if !vmi.IsFinal() || wasRunning(vmi) {
		return cur
	}
	if cur != nil && cur.LastFailedVMIUID == vmi.UID {
		return cur
	}
	n := 1
	if cur != nil {
		n = cur.ConsecutiveFailCount + 1
	}
	retry := metav1Time(now.Add(startBackoff(n, jitter)))
	return &v1.VirtualMachineStartFailure{ConsecutiveFailCount: n, LastFailedVMIUID: vmi.UID, RetryAfterTimestamp: &retry}
}

// printableStatus is setPrintableStatus: the first matching rule wins. unboundPVC: a PVC of the template
// exists and is not Bound (WaitingForVolumeBinding applies only when the VM is set to start; kvirt has no
// DataVolumes, so Migrating, DataVolumeError, Provisioning and WaitingForReceiver never match).
func printableStatus(vm *v1.VirtualMachine, strategy v1.VirtualMachineRunStrategy, vmi *v1.VirtualMachineInstance, createExpected, deleteExpected bool, startFailure *v1.VirtualMachineStartFailure, unboundPVC bool) v1.VirtualMachinePrintableStatus {
	var phase v1.VirtualMachineInstancePhase
	if vmi != nil {
		phase = vmi.Status.Phase
	}
	final := vmi != nil && vmi.IsFinal()
	syncReason := ""
	if vmi != nil {
		if c := vmi.Status.Condition(v1.VirtualMachineInstanceSynchronized); c != nil && c.Status == corev1.ConditionFalse {
			syncReason = c.Reason
		}
	}
	switch {
	case vm.DeletionTimestamp != nil:
		return v1.VirtualMachineStatusTerminating
	case vmi != nil && !final && (vmi.DeletionTimestamp != nil || deleteExpected):
		return v1.VirtualMachineStatusStopping
	case vmi != nil && phase == v1.Running && vmi.Status.HasCondition(v1.VirtualMachineInstancePaused, corev1.ConditionTrue):
		return v1.VirtualMachineStatusPaused
	case vmi != nil && phase == v1.Running:
		return v1.VirtualMachineStatusRunning
	case syncReason == v1.FailedPvcNotFoundReason:
		return v1.VirtualMachineStatusPvcNotFound
	case vmi != nil && vmi.Status.HasCondition(v1.VirtualMachineInstancePodScheduled, corev1.ConditionFalse) &&
		vmi.Status.Condition(v1.VirtualMachineInstancePodScheduled).Reason == v1.UnschedulableReason:
		return v1.VirtualMachineStatusUnschedulable
	case unboundPVC && setToStart(vm, strategy, vmi):
		return v1.VirtualMachineStatusWaitingForVolumeBinding
	case syncReason == v1.ErrImagePullReason:
		return v1.VirtualMachineStatusErrImagePull
	case syncReason == v1.ImagePullBackOffReason:
		return v1.VirtualMachineStatusImagePullBackOff
	case (vmi == nil && createExpected) || (vmi != nil && (phase == v1.VmPhaseUnset || phase == v1.Pending || phase == v1.Scheduling || phase == v1.Scheduled)):
		return v1.VirtualMachineStatusStarting
	case (vmi == nil || final) && startFailure != nil && startFailure.ConsecutiveFailCount > 0 && autoRestarting(strategy):
		return v1.VirtualMachineStatusCrashLoopBackOff
	case final || (vmi == nil && !createExpected):
		return v1.VirtualMachineStatusStopped
	}
	return v1.VirtualMachineStatusUnknown
}

// vmReady is status.ready: the VMI has Ready=True. Like KubeVirt, a VMI being deleted still counts as
// ready until its own Ready condition drops.
func vmReady(vmi *v1.VirtualMachineInstance) bool {
	return vmi != nil && vmi.Status.HasCondition(v1.VirtualMachineInstanceReady, corev1.ConditionTrue)
}

// vmReadyCondition is syncReadyConditionFromVMI: False/VMINotExists without a VMI, False/
// VMIConditionMissing while the VMI has no Ready condition, else the VMI's Ready condition copied.
func vmReadyCondition(vmi *v1.VirtualMachineInstance) v1.VirtualMachineCondition {
	if vmi == nil {
		return v1.VirtualMachineCondition{Type: v1.VirtualMachineReady, Status: corev1.ConditionFalse, Reason: v1.VMINotExistsReason, Message: v1.VMINotExistsMessage}
	}
	rc := vmi.Status.Condition(v1.VirtualMachineInstanceReady)
	if rc == nil {
		return v1.VirtualMachineCondition{Type: v1.VirtualMachineReady, Status: corev1.ConditionFalse, Reason: v1.VMIConditionMissingReason, Message: v1.VMIConditionMissingMessage}
	}
	return v1.VirtualMachineCondition{Type: v1.VirtualMachineReady, Status: rc.Status, Reason: rc.Reason, Message: rc.Message, LastProbeTime: rc.LastProbeTime, LastTransitionTime: rc.LastTransitionTime}
}

// statusRunStrategy is the status.runStrategy rule of KubeVirt's updateStatus: first written when a VMI
// exists (so RerunOnFailure can tell "never started" from "stopped after success"), and from then on it
// follows the spec on every sync, VMI or not.
func statusRunStrategy(cur, strategy v1.VirtualMachineRunStrategy, vmi *v1.VirtualMachineInstance) v1.VirtualMachineRunStrategy {
	if cur != "" || vmi != nil {
		return strategy
	}
	return cur
}

// setToStart is isSetToStart: whether the VM's strategy wants a VMI now (used for
// WaitingForVolumeBinding).
func setToStart(vm *v1.VirtualMachine, strategy v1.VirtualMachineRunStrategy, vmi *v1.VirtualMachineInstance) bool {
	req := firstRequest(vm)
	startReq := req != nil && req.Action == v1.StartRequest
	switch strategy {
	case v1.RunStrategyAlways:
		return true
	case v1.RunStrategyManual:
		if vmi != nil {
			return !stopMatches(req, vmi)
		}
		return startReq
	case v1.RunStrategyRerunOnFailure:
		if vmi != nil {
			return vmi.Status.Phase != v1.Succeeded
		}
		return startReq || vm.Status.RunStrategy != strategy
	case v1.RunStrategyOnce:
		return vmi == nil
	}
	return false
}

// templatePVCs lists the claim names of the template's persistentVolumeClaim volumes.
func templatePVCs(vm *v1.VirtualMachine) []string {
	if vm.Spec.Template == nil {
		return nil
	}
	var out []string
	for _, vol := range vm.Spec.Template.Spec.Volumes {
		if vol.PersistentVolumeClaim != nil && vol.PersistentVolumeClaim.ClaimName != "" {
			out = append(out, vol.PersistentVolumeClaim.ClaimName)
		}
	}
	return out
}

// TemplateHashAnnotation on a VMI the VM controller created is a hash of the VM's template spec it was
// created from. KubeVirt keeps that spec in a ControllerRevision named in the VMI's status; kvirt keeps
// only the hash, which is all that RestartRequired and the generation bump compare.
const TemplateHashAnnotation = "kvirt.io/template-hash"

// restartRequiredMessage is KubeVirt's, for a template change that a running VMI cannot take live. No
// template change is live-updatable in kvirt (KubeVirt's LiveUpdate rollout can hotplug CPUs, memory,
// volumes and interfaces and move affinity and tolerations; kvirt has no hotplug).
const restartRequiredMessage = "a non-live-updatable field was changed in the template spec"

// templateHash is the hash of a template spec as the typed API sees it (the same spec decoded from the
// stored VM or from the cache hashes alike).
func templateHash(spec *v1.VirtualMachineInstanceSpec) string {
	b, err := json.Marshal(spec)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// vmiGeneration is the VM generation vmi was created from (or moved on to), from its annotation.
func vmiGeneration(vmi *v1.VirtualMachineInstance) (int64, bool) {
	g, err := strconv.ParseInt(vmi.Annotations[v1.VirtualMachineGenerationAnnotation], 10, 64)
	return g, err == nil
}

// templateChanged is syncRestartRequired's comparison: whether vm's template spec differs from the one
// vmi was created from. known is false for a VMI that does not say (not created by this controller).
func templateChanged(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance) (changed, known bool) {
	if vmi == nil || vm.Spec.Template == nil {
		return false, false
	}
	h, ok := vmi.Annotations[TemplateHashAnnotation]
	if !ok {
		return false, false
	}
	return h != templateHash(&vm.Spec.Template.Spec), true
}

// generationBump is conditionallyBumpGenerationAnnotationOnVmi: the VM generation to write on vmi's
// kubevirt.io/vm-generation when the VM changed but not its template (a run strategy change), so that
// status.observedGeneration follows. A VMI being deleted is left alone.
func generationBump(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance) (int64, bool) {
	if vmi == nil || vmi.DeletionTimestamp != nil {
		return 0, false
	}
	if g, ok := vmiGeneration(vmi); ok && g == vm.Generation {
		return 0, false
	}
	if changed, known := templateChanged(vm, vmi); !known || changed {
		return 0, false
	}
	return vm.Generation, true
}

// syncError is what went wrong in a VM sync (KubeVirt's SyncError): the error, and the reason the
// Failure condition shows for it.
type syncError struct {
	err    error
	reason string
}

// vmStatusInput is what the VM status depends on besides the VM: what sync read (once, with one clock
// reading) and what it did.
type vmStatusInput struct {
	strategy v1.VirtualMachineRunStrategy
	// vmi is the VMI the VM controls (nil: none).
	vmi *v1.VirtualMachineInstance
	// createExpected, deleteExpected: a VMI creation or deletion is not in the cache yet, read before the
	// VMI cache or issued by this sync.
	createExpected, deleteExpected bool
	// unboundPVC: a PVC of the template exists and is not Bound.
	unboundPVC bool
	// syncErr: this sync failed (nil: it did not).
	syncErr *syncError
	now     time.Time
	jitter  func(int64) int64
}

// vmStatus is the VM status after one sync (updateStatus of KubeVirt's vm.go); st is the status to start
// from (the VM's, with what this sync appended to it).
func vmStatus(vm *v1.VirtualMachine, st v1.VirtualMachineStatus, in vmStatusInput) v1.VirtualMachineStatus {
	st = *st.DeepCopy()
	vmi := in.vmi
	now := metav1.NewTime(in.now)
	st.Created = vmi != nil
	st.Ready = vmReady(vmi)
	st.RunStrategy = statusRunStrategy(st.RunStrategy, in.strategy, vmi)
	// syncGenerationInfo: the generation the VMI runs and the VM's; without a VMI both stay.
	if vmi != nil {
		if g, ok := vmiGeneration(vmi); ok {
			st.ObservedGeneration, st.DesiredGeneration = g, vm.Generation
		}
	}
	st.StartFailure = nextStartFailure(st.StartFailure, in.strategy, vmi, in.now, in.jitter)
	st.StateChangeRequests = trimRequests(st.StateChangeRequests, vmi)
	// The printable status sees the VM with this sync's requests and status.runStrategy (as KubeVirt's
	// setPrintableStatus runs after them).
	view := *vm
	view.Status = st
	st.PrintableStatus = printableStatus(&view, in.strategy, vmi, in.createExpected, in.deleteExpected, st.StartFailure, in.unboundPVC)

	// Conditions: Ready always; Failure from this sync; the VMI's others mirrored.
	var conds []v1.VirtualMachineCondition
	put := func(nc v1.VirtualMachineCondition) {
		if old := st.Condition(nc.Type); old != nil && old.Status == nc.Status {
			if nc.LastTransitionTime.IsZero() {
				nc.LastTransitionTime = old.LastTransitionTime
			}
		}
		if nc.LastTransitionTime.IsZero() {
			nc.LastTransitionTime = now
		}
		conds = append(conds, nc)
	}
	put(vmReadyCondition(vmi))
	if in.syncErr != nil {
		put(v1.VirtualMachineCondition{Type: v1.VirtualMachineFailure, Status: corev1.ConditionTrue, Reason: in.syncErr.reason, Message: in.syncErr.err.Error()})
	}
	if vmi != nil {
		for _, vc := range vmi.Status.Conditions {
			if vc.Type == v1.VirtualMachineInstanceReady {
				continue
			}
			put(v1.VirtualMachineCondition{Type: v1.VirtualMachineConditionType(vc.Type), Status: vc.Status, Reason: vc.Reason, Message: vc.Message, LastProbeTime: vc.LastProbeTime, LastTransitionTime: vc.LastTransitionTime})
		}
	}
	// RestartRequired (syncRestartRequired): True while the VMI was created from another template spec,
	// gone when it was not; without a VMI it stays until a new VMI is created (startVMI's cleanup).
	changed, known := templateChanged(vm, vmi)
	old := st.Condition(v1.VirtualMachineRestartRequired)
	switch {
	case changed:
		put(v1.VirtualMachineCondition{Type: v1.VirtualMachineRestartRequired, Status: corev1.ConditionTrue, Message: restartRequiredMessage})
	case known, vmi == nil && in.createExpected:
	case old != nil:
		conds = append(conds, *old)
	}
	st.Conditions = conds
	return st
}
