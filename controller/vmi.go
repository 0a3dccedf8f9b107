package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	kvclient "github.com/kvirt/kvirt/api/client/clientset/versioned"
	kvlisters "github.com/kvirt/kvirt/api/client/listers/api/v1"
	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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
	ReasonShuttingDown     = "ShuttingDown"
	ReasonDeleted          = "Deleted"
	ReasonCreated          = "Created"
)

// VMI status reasons set by this controller.
const (
	// ReasonPodGone: the launcher pod disappeared or failed before the guest finished.
	ReasonPodGone = "PodGone"
	// ReasonLauncherFailed: the launcher reported or exited with a failure.
	ReasonLauncherFailed = "LauncherFailed"
	// ReasonNodeUnresponsive (KubeVirt's node controller's): the launcher pod ended or vanished on a lost
	// node (nodeLost); also the reason of the event that says so.
	ReasonNodeUnresponsive = "NodeUnresponsive"
)

// DefaultNodeNotReadyTimeout is how long a node may be NotReady before the VMIs on it show Unknown.
const DefaultNodeNotReadyTimeout = 30 * time.Second

// VMIController runs each VirtualMachineInstance in a launcher pod and writes the VMI status.
type VMIController struct {
	kube     kubernetes.Interface
	kv       kvclient.Interface
	vmis     kvlisters.VirtualMachineInstanceLister
	pods     corelisters.PodLister
	secrets  corelisters.SecretLister
	nodes    corelisters.NodeLister                  // node.go
	podIndex cache.Indexer                           // launcher pods, also by node (podNodeIndex)
	pvcs     corelisters.PersistentVolumeClaimLister // podvolumes.go
	vmiIndex cache.Indexer                           // VMIs by claim (vmiPVCIndex)
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder
	podExp   *Expectations
	watchers *launcherWatchers
	// commander sends requests to launchers (nil: the status source cannot).
	commander LauncherCommander
	// needIP: the StatusSource dials the pod IP (direct mode), so watching waits for the pod's IP.
	needIP  bool
	cfg     PodConfig
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time

	// notReadyTimeout: how long a node may be NotReady before its VMIs show Unknown.
	notReadyTimeout time.Duration
}

func newVMIController(kube kubernetes.Interface, kv kvclient.Interface, vmiInf, podInf, secretInf, pvcInf, nodeInf cache.SharedIndexInformer,
	recorder record.EventRecorder, src StatusSource, cfg PodConfig, notReadyTimeout time.Duration, log *slog.Logger, metrics *Metrics) (*VMIController, error) {
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

		notReadyTimeout: notReadyTimeout,
	}
	c.watchers = newLauncherWatchers(src, c.queue.Add, c.log)
	c.commander, _ = src.(LauncherCommander)
	c.needIP = needsPodIP(src)
	if err := c.watchClaims(vmiInf, pvcInf); err != nil {
		return nil, err
	}
	if err := c.watchNodes(nodeInf, podInf); err != nil {
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

// sync reconciles one VMI: it reads the cache, the expectations and the launcher's last report once,
// decides (decideVMI) and executes the actions in order. It returns a delay after which the key must be
// looked at again (0: none).
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
	// Expectations before the pod cache (see Expectations).
	createPending, _ := c.podExp.Pending(key)
	pods, err := c.podsOf(cached)
	if err != nil {
		return 0, err
	}
	claims, err := c.claimsOf(cached)
	if err != nil {
		return 0, err
	}
	in := vmiInput{vmi: cached, pods: pods, claims: claims, createPending: createPending, needIP: c.needIP, port: c.controlPort(),
		commander: c.commander != nil, notReadyTimeout: c.notReadyTimeout, now: c.now()}
	if in.nodeName, in.node, err = c.nodeOf(cached, statusPod(cached, pods)); err != nil {
		return 0, err
	}
	var tokenErr error
	if pod := statusPod(cached, pods); pod != nil {
		if s, ok := c.watchers.State(key, pod.Name); ok {
			in.state = &s
		}
		in.sent = c.watchers.Sent(key, pod.Name)
		in.token, tokenErr = c.token(cached)
		in.hasToken = tokenErr == nil
	}
	a := decideVMI(in)
	if a.noToken {
		log.Debug("no launcher token yet", "err", tokenErr)
	}
	err = c.execute(ctx, log, key, cached.DeepCopy(), a, claims, in.now)
	if err != nil && !cached.IsFinal() && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && !errors.As(err, new(reportedError)) {
		// virt-handler's SyncFailed: what went wrong, on the VMI (errors with an event of their own, and
		// conflicts and vanished objects of a stale cache, which the retry resolves, excepted).
		c.recorder.Event(cached, corev1.EventTypeWarning, ReasonSyncFailed, err.Error())
	}
	return a.recheck, err
}

// reportedError is a sync error that has had its own event (FailedCreate, FailedDelete).
type reportedError struct{ error }

func (e reportedError) Unwrap() error { return e.error }

// execute carries out a VMI sync's actions in order; it stops at the first that fails.
func (c *VMIController) execute(ctx context.Context, log *slog.Logger, key string, vmi *v1.VirtualMachineInstance, a vmiActions,
	claims map[string]*corev1.PersistentVolumeClaim, now time.Time) error {
	if a.addFinalizer {
		upd, err := patchVMI(ctx, c.kv, vmi, setField("/metadata/finalizers", append(vmi.Finalizers, v1.VirtualMachineInstanceFinalizer)))
		if err != nil {
			return fmt.Errorf("add finalizer: %w", err)
		}
		vmi = upd
	}
	// A launcher that cannot be reached must not hold its pod's deletion back: the error is returned
	// after the pods were deleted.
	var callErr error
	if a.call != nil {
		callErr = c.callLauncher(ctx, log, key, vmi, a.call)
	}
	if a.stopWatch {
		c.watchers.Stop(key)
	}
	for _, p := range a.deletePods {
		if err := c.deletePod(ctx, vmi, p, nil); err != nil {
			return err
		}
	}
	for _, p := range a.shortenPods {
		if err := c.deletePod(ctx, vmi, p, &a.podGrace); err != nil {
			return err
		}
	}
	if a.createPod {
		if err := c.ensureTokenSecret(ctx, vmi); err != nil {
			return err
		}
		if err := c.createPod(ctx, key, vmi, claims); err != nil {
			return err
		}
	}
	if a.watch != nil {
		c.watchers.Ensure(key, *a.watch)
	}
	if a.unpausedGate != "" {
		if err := c.setUnpausedGate(ctx, a.gatePod, a.unpausedGate, now); err != nil {
			return err
		}
	}
	if a.nodeLabel != "" {
		labels := maps.Clone(vmi.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		labels[v1.NodeNameLabel] = a.nodeLabel
		upd, err := patchVMI(ctx, c.kv, vmi, setField("/metadata/labels", labels))
		if err != nil {
			return fmt.Errorf("set node label: %w", err)
		}
		vmi = upd
	}
	if a.status != nil {
		from := vmi.Status.Phase
		vmi.Status = *a.status
		if _, err := c.kv.KubevirtV1().VirtualMachineInstances(vmi.Namespace).UpdateStatus(ctx, vmi, metav1.UpdateOptions{}); err != nil {
			if vmi.DeletionTimestamp != nil && apierrors.IsNotFound(err) {
				return nil // its finalizers are gone: nothing left to record
			}
			return fmt.Errorf("update status: %w", err)
		}
		for _, ev := range a.events {
			c.recorder.Event(vmi, ev.eventType, ev.reason, ev.message)
		}
		if from != a.status.Phase {
			log.Info("phase changed", "from", from, "to", a.status.Phase, "reason", a.status.Reason)
		} else {
			log.Debug("status updated", "phase", a.status.Phase)
		}
	}
	if a.deletePodAfterStatus != nil {
		if err := c.deletePod(ctx, vmi, a.deletePodAfterStatus, nil); err != nil {
			return err
		}
	}
	if a.removeFinalizers {
		if _, err := patchVMI(ctx, c.kv, vmi, setField("/metadata/finalizers", a.finalizers)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("remove finalizer: %w", err)
		}
		log.Info("launcher pods gone; finalizer removed")
	}
	return callErr
}

// callLauncher sends call to the launcher, remembers it was sent and records its event.
func (c *VMIController) callLauncher(ctx context.Context, log *slog.Logger, key string, vmi *v1.VirtualMachineInstance, call *launcherCall) error {
	if err := c.commander.Command(ctx, call.ep, call.cmd); err != nil {
		return fmt.Errorf("launcher %s (grace period %s): %w", call.cmd.Op, call.cmd.Grace, err)
	}
	c.watchers.MarkSent(key, call.ep.PodName, call.cmd)
	log.Info("asked the launcher", "request", call.cmd.Op, "grace", call.cmd.Grace, "pod", call.ep.PodName)
	if call.event != nil {
		c.recorder.Event(vmi, call.event.eventType, call.event.reason, call.event.message)
	}
	return nil
}

func (c *VMIController) controlPort() int {
	if c.cfg.ControlPort != 0 {
		return c.cfg.ControlPort
	}
	return DefaultControlPort
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

// ensureTokenSecret creates the per-VMI token secret. One that kvirt made for an earlier VMI of the same
// name is deleted first (its garbage collection may not have happened yet); a Secret of that name that
// kvirt did not create is never deleted: the VMI waits, with a warning event, until its owner renames or
// deletes it.
func (c *VMIController) ensureTokenSecret(ctx context.Context, vmi *v1.VirtualMachineInstance) error {
	secrets := c.kube.CoreV1().Secrets(vmi.Namespace)
	name := TokenSecretName(vmi.Name)
	existing, err := c.secrets.Secrets(vmi.Namespace).Get(name)
	switch {
	case err == nil && existing.Labels[v1.CreatedByLabel] == string(vmi.UID):
		return nil
	case err == nil && !staleTokenSecret(existing):
		return c.foreignSecret(vmi, fmt.Sprintf("Secret %s/%s has the label %s=%s but is not owned by a VirtualMachineInstance: kvirt did not create it and does not delete it; rename or delete it for the VMI to start",
			vmi.Namespace, name, v1.AppLabel, TokenSecretLabelValue))
	case err == nil:
		uid := existing.UID
		err := secrets.Delete(ctx, existing.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete stale token secret: %w", err)
		}
	case !apierrors.IsNotFound(err):
		return err
	}
	tok, err := newToken()
	if err != nil {
		return err
	}
	_, err = secrets.Create(ctx, renderTokenSecret(vmi, tok), metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// The controller sees only Secrets with kvirt's label: either it created this one moments ago and
		// its cache lags, or the Secret is someone else's.
		return c.foreignSecret(vmi, fmt.Sprintf("Secret %s/%s already exists and is not one the controller knows as its own (label %s=%s): if it was not created by kvirt, rename or delete it for the VMI to start; kvirt never deletes Secrets it did not create",
			vmi.Namespace, name, v1.AppLabel, TokenSecretLabelValue))
	}
	if err != nil {
		return fmt.Errorf("create token secret: %w", err)
	}
	return nil
}

// staleTokenSecret reports whether s is a token secret kvirt made for a VMI: its controller is that VMI,
// whose UID its created-by label names.
func staleTokenSecret(s *corev1.Secret) bool {
	ref := metav1.GetControllerOf(s)
	return s.Labels[v1.AppLabel] == TokenSecretLabelValue && ref != nil &&
		ref.Kind == v1.VirtualMachineInstanceGroupVersionKind.Kind && strings.HasPrefix(ref.APIVersion, v1.GroupName+"/") &&
		ref.UID != "" && string(ref.UID) == s.Labels[v1.CreatedByLabel]
}

// foreignSecret reports a token secret name taken by a Secret kvirt must not touch, as a warning event on
// the VMI and as the sync's error (the VMI is retried with backoff).
func (c *VMIController) foreignSecret(vmi *v1.VirtualMachineInstance, msg string) error {
	c.recorder.Event(vmi, corev1.EventTypeWarning, ReasonFailedCreate, "Error creating pod: "+msg)
	return errors.New(msg)
}

func (c *VMIController) createPod(ctx context.Context, key string, vmi *v1.VirtualMachineInstance, claims map[string]*corev1.PersistentVolumeClaim) error {
	pod, err := renderLauncherPod(vmi, c.cfg, claims)
	if err != nil {
		c.recorder.Event(vmi, corev1.EventTypeWarning, ReasonFailedCreate, fmt.Sprintf("Error creating pod: %v", err))
		return reportedError{err}
	}
	c.podExp.ExpectCreations(key, 1)
	created, err := c.kube.CoreV1().Pods(vmi.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		c.podExp.CreationObserved(key)
		c.recorder.Event(vmi, corev1.EventTypeWarning, ReasonFailedCreate, fmt.Sprintf("Error creating pod: %v", err))
		return reportedError{fmt.Errorf("create launcher pod: %w", err)}
	}
	c.recorder.Event(vmi, corev1.EventTypeNormal, ReasonSuccessfulCreate, "Created virtual machine pod "+created.Name)
	c.log.Info("created launcher pod", "namespace", vmi.Namespace, "vmi", vmi.Name, "pod", created.Name)
	return nil
}

// deletePod deletes pod with grace seconds (nil: the pod's own grace period).
func (c *VMIController) deletePod(ctx context.Context, vmi *v1.VirtualMachineInstance, pod *corev1.Pod, grace *int64) error {
	uid := pod.UID
	err := c.kube.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}, GracePeriodSeconds: grace})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	if err != nil {
		c.recorder.Event(vmi, corev1.EventTypeWarning, ReasonFailedDelete, fmt.Sprintf("Error deleting pod %s: %v", pod.Name, err))
		return reportedError{fmt.Errorf("delete launcher pod: %w", err)}
	}
	c.recorder.Event(vmi, corev1.EventTypeNormal, ReasonSuccessfulDelete, "Deleted virtual machine pod "+pod.Name)
	return nil
}

// setUnpausedGate sets the readiness gate condition kubevirt.io/virtual-machine-unpaused of pod to want.
func (c *VMIController) setUnpausedGate(ctx context.Context, pod *corev1.Pod, want corev1.ConditionStatus, now time.Time) error {
	p := pod.DeepCopy()
	cond := unpausedGateCondition(want, now)
	if i := slices.IndexFunc(p.Status.Conditions, func(pc corev1.PodCondition) bool { return pc.Type == cond.Type }); i >= 0 {
		p.Status.Conditions[i] = cond
	} else {
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
