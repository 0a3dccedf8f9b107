package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	kvclient "github.com/kvirt/kvirt/api/client/clientset/versioned"
	kvlisters "github.com/kvirt/kvirt/api/client/listers/api/v1"
	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// VMI event reasons and messages (KubeVirt's virt-controller and virt-handler).
const (
	ReasonSuccessfulCreate = "SuccessfulCreate"
	ReasonSuccessfulDelete = "SuccessfulDelete"
	ReasonFailedCreate     = "FailedCreate"
	ReasonFailedDelete     = "FailedDelete"
	ReasonStarted          = "Started"
	ReasonStopped          = "Stopped"
	ReasonPaused           = "Paused"
	ReasonUnpaused         = "Unpaused"
	ReasonSyncFailed       = "SyncFailed"
)

// VMI status reasons set by this controller.
const (
	// ReasonPodGone: the launcher pod disappeared or failed before the guest finished.
	ReasonPodGone = "PodGone"
	// ReasonLauncherFailed: the launcher reported or exited with a failure.
	ReasonLauncherFailed = "LauncherFailed"
)

// VMIController runs each VirtualMachineInstance in a launcher pod and writes the VMI status.
type VMIController struct {
	kube     kubernetes.Interface
	kv       kvclient.Interface
	vmis     kvlisters.VirtualMachineInstanceLister
	pods     corelisters.PodLister
	secrets  corelisters.SecretLister
	pvcs     corelisters.PersistentVolumeClaimLister // podvolumes.go
	vmiIndex cache.Indexer                           // VMIs by claim (vmiPVCIndex)
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder
	podExp   *Expectations
	watchers *launcherWatchers
	// needIP: the StatusSource dials the pod IP (direct mode), so watching waits for the pod's IP.
	needIP  bool
	cfg     PodConfig
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time
}

func newVMIController(kube kubernetes.Interface, kv kvclient.Interface, vmiInf, podInf, secretInf, pvcInf cache.SharedIndexInformer,
	recorder record.EventRecorder, src StatusSource, cfg PodConfig, log *slog.Logger, metrics *Metrics) (*VMIController, error) {
	c := &VMIController{
		kube:     kube,
		kv:       kv,
		vmis:     kvlisters.NewVirtualMachineInstanceLister(vmiInf.GetIndexer()),
		pods:     corelisters.NewPodLister(podInf.GetIndexer()),
		secrets:  corelisters.NewSecretLister(secretInf.GetIndexer()),
		queue:    workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "vmi"}),
		recorder: recorder,
		podExp:   NewExpectations(),
		cfg:      cfg,
		log:      log.With("controller", "vmi"),
		metrics:  metrics,
		now:      time.Now,
	}
	c.watchers = newLauncherWatchers(src, c.queue.Add, c.log)
	c.needIP = needsPodIP(src)
	if err := c.watchClaims(vmiInf, pvcInf); err != nil {
		return nil, err
	}
	if _, err := vmiInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, n any) { c.enqueue(n) },
		DeleteFunc: c.enqueue,
	}); err != nil {
		return nil, err
	}
	if _, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if key, ok := ownerKey(obj, "VirtualMachineInstance"); ok {
				c.podExp.CreationObserved(key)
				c.queue.Add(key)
			}
		},
		UpdateFunc: func(_, n any) { c.enqueueOwner(n) },
		DeleteFunc: c.enqueueOwner,
	}); err != nil {
		return nil, err
	}
	if _, err := secretInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueOwner,
		UpdateFunc: func(_, n any) { c.enqueueOwner(n) },
		DeleteFunc: c.enqueueOwner,
	}); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *VMIController) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err == nil {
		c.queue.Add(key)
	}
}

func (c *VMIController) enqueueOwner(obj any) {
	if key, ok := ownerKey(obj, "VirtualMachineInstance"); ok {
		c.queue.Add(key)
	}
}

// ownerKey returns namespace/name of obj's controller if it is of kind.
func ownerKey(obj any, kind string) (string, bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return "", false
	}
	ref := metav1.GetControllerOf(m)
	if ref == nil || ref.Kind != kind || ref.APIVersion != v1.GroupVersion.String() {
		return "", false
	}
	return m.GetNamespace() + "/" + ref.Name, true
}

// Run processes the queue with workers goroutines until ctx ends.
func (c *VMIController) Run(ctx context.Context, workers int) {
	defer c.watchers.StopAll()
	runQueue(ctx, c.queue, workers, "vmi", c.sync, c.log, c.metrics)
}

// podsOf returns the launcher pods controlled by vmi, newest first.
func (c *VMIController) podsOf(vmi *v1.VirtualMachineInstance) ([]*corev1.Pod, error) {
	sel := labels.SelectorFromSet(labels.Set{v1.CreatedByLabel: string(vmi.UID)})
	all, err := c.pods.Pods(vmi.Namespace).List(sel)
	if err != nil {
		return nil, err
	}
	var out []*corev1.Pod
	for _, p := range all {
		if ref := metav1.GetControllerOf(p); ref != nil && ref.UID == vmi.UID {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[j].CreationTimestamp.Before(&out[i].CreationTimestamp) })
	return out, nil
}

func podTerminated(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// podReady: the pod runs and its launcher container is ready (or the pod is Ready). The readiness gate
// is deliberately ignored here: a paused guest keeps the pod not-Ready but the VMI is still Scheduled.
func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == LauncherContainerName && cs.Ready {
			return true
		}
	}
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func podCondition(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// launcherOutcome is what the launcher writes to its termination log (launcher/grace.Outcome):
// {"phase":"Succeeded|Failed","reason":"...","message":"..."}.
type launcherOutcome struct {
	Phase   string `json:"phase"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// terminationMessage returns the launcher container's termination reason and message, if it ended.
// A launcher outcome in the message is unpacked (its reason and message win); anything else (the log
// tail of FallbackToLogsOnError, or the container runtime's reason) is returned as it is.
func terminationMessage(p *corev1.Pod) (reason, msg string, exitCode int32, ok bool) {
	if p == nil {
		return "", "", 0, false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == LauncherContainerName && cs.State.Terminated != nil {
			t := cs.State.Terminated
			reason, msg = t.Reason, t.Message
			var o launcherOutcome
			if err := json.Unmarshal([]byte(strings.TrimSpace(t.Message)), &o); err == nil && o.Phase != "" {
				reason, msg = firstNonEmpty(o.Reason, reason), o.Message
			}
			return reason, msg, t.ExitCode, true
		}
	}
	return "", "", 0, false
}

// imagePullProblem returns the launcher container's image-pull waiting reason and message, if any.
func imagePullProblem(p *corev1.Pod) (string, string) {
	if p == nil {
		return "", ""
	}
	// The compute container, and the init containers whose images are the VMI's containerDisks and
	// kernelBoot image (pulled by the kubelet, controller/poddisks.go): a typo in a disk image shows as
	// ErrImagePull on the VM just as a bad launcher image does.
	for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, cs := range list {
			if cs.State.Waiting == nil {
				continue
			}
			switch cs.State.Waiting.Reason {
			case v1.ErrImagePullReason, v1.ImagePullBackOffReason:
				return cs.State.Waiting.Reason, cs.State.Waiting.Message
			}
		}
	}
	return "", ""
}

func hasFinalizer(m metav1.Object, f string) bool {
	for _, x := range m.GetFinalizers() {
		if x == f {
			return true
		}
	}
	return false
}

func removeString(list []string, s string) []string {
	var out []string
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// sync reconciles one VMI. It returns a delay after which the key must be looked at again (0: none).
func (c *VMIController) sync(ctx context.Context, key string) (time.Duration, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return 0, nil
	}
	log := c.log.With("namespace", ns, "vmi", name)
	cached, err := c.vmis.VirtualMachineInstances(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.watchers.Stop(key)
		c.podExp.Forget(key)
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	vmi := cached.DeepCopy()
	// Expectations before the pod cache, as Kubernetes' ReplicaSet controller does: a creation observed
	// after this read is already in the cache read next. The other order lets a pod we created land in
	// the cache (and satisfy the expectation) between the two reads, and a second pod would be created.
	createPending, _ := c.podExp.Pending(key)
	pods, err := c.podsOf(vmi)
	if err != nil {
		return 0, err
	}

	if vmi.DeletionTimestamp != nil {
		return 0, c.syncDeleting(ctx, log, key, vmi, pods)
	}

	// Every VMI keeps this finalizer until its pod is gone, so deleting a VMI stops its guest gracefully.
	if !hasFinalizer(vmi, v1.VirtualMachineInstanceFinalizer) {
		vmi.Finalizers = append(vmi.Finalizers, v1.VirtualMachineInstanceFinalizer)
		upd, err := patchVMI(ctx, c.kv, vmi, setField("/metadata/finalizers", vmi.Finalizers))
		if err != nil {
			return 0, fmt.Errorf("add finalizer: %w", err)
		}
		vmi = upd
	}

	var pod *corev1.Pod
	if len(pods) > 0 {
		pod = pods[0]
	}
	if vmi.IsFinal() {
		c.watchers.Stop(key)
		for _, p := range pods {
			if p.DeletionTimestamp == nil && !podTerminated(p) {
				if err := c.deletePod(ctx, vmi, p); err != nil {
					return 0, err
				}
			}
		}
		return 0, nil
	}

	var missingPVCs []string // claims of a VMI without a pod that do not exist yet (podvolumes.go)
	if pod == nil && (vmi.Status.Phase == v1.VmPhaseUnset || vmi.Status.Phase == v1.Pending) {
		if createPending {
			return 0, nil // the pod we created is not in the cache yet
		}
		claims, err := c.claimsOf(vmi)
		if err != nil {
			return 0, err
		}
		if missingPVCs = missingClaims(&vmi.Spec, claims); len(missingPVCs) == 0 {
			if err := c.ensureTokenSecret(ctx, vmi); err != nil {
				return 0, err
			}
			if err := c.createPod(ctx, key, vmi, claims); err != nil {
				return 0, err
			}
		}
	}

	newStatus := vmi.Status.DeepCopy()
	var state *LauncherState
	if pod != nil {
		if s, ok := c.watchers.State(key, pod.Name); ok {
			state = &s
		}
	}
	c.computeStatus(vmi, newStatus, pod, state)
	applyBootCondition(newStatus, state, metav1.NewTime(c.now()))
	pvcNotFound := pvcSyncStatus(newStatus, ns, missingPVCs, metav1.NewTime(c.now()))

	// Keep a launcher watcher while the pod can serve the control API: from the moment the pod is bound
	// to a node when the launcher is reached by pod name (port-forward), else once it has an IP. The
	// endpoint carries the IP only when it is used, so the IP's arrival does not restart a working watch.
	podIP := ""
	if c.needIP && pod != nil {
		podIP = pod.Status.PodIP
	}
	reachable := podIP != "" || (!c.needIP && pod != nil && pod.Spec.NodeName != "")
	if reachable && pod.DeletionTimestamp == nil && !podTerminated(pod) && !isFinalPhase(newStatus.Phase) {
		if tok, err := c.token(vmi); err == nil {
			c.watchers.Ensure(key, LauncherEndpoint{
				Namespace: ns, VMIName: name, VMIUID: vmi.UID, PodName: pod.Name, PodIP: podIP,
				Port: c.controlPort(), Token: tok,
			})
		} else {
			log.Debug("no launcher token yet", "err", err)
		}
	}
	if isFinalPhase(newStatus.Phase) {
		c.watchers.Stop(key)
	}

	// The readiness gate reflects the pause state (KubeVirt: virt-handler sets it).
	if pod != nil && pod.Status.Phase == corev1.PodRunning && pod.DeletionTimestamp == nil {
		want := corev1.ConditionTrue
		if state != nil && state.Paused {
			want = corev1.ConditionFalse
		}
		if err := c.setUnpausedGate(ctx, pod, want); err != nil {
			return 0, err
		}
	}

	// Node label (metadata) first, then status.
	if newStatus.NodeName != "" && vmi.Labels[v1.NodeNameLabel] != newStatus.NodeName {
		if vmi.Labels == nil {
			vmi.Labels = map[string]string{}
		}
		vmi.Labels[v1.NodeNameLabel] = newStatus.NodeName
		upd, err := patchVMI(ctx, c.kv, vmi, setField("/metadata/labels", vmi.Labels))
		if err != nil {
			return 0, fmt.Errorf("set node label: %w", err)
		}
		vmi = upd
	}
	if !equality.Semantic.DeepEqual(&vmi.Status, newStatus) {
		old := vmi.DeepCopy()
		vmi.Status = *newStatus
		if _, err := c.kv.KubevirtV1().VirtualMachineInstances(ns).UpdateStatus(ctx, vmi, metav1.UpdateOptions{}); err != nil {
			return 0, fmt.Errorf("update status: %w", err)
		}
		// Events only for what was written (a conflict retries the sync and would repeat them).
		c.phaseEvents(old, old.Status.Phase, newStatus, state, pod)
		c.bootEvent(old, newStatus)
		if pvcNotFound {
			c.recorder.Event(vmi, corev1.EventTypeNormal, v1.FailedPvcNotFoundReason, pvcNotFoundMessage(ns, missingPVCs[0]))
		}
		if old.Status.Phase != newStatus.Phase {
			log.Info("phase changed", "from", old.Status.Phase, "to", newStatus.Phase, "reason", newStatus.Reason)
		} else {
			log.Debug("status updated", "phase", newStatus.Phase)
		}
	}
	if isFinalPhase(newStatus.Phase) && pod != nil && pod.DeletionTimestamp == nil && !podTerminated(pod) {
		return 0, c.deletePod(ctx, vmi, pod)
	}
	return 0, nil
}

func isFinalPhase(p v1.VirtualMachineInstancePhase) bool { return p == v1.Succeeded || p == v1.Failed }

func (c *VMIController) controlPort() int {
	if c.cfg.ControlPort != 0 {
		return c.cfg.ControlPort
	}
	return DefaultControlPort
}

// computeStatus derives phase, node, conditions and interfaces from the pod and the launcher's state.
func (c *VMIController) computeStatus(vmi *v1.VirtualMachineInstance, st *v1.VirtualMachineInstanceStatus, pod *corev1.Pod, state *LauncherState) {
	now := metav1.NewTime(c.now())
	phase := st.Phase
	reason := st.Reason
	switch {
	case pod == nil:
		switch phase {
		case v1.VmPhaseUnset:
			phase = v1.Pending
		case v1.Scheduling, v1.Scheduled, v1.Running:
			if adds, _ := c.podExp.Pending(vmi.Namespace + "/" + vmi.Name); !adds {
				phase, reason = v1.Failed, ReasonPodGone
			}
		}
	case state != nil && state.Phase == GuestSucceeded:
		phase, reason = v1.Succeeded, state.Reason
	case state != nil && state.Phase == GuestFailed:
		phase, reason = v1.Failed, firstNonEmpty(state.Reason, ReasonLauncherFailed)
	case podTerminated(pod):
		tReason, _, code, _ := terminationMessage(pod)
		if pod.Status.Phase == corev1.PodSucceeded && code == 0 && (phase == v1.Running || phase == v1.Scheduled) {
			// The launcher exits 0 only after the guest powered off.
			phase, reason = v1.Succeeded, ""
		} else {
			phase, reason = v1.Failed, firstNonEmpty(tReason, ReasonLauncherFailed)
		}
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
	if phase == v1.Failed || phase == v1.Succeeded {
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
			setVMICondition(st, v1.VirtualMachineInstanceCondition{
				Type: v1.VirtualMachineInstancePodScheduled, Status: pc.Status, Reason: pc.Reason, Message: pc.Message,
				LastProbeTime: pc.LastProbeTime, LastTransitionTime: pc.LastTransitionTime,
			}, now)
		}
	}

	// Synchronized=False with the kubelet's image-pull reason, so the VM shows ErrImagePull or
	// ImagePullBackOff (KubeVirt: virt-controller's sync of the launcher pod's container statuses).
	if reason, msg := imagePullProblem(pod); reason != "" && !isFinalPhase(phase) {
		setVMICondition(st, v1.VirtualMachineInstanceCondition{
			Type: v1.VirtualMachineInstanceSynchronized, Status: corev1.ConditionFalse, Reason: reason, Message: msg,
		}, now)
	} else if c := st.Condition(v1.VirtualMachineInstanceSynchronized); c != nil && (c.Reason == v1.ErrImagePullReason || c.Reason == v1.ImagePullBackOffReason) {
		removeVMICondition(st, v1.VirtualMachineInstanceSynchronized)
	}

	// Paused.
	paused := state != nil && state.Paused && phase == v1.Running
	if paused {
		setVMICondition(st, v1.VirtualMachineInstanceCondition{
			Type: v1.VirtualMachineInstancePaused, Status: corev1.ConditionTrue,
			Reason: v1.PausedByUserReason, Message: v1.PausedByUserMessage,
		}, now)
	} else {
		removeVMICondition(st, v1.VirtualMachineInstancePaused)
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
	setVMICondition(st, ready, now)

	// Interfaces: the launcher's view when it has one, else the pod IP on the first interface.
	if phase == v1.Running || phase == v1.Scheduled {
		st.Interfaces = c.interfaces(vmi, pod, state)
	}
}

func (c *VMIController) interfaces(vmi *v1.VirtualMachineInstance, pod *corev1.Pod, state *LauncherState) []v1.VirtualMachineInstanceNetworkInterface {
	if state != nil && len(state.Interfaces) > 0 {
		return append([]v1.VirtualMachineInstanceNetworkInterface(nil), state.Interfaces...)
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

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
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
	var out []v1.VirtualMachineInstanceCondition
	for _, c := range st.Conditions {
		if c.Type != t {
			out = append(out, c)
		}
	}
	st.Conditions = out
}

// phaseEvents records virt-handler's lifecycle events for what the new status says happened.
func (c *VMIController) phaseEvents(vmi *v1.VirtualMachineInstance, old v1.VirtualMachineInstancePhase, st *v1.VirtualMachineInstanceStatus, state *LauncherState, pod *corev1.Pod) {
	if old != st.Phase {
		switch st.Phase {
		case v1.Running:
			c.recorder.Event(vmi, corev1.EventTypeNormal, ReasonStarted, "VirtualMachineInstance started.")
		case v1.Succeeded:
			c.recorder.Event(vmi, corev1.EventTypeNormal, ReasonStopped, "The VirtualMachineInstance was shut down.")
		case v1.Failed:
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
			c.recorder.Event(vmi, corev1.EventTypeWarning, ReasonStopped, msg)
		}
	}
	wasPaused := vmi.Status.HasCondition(v1.VirtualMachineInstancePaused, corev1.ConditionTrue)
	isPaused := st.HasCondition(v1.VirtualMachineInstancePaused, corev1.ConditionTrue)
	switch {
	case !wasPaused && isPaused:
		c.recorder.Event(vmi, corev1.EventTypeNormal, ReasonPaused, "VirtualMachineInstance paused")
	case wasPaused && !isPaused && st.Phase == v1.Running:
		c.recorder.Event(vmi, corev1.EventTypeNormal, ReasonUnpaused, "VirtualMachineInstance unpaused")
	}
}

func (c *VMIController) token(vmi *v1.VirtualMachineInstance) (string, error) {
	s, err := c.secrets.Secrets(vmi.Namespace).Get(TokenSecretName(vmi.Name))
	if err != nil {
		return "", err
	}
	if s.Labels[v1.CreatedByLabel] != string(vmi.UID) {
		return "", fmt.Errorf("secret %s belongs to another VMI", s.Name)
	}
	return string(s.Data[TokenSecretKey]), nil
}

// ensureTokenSecret creates the per-VMI token secret; one left by an earlier VMI of the same name is
// deleted first (its garbage collection may not have happened yet).
func (c *VMIController) ensureTokenSecret(ctx context.Context, vmi *v1.VirtualMachineInstance) error {
	secrets := c.kube.CoreV1().Secrets(vmi.Namespace)
	existing, err := c.secrets.Secrets(vmi.Namespace).Get(TokenSecretName(vmi.Name))
	if err == nil {
		if existing.Labels[v1.CreatedByLabel] == string(vmi.UID) {
			return nil
		}
		uid := existing.UID
		err := secrets.Delete(ctx, existing.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete stale token secret: %w", err)
		}
	} else if !apierrors.IsNotFound(err) {
		return err
	}
	tok, err := newToken()
	if err != nil {
		return err
	}
	_, err = secrets.Create(ctx, renderTokenSecret(vmi, tok), metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("token secret %s/%s exists and is not yet in the cache; retrying", vmi.Namespace, TokenSecretName(vmi.Name))
	}
	if err != nil {
		return fmt.Errorf("create token secret: %w", err)
	}
	return nil
}

func (c *VMIController) createPod(ctx context.Context, key string, vmi *v1.VirtualMachineInstance, claims map[string]*corev1.PersistentVolumeClaim) error {
	pod, err := renderLauncherPod(vmi, c.cfg, claims)
	if err != nil {
		c.recorder.Event(vmi, corev1.EventTypeWarning, ReasonFailedCreate, fmt.Sprintf("Error creating pod: %v", err))
		return err
	}
	c.podExp.ExpectCreations(key, 1)
	created, err := c.kube.CoreV1().Pods(vmi.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		c.podExp.CreationObserved(key)
		c.recorder.Event(vmi, corev1.EventTypeWarning, ReasonFailedCreate, fmt.Sprintf("Error creating pod: %v", err))
		return fmt.Errorf("create launcher pod: %w", err)
	}
	c.recorder.Event(vmi, corev1.EventTypeNormal, ReasonSuccessfulCreate, "Created virtual machine pod "+created.Name)
	c.log.Info("created launcher pod", "namespace", vmi.Namespace, "vmi", vmi.Name, "pod", created.Name)
	return nil
}

func (c *VMIController) deletePod(ctx context.Context, vmi *v1.VirtualMachineInstance, pod *corev1.Pod) error {
	uid := pod.UID
	err := c.kube.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	if err != nil {
		c.recorder.Event(vmi, corev1.EventTypeWarning, ReasonFailedDelete, fmt.Sprintf("Error deleting pod %s: %v", pod.Name, err))
		return fmt.Errorf("delete launcher pod: %w", err)
	}
	c.recorder.Event(vmi, corev1.EventTypeNormal, ReasonSuccessfulDelete, "Deleted virtual machine pod "+pod.Name)
	return nil
}

// syncDeleting stops a VMI being deleted: its pods are deleted gracefully (the launcher shuts the guest
// down within the grace period) and the finalizers are removed once no pod is left.
func (c *VMIController) syncDeleting(ctx context.Context, log *slog.Logger, key string, vmi *v1.VirtualMachineInstance, pods []*corev1.Pod) error {
	for _, p := range pods {
		if p.DeletionTimestamp == nil && !podTerminated(p) {
			if err := c.deletePod(ctx, vmi, p); err != nil {
				return err
			}
		}
	}
	var alive []*corev1.Pod
	for _, p := range pods {
		if !podTerminated(p) {
			alive = append(alive, p)
		}
	}
	if len(alive) > 0 {
		// Still shutting down: keep watching the launcher so the final state is recorded.
		st := vmi.Status.DeepCopy()
		var state *LauncherState
		if s, ok := c.watchers.State(key, alive[0].Name); ok {
			state = &s
		}
		c.computeStatus(vmi, st, alive[0], state)
		if !equality.Semantic.DeepEqual(&vmi.Status, st) {
			old := vmi.DeepCopy()
			vmi.Status = *st
			if _, err := c.kv.KubevirtV1().VirtualMachineInstances(vmi.Namespace).UpdateStatus(ctx, vmi, metav1.UpdateOptions{}); err != nil {
				if apierrors.IsNotFound(err) {
					return nil
				}
				return fmt.Errorf("update status: %w", err)
			}
			c.phaseEvents(old, old.Status.Phase, st, state, alive[0])
		}
		return nil
	}
	c.watchers.Stop(key)
	fin := removeString(vmi.Finalizers, v1.VirtualMachineInstanceFinalizer)
	if ref := metav1.GetControllerOf(vmi); ref == nil || ref.Kind != "VirtualMachine" {
		// No VM controller will look at this VMI again (orphaned): drop its finalizer too.
		fin = removeString(fin, v1.VirtualMachineControllerFinalizer)
	}
	if len(fin) != len(vmi.Finalizers) {
		if _, err := patchVMI(ctx, c.kv, vmi, setField("/metadata/finalizers", fin)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("remove finalizer: %w", err)
		}
		log.Info("launcher pods gone; finalizer removed")
	}
	return nil
}

// setUnpausedGate sets the pod's kubevirt.io/virtual-machine-unpaused condition.
func (c *VMIController) setUnpausedGate(ctx context.Context, pod *corev1.Pod, want corev1.ConditionStatus) error {
	if pc := podCondition(pod, v1.VirtualMachineUnpausedPodCondition); pc != nil && pc.Status == want {
		return nil
	}
	p := pod.DeepCopy()
	now := metav1.NewTime(c.now())
	cond := corev1.PodCondition{Type: v1.VirtualMachineUnpausedPodCondition, Status: want, LastTransitionTime: now, LastProbeTime: now}
	if want == corev1.ConditionFalse {
		cond.Reason, cond.Message = v1.PausedByUserReason, v1.PausedByUserMessage
	}
	found := false
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == cond.Type {
			p.Status.Conditions[i] = cond
			found = true
		}
	}
	if !found {
		p.Status.Conditions = append(p.Status.Conditions, cond)
	}
	_, err := c.kube.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("set pod readiness gate: %w", err)
	}
	return nil
}
