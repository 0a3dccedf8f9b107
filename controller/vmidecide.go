package controller

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// This file holds the VMI controller's decisions and status as pure functions of what one sync read
// (the VMI and its launcher pods from the informer cache, the pod-creation expectation, the launcher's
// last report, the launcher token and one clock reading), so they can be tested row by row against
// docs/BEHAVIOUR.md §3 without a cluster. VMIController.sync reads, calls decideVMI, and executes the
// actions in the order of the fields of vmiActions.

// vmiInput is what one VMI sync read, once, before deciding anything.
type vmiInput struct {
	// vmi as cached; pods: the launcher pods it controls, newest first.
	vmi  *v1.VirtualMachineInstance
	pods []*corev1.Pod
	// claims are the VMI's PersistentVolumeClaims found in the cache, by name (podvolumes.go).
	claims map[string]*corev1.PersistentVolumeClaim
	// createPending: a pod creation this controller issued is not in the cache yet. Read before pods
	// (see Expectations), so a creation observed after this read is already in pods.
	createPending bool
	// state is the last report of the launcher of statusPod(vmi, pods); nil: none yet.
	state *LauncherState
	// token is the launcher's control token (hasToken: the VMI's token secret is cached and is its own).
	token    string
	hasToken bool
	// needIP: the status source dials the pod IP, so a launcher is reachable only once its pod has one.
	needIP bool
	// port is the launcher's control port.
	port int
	// commander: the status source can also send requests to launchers (LauncherCommander); sent is
	// what was asked of the launcher of statusPod(vmi, pods) already.
	commander bool
	sent      launcherSent
	// nodeName is the node of the VMI's launcher (statusPod's spec.nodeName, or status.nodeName once the
	// pod is gone; "": not bound to one); node is that Node as cached (nil: no such Node).
	nodeName string
	node     *corev1.Node
	// notReadyTimeout is how long the node may be NotReady before the VMI counts as lost (nodeLost).
	notReadyTimeout time.Duration
	now             time.Time
}

// vmiActions is what one VMI sync does, in the order VMIController.sync executes it.
type vmiActions struct {
	// addFinalizer patches the VMI's own finalizer in: every VMI keeps it until its pods are gone, so
	// deleting a VMI stops its guest gracefully.
	addFinalizer bool
	// stopWatch ends the launcher watcher (the VMI or its new phase is final, or its pods are gone).
	stopWatch bool
	// call is a request to the launcher (virt-handler's part of a shutdown), sent before pods are deleted
	// so that its SIGTERM finds the shutdown under way; its event is recorded once it succeeded.
	call *launcherCall
	// deletePods are deleted gracefully (a final or deleted VMI's live pods).
	deletePods []*corev1.Pod
	// shortenPods are (deleted or) deleted again with podGrace seconds: a deleted VMI's pods whose grace
	// period is longer than the VMI's grace period now plus GraceMargin.
	shortenPods []*corev1.Pod
	podGrace    int64
	// createPod creates the token secret (if missing) and the launcher pod. It is false while a claim the
	// VMI names does not exist (the status says ErrorPvcNotFound until it appears).
	createPod bool
	// watch keeps a launcher watcher on this endpoint; noToken: the launcher is reachable but its token
	// secret is not in the cache yet (the secret's event brings the VMI back).
	watch   *LauncherEndpoint
	noToken bool
	// unpausedGate sets gatePod's readiness gate kubevirt.io/virtual-machine-unpaused ("": unchanged).
	unpausedGate corev1.ConditionStatus
	gatePod      *corev1.Pod
	// nodeLabel sets the VMI's kubevirt.io/nodeName label ("": unchanged).
	nodeLabel string
	// status is written through the status subresource (nil: unchanged); events are recorded only once
	// it is written (a conflict retries the sync, which would repeat them).
	status *v1.VirtualMachineInstanceStatus
	events []vmiEvent
	// deletePodAfterStatus: the new phase is final; the pod goes once the status says why.
	deletePodAfterStatus *corev1.Pod
	// finalizers replaces the finalizers of a VMI being deleted whose pods are gone (removeFinalizers).
	removeFinalizers bool
	finalizers       []string
	// recheck asks for another sync after this long: the node is NotReady and its timeout runs out then.
	recheck time.Duration
}

// vmiEvent is one event to record on the VMI.
type vmiEvent struct {
	eventType, reason, message string
}

// launcherCall is one request to a launcher and the event that says it was made.
type launcherCall struct {
	ep    LauncherEndpoint
	cmd   LauncherCommand
	event *vmiEvent
}

// virt-handler's events for a VMI it stops, and the one for a guest it hands over (KubeVirt's reasons
// ShuttingDown, Deleted and Created with virt-handler's messages).
var (
	evShuttingDown   = vmiEvent{corev1.EventTypeNormal, ReasonShuttingDown, "Signaled Graceful Shutdown"}
	evStopping       = vmiEvent{corev1.EventTypeNormal, ReasonDeleted, "VirtualMachineInstance stopping"}
	evSignalDeletion = vmiEvent{corev1.EventTypeNormal, ReasonDeleted, "Signaled Deletion"}
	evDefined        = vmiEvent{corev1.EventTypeNormal, ReasonCreated, "VirtualMachineInstance defined."}
)

// launcherEndpoint is how to reach the launcher in pod, if it can be reached: once the pod is bound to a
// node when the source reaches launchers by pod name (port-forward), else once the pod has an IP. The
// endpoint carries the IP only when it is used, so the IP's arrival does not restart a working watch.
func launcherEndpoint(in vmiInput, pod *corev1.Pod) (ep *LauncherEndpoint, reachable bool) {
	if pod == nil {
		return nil, false
	}
	podIP := ""
	if in.needIP {
		podIP = pod.Status.PodIP
	}
	if podIP == "" && (in.needIP || pod.Spec.NodeName == "") {
		return nil, false
	}
	if !in.hasToken {
		return nil, true
	}
	vmi := in.vmi
	return &LauncherEndpoint{Namespace: vmi.Namespace, VMIName: vmi.Name, VMIUID: vmi.UID,
		PodName: pod.Name, PodIP: podIP, Port: in.port, Token: in.token}, true
}

// launcherGrace is the grace period the launcher in pod gives a shutdown: what it reported, else what it
// was launched with (the pod's grace period less GraceMargin), lowered by what the controller sent since.
func launcherGrace(state *LauncherState, pod *corev1.Pod, sent launcherSent) int64 {
	g := DefaultGracePeriodSeconds
	switch {
	case state != nil && state.GracePeriodSeconds != nil:
		g = *state.GracePeriodSeconds
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		g = max(*pod.Spec.TerminationGracePeriodSeconds-GraceMargin, 0)
	}
	if sent.grace != nil && *sent.grace < g {
		g = *sent.grace
	}
	return g
}

// decideLauncherCall is what virt-handler does with a launcher whose VMI's grace period changed or which
// is being deleted (helperVmShutdown): with grace 0 it stops the guest ("Deleted": stopping); otherwise it
// signals a graceful shutdown with the VMI's grace period once ("ShuttingDown"), and if the VMI's grace
// period is lowered later (virtctl stop --force --grace-period N) it passes the new one on, which ends the
// shutdown at its start plus N. A running VMI whose grace period was lowered gets it passed on too, so the
// kubelet's SIGTERM finds it. Nothing is asked of a launcher that has not reported or has finished.
func decideLauncherCall(in vmiInput, pod *corev1.Pod) *launcherCall {
	if !in.commander || pod == nil || podTerminated(pod) || in.state == nil ||
		in.state.Phase == GuestSucceeded || in.state.Phase == GuestFailed {
		return nil
	}
	ep, _ := launcherEndpoint(in, pod)
	if ep == nil {
		return nil
	}
	want := gracePeriod(in.vmi)
	have := launcherGrace(in.state, pod, in.sent)
	call := func(op LauncherOp, ev *vmiEvent) *launcherCall {
		return &launcherCall{ep: *ep, cmd: LauncherCommand{Op: op, Grace: time.Duration(want) * time.Second}, event: ev}
	}
	if in.vmi.DeletionTimestamp != nil {
		switch {
		case want == 0:
			if !in.sent.stop {
				return call(OpStop, &evStopping)
			}
			return nil
		case !in.state.ShuttingDown && !in.sent.shutdown:
			return call(OpShutdown, &evShuttingDown)
		}
	}
	if want < have {
		return call(OpSetGrace, nil)
	}
	return nil
}

// podGraceNow is the grace period pod's deletion has (or will have when deleted without options).
func podGraceNow(pod *corev1.Pod) int64 {
	if pod.DeletionTimestamp != nil && pod.DeletionGracePeriodSeconds != nil {
		return *pod.DeletionGracePeriodSeconds
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return *g
	}
	return corev1.DefaultTerminationGracePeriodSeconds
}

// statusPod is the pod whose state the VMI's status follows: the newest pod, or for a VMI being
// deleted the newest one that has not terminated (nil: none).
func statusPod(vmi *v1.VirtualMachineInstance, pods []*corev1.Pod) *corev1.Pod {
	if vmi.DeletionTimestamp != nil {
		for _, p := range pods {
			if !podTerminated(p) {
				return p
			}
		}
		return nil
	}
	if len(pods) == 0 {
		return nil
	}
	return pods[0]
}

// decideVMI is one VMI sync: which pods to create and delete, what to watch, and the new status.
func decideVMI(in vmiInput) vmiActions {
	var a vmiActions
	vmi := in.vmi
	pod := statusPod(vmi, in.pods)
	livePods := func() []*corev1.Pod {
		var out []*corev1.Pod
		for _, p := range in.pods {
			if podLive(p) {
				out = append(out, p)
			}
		}
		return out
	}

	// A final VMI is past caring about its node; any other is looked at again when a NotReady node's
	// timeout runs out.
	lost, recheck := nodeLost(in.nodeName, in.node, in.notReadyTimeout, in.now)

	if vmi.DeletionTimestamp != nil {
		// The launcher first (it learns the VMI's grace period now), then its pod, with no longer a grace
		// period than the VMI's now plus the launcher's margin (a lowered one cuts a deletion under way).
		if !lost { // nothing answers on a lost node
			a.call = decideLauncherCall(in, pod)
		}
		a.podGrace = gracePeriod(vmi) + GraceMargin
		for _, p := range in.pods {
			switch {
			case podTerminated(p):
			case podGraceNow(p) > a.podGrace:
				a.shortenPods = append(a.shortenPods, p)
			case podLive(p):
				a.deletePods = append(a.deletePods, p)
			}
		}
		if pod != nil {
			a.recheck = recheck
			// Still shutting down: record what the launcher reports until the pod is gone.
			a.status, a.events = statusChange(vmi, vmiStatus(vmi, pod, in.state, in.createPending, lost, in.now), in.state, pod)
			if a.status != nil && isFinalPhase(a.status.Phase) && !isFinalPhase(vmi.Status.Phase) {
				// The guest is down: virt-handler removes the domain of the deleted VMI.
				a.events = append([]vmiEvent{evSignalDeletion}, a.events...)
			}
			return a
		}
		a.stopWatch = true
		fin := slices.DeleteFunc(slices.Clone(vmi.Finalizers), isString(v1.VirtualMachineInstanceFinalizer))
		if ref := metav1.GetControllerOf(vmi); ref == nil || ref.Kind != "VirtualMachine" {
			// No VM controller will look at this VMI again (orphaned): drop its finalizer too.
			fin = slices.DeleteFunc(fin, isString(v1.VirtualMachineControllerFinalizer))
		}
		if len(fin) != len(vmi.Finalizers) {
			a.removeFinalizers, a.finalizers = true, fin
		}
		return a
	}

	a.addFinalizer = !slices.Contains(vmi.Finalizers, v1.VirtualMachineInstanceFinalizer)
	if vmi.IsFinal() {
		a.stopWatch = true
		a.deletePods = livePods()
		return a
	}
	a.recheck = recheck
	var missingPVCs []string
	if pod == nil && (vmi.Status.Phase == v1.VmPhaseUnset || vmi.Status.Phase == v1.Pending) {
		if in.createPending {
			return a // the pod we created is not in the cache yet
		}
		missingPVCs = missingClaims(&vmi.Spec, in.claims)
		a.createPod = len(missingPVCs) == 0
	}

	st := vmiStatus(vmi, pod, in.state, in.createPending, lost, in.now)
	applyBootCondition(&st, in.state, metav1.NewTime(in.now))
	pvcNotFound := pvcSyncStatus(&st, vmi.Namespace, missingPVCs, metav1.NewTime(in.now))
	final := isFinalPhase(st.Phase)

	// Keep a launcher watcher while the pod can serve the control API (launcherEndpoint).
	if ep, reachable := launcherEndpoint(in, pod); reachable && podLive(pod) && !final {
		a.watch = ep
		a.noToken = ep == nil
		if !a.noToken {
			a.call = decideLauncherCall(in, pod)
		}
	}
	a.stopWatch = final

	// The readiness gate reflects the pause state (KubeVirt: virt-handler sets it).
	if pod != nil && pod.Status.Phase == corev1.PodRunning && pod.DeletionTimestamp == nil {
		want := corev1.ConditionTrue
		if in.state != nil && in.state.Paused {
			want = corev1.ConditionFalse
		}
		if pc := podCondition(pod, v1.VirtualMachineUnpausedPodCondition); pc == nil || pc.Status != want {
			a.unpausedGate, a.gatePod = want, pod
		}
	}
	if st.NodeName != "" && vmi.Labels[v1.NodeNameLabel] != st.NodeName {
		a.nodeLabel = st.NodeName
	}
	a.status, a.events = statusChange(vmi, st, in.state, pod)
	if a.status != nil {
		if ev := bootEvent(&vmi.Status, a.status); ev != nil {
			a.events = append(a.events, *ev)
		}
		if pvcNotFound {
			a.events = append(a.events, vmiEvent{corev1.EventTypeNormal, v1.FailedPvcNotFoundReason, pvcNotFoundMessage(vmi.Namespace, missingPVCs[0])})
		}
	}
	if final && pod != nil && podLive(pod) {
		a.deletePodAfterStatus = pod
	}
	return a
}

// statusChange returns st and the events it brings if it differs from vmi's status (else nil, nil).
func statusChange(vmi *v1.VirtualMachineInstance, st v1.VirtualMachineInstanceStatus, state *LauncherState, pod *corev1.Pod) (*v1.VirtualMachineInstanceStatus, []vmiEvent) {
	if equality.Semantic.DeepEqual(&vmi.Status, &st) {
		return nil, nil
	}
	return &st, vmiEvents(&vmi.Status, &st, state, pod)
}

func isString(s string) func(string) bool { return func(x string) bool { return x == s } }

func isFinalPhase(p v1.VirtualMachineInstancePhase) bool { return p == v1.Succeeded || p == v1.Failed }

// nodeNotReadySince reports whether node is NotReady and since when: its Ready condition is False (the
// kubelet says so) or Unknown (the node lifecycle controller stopped hearing from the kubelet), since
// the condition's last transition. A node without a Ready condition has not reported yet and is not
// counted.
func nodeNotReadySince(node *corev1.Node) (time.Time, bool) {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.LastTransitionTime.Time, c.Status != corev1.ConditionTrue
		}
	}
	return time.Time{}, false
}

// nodeLost is KubeVirt's node controller's "unresponsive node" for kvirt, which has no virt-handler
// heartbeat: the VMI's node (nodeName) is gone (node nil), or has been NotReady for timeout. A node
// NotReady for less is not lost yet; recheck is how long until it will be.
func nodeLost(nodeName string, node *corev1.Node, timeout time.Duration, now time.Time) (lost bool, recheck time.Duration) {
	if nodeName == "" {
		return false, 0
	}
	if node == nil {
		return true, 0
	}
	since, notReady := nodeNotReadySince(node)
	if !notReady {
		return false, 0
	}
	if d := since.Add(timeout).Sub(now); d > 0 {
		return false, d
	}
	return true, 0
}

// phaseBeforeUnknown is the phase a VMI had before it became Unknown (Scheduling if none is recorded).
func phaseBeforeUnknown(st *v1.VirtualMachineInstanceStatus) v1.VirtualMachineInstancePhase {
	for i := len(st.PhaseTransitionTimestamps) - 1; i >= 0; i-- {
		if p := st.PhaseTransitionTimestamps[i].Phase; p != v1.Unknown {
			return p
		}
	}
	return v1.Scheduling
}

// vmiStatus derives phase, node, conditions and interfaces from the pod and the launcher's state.
// createPending is the expectation sync read before the pod cache: a VMI past Pending without a pod is
// PodGone only if no creation is outstanding. lost: the pod's node is lost (nodeLost), so neither
// the pod's status nor the launcher's last report can be trusted to be current.
func vmiStatus(vmi *v1.VirtualMachineInstance, pod *corev1.Pod, state *LauncherState, createPending, lost bool, at time.Time) v1.VirtualMachineInstanceStatus {
	st := *vmi.Status.DeepCopy()
	now := metav1.NewTime(at)
	phase := st.Phase
	reason := st.Reason
	if phase == v1.Unknown && !lost {
		// The node is back (or the pod gone): carry on from where the VMI was.
		phase = phaseBeforeUnknown(&st)
	}
	// A launcher pod that ended or vanished on a lost node fails the VMI as KubeVirt's node controller
	// does (NodeUnresponsive); elsewhere it is PodGone or the launcher's own reason.
	goneReason := ReasonPodGone
	if lost {
		goneReason = ReasonNodeUnresponsive
	}
	switch {
	case pod == nil:
		switch phase {
		case v1.VmPhaseUnset:
			phase = v1.Pending
		case v1.Scheduling, v1.Scheduled, v1.Running, v1.Unknown:
			if !createPending {
				phase, reason = v1.Failed, goneReason
			}
		}
	case state != nil && state.Phase == GuestSucceeded:
		phase, reason = v1.Succeeded, state.Reason
	case state != nil && state.Phase == GuestFailed:
		phase, reason = v1.Failed, cmp.Or(state.Reason, ReasonLauncherFailed)
	case podTerminated(pod):
		tReason, _, code, _ := terminationMessage(pod)
		was := phase
		if was == v1.Unknown {
			was = phaseBeforeUnknown(&st)
		}
		if pod.Status.Phase == corev1.PodSucceeded && code == 0 && (was == v1.Running || was == v1.Scheduled) {
			// The launcher exits 0 only after the guest powered off.
			phase, reason = v1.Succeeded, ""
		} else if lost && tReason == "" {
			// Marked Failed by the pod garbage collector (out-of-service or deleted node), not by a kubelet.
			phase, reason = v1.Failed, goneReason
		} else {
			phase, reason = v1.Failed, cmp.Or(tReason, ReasonLauncherFailed)
		}
	case lost:
		// The pod lives (or is being deleted) on a node that stopped reporting: the guest may run on or
		// be gone, nobody can tell. Unknown until the node is back or the pod is gone; never final, so
		// no second VMI starts while this one may still run.
		phase = v1.Unknown
		st.NodeName = pod.Spec.NodeName
	case pod.DeletionTimestamp != nil:
		// The pod is going away (deleted by someone): the launcher shuts the guest down; the final
		// phase comes from its report or, once the pod is gone, PodGone.
		if phase == v1.VmPhaseUnset || phase == v1.Pending {
			phase = v1.Scheduling
		}
	default:
		if phase == v1.VmPhaseUnset || phase == v1.Pending {
			phase = v1.Scheduling
		}
		if phase == v1.Scheduling && podReady(pod) {
			phase = v1.Scheduled
		}
		if state != nil && state.Phase == GuestRunning && (phase == v1.Scheduling || phase == v1.Scheduled) {
			phase = v1.Running
		}
		if (phase == v1.Scheduled || phase == v1.Running) && pod.Spec.NodeName != "" {
			st.NodeName = pod.Spec.NodeName
		}
	}
	if phase != st.Phase {
		st.PhaseTransitionTimestamps = append(st.PhaseTransitionTimestamps, v1.VirtualMachineInstancePhaseTransitionTimestamp{Phase: phase, PhaseTransitionTimestamp: now})
		st.Phase = phase
	}
	if isFinalPhase(phase) {
		st.Reason = reason
	}

	// The launcher pod itself (KubeVirt's activePods, qosClass, launcherContainerImageVersion).
	if pod != nil && !isFinalPhase(phase) {
		st.ActivePods = map[types.UID]string{pod.UID: pod.Spec.NodeName}
		if pod.Status.QOSClass != "" {
			q := pod.Status.QOSClass
			st.QOSClass = &q
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.Name == LauncherContainerName && cs.Image != "" {
				st.LauncherContainerImageVersion = cs.Image
			}
		}
	}

	// PodScheduled: copied from the pod (Unschedulable makes the VM show ErrorUnschedulable).
	if pod != nil {
		if pc := podCondition(pod, corev1.PodScheduled); pc != nil {
			setVMICondition(&st, v1.VirtualMachineInstanceCondition{
				Type: v1.VirtualMachineInstancePodScheduled, Status: pc.Status, Reason: pc.Reason, Message: pc.Message,
				LastProbeTime: pc.LastProbeTime, LastTransitionTime: pc.LastTransitionTime,
			}, now)
		}
	}

	// Synchronized=False with the kubelet's image-pull reason, so the VM shows ErrImagePull or
	// ImagePullBackOff (KubeVirt: virt-controller's sync of the launcher pod's container statuses).
	if reason, msg := imagePullProblem(pod); reason != "" && !isFinalPhase(phase) {
		setVMICondition(&st, v1.VirtualMachineInstanceCondition{
			Type: v1.VirtualMachineInstanceSynchronized, Status: corev1.ConditionFalse, Reason: reason, Message: msg,
		}, now)
	} else if c := st.Condition(v1.VirtualMachineInstanceSynchronized); c != nil && (c.Reason == v1.ErrImagePullReason || c.Reason == v1.ImagePullBackOffReason) {
		removeVMICondition(&st, v1.VirtualMachineInstanceSynchronized)
	}

	// Paused (while Unknown, what was last known stays).
	paused := state != nil && state.Paused && phase == v1.Running
	switch {
	case paused:
		setVMICondition(&st, v1.VirtualMachineInstanceCondition{
			Type: v1.VirtualMachineInstancePaused, Status: corev1.ConditionTrue,
			Reason: v1.PausedByUserReason, Message: v1.PausedByUserMessage,
		}, now)
	case phase != v1.Unknown:
		removeVMICondition(&st, v1.VirtualMachineInstancePaused)
	}

	// Ready: pod ready, guest running, not paused.
	ready := v1.VirtualMachineInstanceCondition{Type: v1.VirtualMachineInstanceReady, Status: corev1.ConditionFalse}
	switch {
	case pod == nil:
		ready.Reason = v1.PodNotExistsReason
		ready.Message = "virt-launcher pod has not yet been scheduled"
	case pod.DeletionTimestamp != nil || podTerminated(pod):
		ready.Reason = v1.PodTerminatingReason
		ready.Message = "virt-launcher pod is terminating"
	case phase != v1.Running:
		ready.Reason = v1.GuestNotRunningReason
		ready.Message = "Guest VM is not reported as running"
	case paused:
		ready.Reason = v1.PausedByUserReason
		ready.Message = v1.PausedByUserMessage
	case !podReady(pod):
		ready.Reason = v1.PodConditionMissingReason
		ready.Message = "virt-launcher pod is not ready"
	default:
		ready.Status = corev1.ConditionTrue
	}
	setVMICondition(&st, ready, now)

	// Interfaces: the launcher's view when it has one, else the pod IP on the first interface.
	if phase == v1.Running || phase == v1.Scheduled {
		st.Interfaces = vmiInterfaces(vmi, pod, state)
	}
	return st
}

func vmiInterfaces(vmi *v1.VirtualMachineInstance, pod *corev1.Pod, state *LauncherState) []v1.VirtualMachineInstanceNetworkInterface {
	if state != nil && len(state.Interfaces) > 0 {
		return slices.Clone(state.Interfaces)
	}
	specIfs := vmi.Spec.Domain.Devices.Interfaces
	if len(specIfs) == 0 || pod == nil {
		return nil
	}
	out := make([]v1.VirtualMachineInstanceNetworkInterface, 0, len(specIfs))
	for i, ifc := range specIfs {
		x := v1.VirtualMachineInstanceNetworkInterface{Name: ifc.Name, MAC: ifc.MacAddress}
		if i == 0 && pod.Status.PodIP != "" {
			x.IP = pod.Status.PodIP
			for _, ip := range pod.Status.PodIPs {
				x.IPs = append(x.IPs, ip.IP)
			}
			if len(x.IPs) == 0 {
				x.IPs = []string{x.IP}
			}
			x.InfoSource = "domain"
		}
		out = append(out, x)
	}
	return out
}

// setVMICondition sets c in st, keeping LastTransitionTime when the status did not change.
func setVMICondition(st *v1.VirtualMachineInstanceStatus, c v1.VirtualMachineInstanceCondition, now metav1.Time) {
	for i := range st.Conditions {
		old := &st.Conditions[i]
		if old.Type != c.Type {
			continue
		}
		if old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message {
			return
		}
		if c.LastTransitionTime.IsZero() {
			c.LastTransitionTime = old.LastTransitionTime
			if old.Status != c.Status {
				c.LastTransitionTime = now
			}
		}
		*old = c
		return
	}
	if c.LastTransitionTime.IsZero() {
		c.LastTransitionTime = now
	}
	st.Conditions = append(st.Conditions, c)
}

func removeVMICondition(st *v1.VirtualMachineInstanceStatus, t v1.VirtualMachineInstanceConditionType) {
	st.Conditions = slices.DeleteFunc(st.Conditions, func(c v1.VirtualMachineInstanceCondition) bool { return c.Type == t })
	if len(st.Conditions) == 0 {
		st.Conditions = nil
	}
}

// vmiEvents are virt-handler's lifecycle events for what the new status st says happened since old.
func vmiEvents(old, st *v1.VirtualMachineInstanceStatus, state *LauncherState, pod *corev1.Pod) []vmiEvent {
	var evs []vmiEvent
	if old.Phase != st.Phase {
		if (st.Phase == v1.Scheduled || st.Phase == v1.Running) && (old.Phase == v1.VmPhaseUnset || old.Phase == v1.Pending || old.Phase == v1.Scheduling) {
			// The launcher has the VMI and its pod is up: the guest is defined (kvirt's launcher defines
			// and starts it in one go, so a launcher that reports Running at once gives both events).
			evs = append(evs, evDefined)
		}
		switch st.Phase {
		case v1.Running:
			if old.Phase == v1.Unknown && phaseBeforeUnknown(old) == v1.Running {
				break // its node is back: the guest ran all along
			}
			evs = append(evs, vmiEvent{corev1.EventTypeNormal, ReasonStarted, "VirtualMachineInstance started."})
		case v1.Succeeded:
			evs = append(evs, vmiEvent{corev1.EventTypeNormal, ReasonStopped, "The VirtualMachineInstance was shut down."})
		case v1.Failed:
			if st.Reason == ReasonNodeUnresponsive {
				// KubeVirt's node controller's event; its virt-handler, gone with the node, sends no Stopped.
				evs = append(evs, vmiEvent{corev1.EventTypeNormal, ReasonNodeUnresponsive,
					fmt.Sprintf("node %s is not responsive, marking VMI as failed", st.NodeName)})
				break
			}
			msg := "The VirtualMachineInstance crashed."
			_, termMsg, _, _ := terminationMessage(pod)
			if state != nil && state.Message != "" {
				msg += " " + state.Message
			} else if termMsg != "" {
				// The launcher's last words (its termination message, or its log tail on error).
				msg += " " + strings.TrimSpace(termMsg)
			} else if st.Reason != "" {
				msg += " (" + st.Reason + ")"
			}
			evs = append(evs, vmiEvent{corev1.EventTypeWarning, ReasonStopped, msg})
		}
	}
	wasPaused := old.HasCondition(v1.VirtualMachineInstancePaused, corev1.ConditionTrue)
	isPaused := st.HasCondition(v1.VirtualMachineInstancePaused, corev1.ConditionTrue)
	switch {
	case !wasPaused && isPaused:
		evs = append(evs, vmiEvent{corev1.EventTypeNormal, ReasonPaused, "VirtualMachineInstance paused"})
	case wasPaused && !isPaused && st.Phase == v1.Running:
		evs = append(evs, vmiEvent{corev1.EventTypeNormal, ReasonUnpaused, "VirtualMachineInstance unpaused"})
	}
	return evs
}

// unpausedGateCondition is the pod condition behind the readiness gate, as set at now.
func unpausedGateCondition(want corev1.ConditionStatus, at time.Time) corev1.PodCondition {
	now := metav1.NewTime(at)
	cond := corev1.PodCondition{Type: v1.VirtualMachineUnpausedPodCondition, Status: want, LastTransitionTime: now, LastProbeTime: now}
	if want == corev1.ConditionFalse {
		cond.Reason, cond.Message = v1.PausedByUserReason, v1.PausedByUserMessage
	}
	return cond
}
