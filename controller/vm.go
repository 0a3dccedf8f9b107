package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	kvclient "github.com/kvirt/kvirt/api/client/clientset/versioned"
	kvlisters "github.com/kvirt/kvirt/api/client/listers/api/v1"
	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// VMController keeps each VirtualMachine's instance in line with its run strategy and reports the
// instance's state in the VM status.
type VMController struct {
	kv       kvclient.Interface
	raw      rest.Interface // kubevirt.io/v1 REST client for untyped reads and writes (nil with fake clients)
	vms      kvlisters.VirtualMachineLister
	vmis     kvlisters.VirtualMachineInstanceLister
	pvcs     corelisters.PersistentVolumeClaimLister
	vmIndex  cache.Indexer
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder
	exp      *Expectations
	log      *slog.Logger
	metrics  *Metrics
	now      func() time.Time
	jitter   func(int64) int64
}

// vmPVCIndex indexes VMs by namespace/claim of their template's PVC volumes (a PVC event finds its VMs).
const vmPVCIndex = "pvc"

func newVMController(kv kvclient.Interface, vmInf, vmiInf, pvcInf cache.SharedIndexInformer, recorder record.EventRecorder, log *slog.Logger, metrics *Metrics) (*VMController, error) {
	if err := vmInf.AddIndexers(cache.Indexers{vmPVCIndex: func(obj any) ([]string, error) {
		vm, ok := obj.(*v1.VirtualMachine)
		if !ok {
			return nil, nil
		}
		var keys []string
		for _, claim := range templatePVCs(vm) {
			keys = append(keys, vm.Namespace+"/"+claim)
		}
		return keys, nil
	}}); err != nil {
		return nil, err
	}
	c := &VMController{
		kv:       kv,
		vms:      kvlisters.NewVirtualMachineLister(vmInf.GetIndexer()),
		vmis:     kvlisters.NewVirtualMachineInstanceLister(vmiInf.GetIndexer()),
		pvcs:     corelisters.NewPersistentVolumeClaimLister(pvcInf.GetIndexer()),
		vmIndex:  vmInf.GetIndexer(),
		queue:    workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "vm"}),
		recorder: recorder,
		exp:      NewExpectations(),
		log:      log.With("controller", "vm"),
		metrics:  metrics,
		now:      time.Now,
		jitter:   randJitter,
	}
	if _, err := vmInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, n any) { c.enqueue(n) },
		DeleteFunc: c.enqueue,
	}); err != nil {
		return nil, err
	}
	if _, err := vmiInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if key, ok := ownerKey(obj, "VirtualMachine"); ok {
				c.exp.CreationObserved(key)
			}
			c.enqueueVMOf(obj)
		},
		UpdateFunc: func(_, n any) {
			if vmi, ok := n.(*v1.VirtualMachineInstance); ok && vmi.DeletionTimestamp != nil {
				if key, ok := ownerKey(vmi, "VirtualMachine"); ok {
					c.exp.DeletionObserved(key, vmi.UID)
				}
			}
			c.enqueueVMOf(n)
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if vmi, ok := obj.(*v1.VirtualMachineInstance); ok {
				if key, ok := ownerKey(vmi, "VirtualMachine"); ok {
					c.exp.DeletionObserved(key, vmi.UID)
				}
			}
			c.enqueueVMOf(obj)
		},
	}); err != nil {
		return nil, err
	}
	// A PVC appearing or changing phase can change WaitingForVolumeBinding (KubeVirt watches only adds;
	// the binding itself is what a user waits for, so updates count too).
	if _, err := pvcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueVMsOfPVC,
		UpdateFunc: func(_, n any) { c.enqueueVMsOfPVC(n) },
		DeleteFunc: c.enqueueVMsOfPVC,
	}); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *VMController) enqueueVMsOfPVC(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	pvc, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return
	}
	vms, err := c.vmIndex.ByIndex(vmPVCIndex, pvc.Namespace+"/"+pvc.Name)
	if err != nil {
		return
	}
	for _, vm := range vms {
		c.enqueue(vm)
	}
}

// unboundPVC reports whether a PVC of the VM's template exists and is not Bound (HasUnboundPVC: a
// missing PVC does not count).
func (c *VMController) unboundPVC(vm *v1.VirtualMachine) bool {
	for _, claim := range templatePVCs(vm) {
		pvc, err := c.pvcs.PersistentVolumeClaims(vm.Namespace).Get(claim)
		if err != nil {
			continue
		}
		if pvc.Status.Phase != corev1.ClaimBound {
			return true
		}
	}
	return false
}

func (c *VMController) enqueue(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		c.queue.Add(key)
	}
}

// enqueueVMOf queues the VM that owns a VMI, or the same-named VM of an orphan VMI (for adoption).
func (c *VMController) enqueueVMOf(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	if key, ok := ownerKey(obj, "VirtualMachine"); ok {
		c.queue.Add(key)
		return
	}
	if metav1.GetControllerOf(m) == nil {
		c.queue.Add(m.GetNamespace() + "/" + m.GetName())
	}
}

// Run processes the queue with workers goroutines until ctx ends.
func (c *VMController) Run(ctx context.Context, workers int) {
	runQueue(ctx, c.queue, workers, "vm", c.sync, c.log, c.metrics)
}

// VM event reasons are the VMI controller's (SuccessfulCreate, SuccessfulDelete, FailedCreate,
// FailedDelete) with KubeVirt's VM messages.

// sync reconciles one VM: it reads the VM, the expectations, the VMI and the PVCs from the caches once,
// with one clock reading, decides (decideRunStrategy), acts, and writes the status (vmStatus). It returns
// a delay after which the key must be looked at again (0: none).
func (c *VMController) sync(ctx context.Context, key string) (time.Duration, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return 0, nil
	}
	log := c.log.With("namespace", ns, "vm", name)
	cached, err := c.vms.VirtualMachines(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.exp.Forget(key)
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	vm := cached.DeepCopy()
	strategy, stratErr := vm.RunStrategy()
	now := c.now()

	// Expectations before the VMI cache (see Expectations): a VMI we created or deleted and whose event
	// arrives after this read is already in the cache read next.
	adds, dels := c.exp.Pending(key)
	vmi, err := c.ownedVMI(ctx, log, vm)
	if err != nil {
		return 0, err
	}
	unbound := c.unboundPVC(vm)
	in := vmStatusInput{strategy: strategy, vmi: vmi, createExpected: adds, deleteExpected: dels, unboundPVC: unbound, now: now, jitter: c.jitter}

	// Deletion: orphan keeps the VMI (GC strips its ownerRef), anything else stops it first.
	if vm.DeletionTimestamp != nil {
		return 0, c.syncDeletingVM(ctx, log, key, vm, in)
	}
	// The finalizer and the ABI defaults (firmware UUID and serial, MACs) are written once, in one patch
	// of just those fields (see patch.go). A VM without the finalizer is one this controller has not
	// written yet: kvirt's stand-in for KubeVirt's admission of a new VM (applyABIDefaults).
	isNew := !slices.Contains(vm.Finalizers, v1.VirtualMachineControllerFinalizer)
	ops := abiDefaultsOps(vm, isNew, uuid.NewString)
	if isNew {
		vm.Finalizers = append(vm.Finalizers, v1.VirtualMachineControllerFinalizer)
		ops = append(ops, setField("/metadata/finalizers", vm.Finalizers))
	}
	if len(ops) > 0 {
		upd, err := c.patchVM(ctx, vm, ops...)
		if err != nil {
			return 0, fmt.Errorf("add finalizer and firmware UUID/serial/MAC defaults: %w", err)
		}
		vm = upd
	}
	if gen, ok := generationBump(vm, vmi); ok {
		upd, err := patchVMI(ctx, c.kv, vmi, setField("/metadata/annotations/"+jsonPointerEscape(v1.VirtualMachineGenerationAnnotation), strconv.FormatInt(gen, 10)))
		if err != nil && !apierrors.IsNotFound(err) {
			return 0, fmt.Errorf("move the VMI's %s on to %d: %w", v1.VirtualMachineGenerationAnnotation, gen, err)
		}
		if err == nil {
			vmi, in.vmi = upd, upd
		}
	}

	var requeue time.Duration
	status := vm.Status.DeepCopy()
	if stratErr == nil {
		acts := decideRunStrategy(vm, strategy, vmi, now)
		if adds || dels {
			// A create or delete we issued is not in the cache yet: do nothing that depends on it.
			acts.create, acts.deleteVMI = false, false
		}
		switch {
		case acts.switchToAlways:
			if err := c.switchToAlways(ctx, vm); err != nil {
				return 0, err
			}
			return 0, nil // the update event brings us back with the new strategy
		case acts.recordFailureFirst:
			// vmStatus records the start failure; deleting waits for the next sync.
		case acts.appendStart:
			status.StateChangeRequests = append(status.StateChangeRequests, v1.VirtualMachineStateChangeRequest{Action: v1.StartRequest})
		case acts.deleteVMI:
			deleted, err := c.deleteVMI(ctx, key, vm, vmi)
			in.deleteExpected = in.deleteExpected || deleted
			if err != nil {
				in.syncErr = &syncError{err, ReasonFailedDelete}
			}
		case acts.create:
			if err := c.createVMI(ctx, key, vm, acts.startPaused); err != nil {
				in.syncErr = &syncError{err, ReasonFailedCreate}
			} else {
				in.createExpected = true
			}
		case !acts.waitUntil.IsZero():
			requeue = acts.waitUntil.Sub(now) + 100*time.Millisecond
		}
	} else {
		in.syncErr = &syncError{stratErr, "FailedRunStrategy"}
	}

	newStatus := vmStatus(vm, *status, in)
	if !equality.Semantic.DeepEqual(&vm.Status, &newStatus) {
		vm.Status = newStatus
		if _, err := c.kv.KubevirtV1().VirtualMachines(ns).UpdateStatus(ctx, vm, metav1.UpdateOptions{}); err != nil {
			return 0, fmt.Errorf("update status: %w", err)
		}
	}
	// Once the VM has seen a VMI going away, it no longer needs to hold it.
	if vmi != nil && vmi.DeletionTimestamp != nil && slices.Contains(vmi.Finalizers, v1.VirtualMachineControllerFinalizer) {
		if err := c.dropVMIFinalizer(ctx, vmi); err != nil {
			return 0, err
		}
	}
	if in.syncErr != nil {
		return 0, in.syncErr.err
	}
	if sf := newStatus.StartFailure; requeue == 0 && sf != nil && sf.RetryAfterTimestamp != nil && (vmi == nil || vmi.IsFinal()) {
		if d := sf.RetryAfterTimestamp.Sub(now); d > 0 {
			requeue = d + 100*time.Millisecond
		}
	}
	return requeue, nil
}

// ownedVMI returns the VMI the VM controls, adopting a same-named orphan (ClaimVirtualMachineInstanceByName).
func (c *VMController) ownedVMI(ctx context.Context, log *slog.Logger, vm *v1.VirtualMachine) (*v1.VirtualMachineInstance, error) {
	vmi, err := c.vmis.VirtualMachineInstances(vm.Namespace).Get(vm.Name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ref := metav1.GetControllerOf(vmi)
	if ref != nil {
		if ref.UID == vm.UID {
			return vmi, nil
		}
		return nil, nil // someone else's
	}
	if vm.DeletionTimestamp != nil || vmi.DeletionTimestamp != nil {
		return nil, nil
	}
	// Re-check with an uncached read that this VM is still the one we think (a VM re-created under the
	// same name must not be confused with its predecessor).
	fresh, err := c.kv.KubevirtV1().VirtualMachines(vm.Namespace).Get(ctx, vm.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("re-check VM before adopting: %w", err)
	}
	if fresh.UID != vm.UID || fresh.DeletionTimestamp != nil {
		return nil, fmt.Errorf("VM %s/%s changed (uid %s, now %s) before adopting its VMI", vm.Namespace, vm.Name, vm.UID, fresh.UID)
	}
	refs := append([]metav1.OwnerReference{}, vmi.OwnerReferences...)
	refs = append(refs, *metav1.NewControllerRef(vm, v1.VirtualMachineGroupVersionKind))
	patch := []map[string]any{
		{"op": "test", "path": "/metadata/uid", "value": vmi.UID},
		{"op": "test", "path": "/metadata/resourceVersion", "value": vmi.ResourceVersion},
		{"op": "add", "path": "/metadata/ownerReferences", "value": refs},
	}
	body, err := json.Marshal(patch)
	if err != nil {
		return nil, err
	}
	adopted, err := c.kv.KubevirtV1().VirtualMachineInstances(vm.Namespace).Patch(ctx, vmi.Name, types.JSONPatchType, body, metav1.PatchOptions{})
	if err != nil {
		return nil, fmt.Errorf("adopt VMI %s/%s: %w", vmi.Namespace, vmi.Name, err)
	}
	log.Info("adopted orphan VMI", "vmi", vmi.Name, "uid", vmi.UID)
	return adopted, nil
}

// syncDeletingVM stops the VMI of a VM being deleted (unless orphaned) and removes the VM finalizer once
// that is done. in is what sync read; its VMI is deleted only if no create or delete is outstanding.
func (c *VMController) syncDeletingVM(ctx context.Context, log *slog.Logger, key string, vm *v1.VirtualMachine, in vmStatusInput) error {
	vmi := in.vmi
	orphan := slices.Contains(vm.Finalizers, metav1.FinalizerOrphanDependents)
	if vmi != nil && !orphan {
		if vmi.DeletionTimestamp == nil && !in.createExpected && !in.deleteExpected {
			deleted, err := c.deleteVMI(ctx, key, vm, vmi)
			if err != nil {
				return err
			}
			in.deleteExpected = deleted
		}
		if vmi.DeletionTimestamp != nil && slices.Contains(vmi.Finalizers, v1.VirtualMachineControllerFinalizer) {
			if err := c.dropVMIFinalizer(ctx, vmi); err != nil {
				return err
			}
		}
	}
	if vmi != nil && orphan && slices.Contains(vmi.Finalizers, v1.VirtualMachineControllerFinalizer) {
		// The VMI outlives the VM: nobody would remove our finalizer later.
		if err := c.dropVMIFinalizer(ctx, vmi); err != nil {
			return err
		}
	}
	in.strategy, _ = vm.RunStrategy()
	if status := vmStatus(vm, vm.Status, in); !equality.Semantic.DeepEqual(&vm.Status, &status) {
		vm.Status = status
		upd, err := c.kv.KubevirtV1().VirtualMachines(vm.Namespace).UpdateStatus(ctx, vm, metav1.UpdateOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("update status: %w", err)
		}
		if err == nil {
			vm = upd
		}
	}
	if (vmi == nil || orphan) && slices.Contains(vm.Finalizers, v1.VirtualMachineControllerFinalizer) {
		vm.Finalizers = slices.DeleteFunc(vm.Finalizers, isString(v1.VirtualMachineControllerFinalizer))
		if _, err := c.patchVM(ctx, vm, setField("/metadata/finalizers", vm.Finalizers)); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("remove finalizer: %w", err)
		}
		log.Info("VM finalized", "orphan", orphan)
	}
	return nil
}

// patchVM applies ops to vm after testing its resourceVersion and returns the result.
func (c *VMController) patchVM(ctx context.Context, vm *v1.VirtualMachine, ops ...patchOp) (*v1.VirtualMachine, error) {
	body, err := jsonPatch(vm.ResourceVersion, ops...)
	if err != nil {
		return nil, err
	}
	return c.kv.KubevirtV1().VirtualMachines(vm.Namespace).Patch(ctx, vm.Name, types.JSONPatchType, body, metav1.PatchOptions{})
}

// jsonPointerEscape escapes a map key for a JSON pointer (RFC 6901).
func jsonPointerEscape(k string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(k)
}

// patchVMI applies ops to vmi after testing its resourceVersion and returns the result.
func patchVMI(ctx context.Context, kv kvclient.Interface, vmi *v1.VirtualMachineInstance, ops ...patchOp) (*v1.VirtualMachineInstance, error) {
	body, err := jsonPatch(vmi.ResourceVersion, ops...)
	if err != nil {
		return nil, err
	}
	return kv.KubevirtV1().VirtualMachineInstances(vmi.Namespace).Patch(ctx, vmi.Name, types.JSONPatchType, body, metav1.PatchOptions{})
}

func (c *VMController) dropVMIFinalizer(ctx context.Context, vmi *v1.VirtualMachineInstance) error {
	fin := slices.DeleteFunc(slices.Clone(vmi.Finalizers), isString(v1.VirtualMachineControllerFinalizer))
	_, err := patchVMI(ctx, c.kv, vmi, setField("/metadata/finalizers", fin))
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove VMI finalizer: %w", err)
	}
	return nil
}

func (c *VMController) switchToAlways(ctx context.Context, vm *v1.VirtualMachine) error {
	op := setField("/spec/runStrategy", v1.RunStrategyAlways)
	if vm.Spec.Running != nil {
		op = setField("/spec/running", true)
	}
	if _, err := c.patchVM(ctx, vm, op); err != nil {
		return fmt.Errorf("switch run strategy to Always for a start request: %w", err)
	}
	return nil
}

// newVMIFromTemplate renders the VMI a VM creates.
func newVMIFromTemplate(vm *v1.VirtualMachine, paused bool) *v1.VirtualMachineInstance {
	t := vm.Spec.Template
	vmi := &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{
			Name:            vm.Name,
			Namespace:       vm.Namespace,
			Labels:          map[string]string{},
			Annotations:     map[string]string{},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm, v1.VirtualMachineGroupVersionKind)},
			Finalizers:      []string{v1.VirtualMachineControllerFinalizer},
		},
	}
	if t != nil {
		for k, v := range t.ObjectMeta.Labels {
			vmi.Labels[k] = v
		}
		for k, v := range t.ObjectMeta.Annotations {
			vmi.Annotations[k] = v
		}
		vmi.Spec = *t.Spec.DeepCopy()
	}
	vmi.Labels[v1.VirtualMachineNameLabel] = v1.NameLabelValue(vm.Name)
	if t != nil {
		// What RestartRequired and status.observedGeneration compare (createVMI sets them from the stored
		// VM when it reads it).
		vmi.Annotations[v1.VirtualMachineGenerationAnnotation] = strconv.FormatInt(vm.Generation, 10)
		vmi.Annotations[TemplateHashAnnotation] = templateHash(&t.Spec)
	}
	if paused {
		s := v1.StartStrategyPaused
		vmi.Spec.StartStrategy = &s
	}
	return vmi
}

func (c *VMController) createVMI(ctx context.Context, key string, vm *v1.VirtualMachine, paused bool) error {
	if vm.Spec.Template == nil {
		c.recorder.Event(vm, corev1.EventTypeWarning, ReasonFailedCreate, "Error creating virtual machine instance: the VM has no template")
		return fmt.Errorf("VM %s has no spec.template", key)
	}
	vmi := newVMIFromTemplate(vm, paused)
	var body []byte
	if c.raw != nil {
		// The template as stored, with the fields our types do not model, so the VMI's spec is the
		// template's spec as in KubeVirt (an uncached read; the typed cache has lost those fields).
		rawVM, err := c.raw.Get().Namespace(vm.Namespace).Resource("virtualmachines").Name(vm.Name).Do(ctx).Raw()
		if err != nil {
			return fmt.Errorf("read VM %s for its template: %w", key, err)
		}
		if body, err = vmiFromRawTemplate(vmi, rawVM, vm.UID); err != nil {
			return fmt.Errorf("VM %s: %w", key, err)
		}
	}
	c.exp.ExpectCreations(key, 1)
	var created *v1.VirtualMachineInstance
	var err error
	if body != nil {
		created = &v1.VirtualMachineInstance{}
		err = c.raw.Post().Namespace(vm.Namespace).Resource("virtualmachineinstances").SetHeader("Content-Type", "application/json").Body(body).Do(ctx).Into(created)
	} else {
		created, err = c.kv.KubevirtV1().VirtualMachineInstances(vm.Namespace).Create(ctx, vmi, metav1.CreateOptions{})
	}
	if err != nil {
		c.exp.CreationObserved(key)
		c.recorder.Event(vm, corev1.EventTypeWarning, ReasonFailedCreate, fmt.Sprintf("Error creating virtual machine instance: Failed to create virtual machine instance %s: %v", vmi.Name, err))
		return fmt.Errorf("create VMI: %w", err)
	}
	c.recorder.Event(vm, corev1.EventTypeNormal, ReasonSuccessfulCreate, "Started the virtual machine by creating the new virtual machine instance "+created.Name)
	c.log.Info("created VMI", "namespace", vm.Namespace, "vm", vm.Name, "vmi", created.Name, "uid", created.UID, "paused", paused)
	return nil
}

// deleteVMI deletes vmi; deleted: the delete was accepted (its expectation is outstanding).
func (c *VMController) deleteVMI(ctx context.Context, key string, vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance) (deleted bool, err error) {
	uid, rv := vmi.UID, vmi.ResourceVersion
	c.exp.ExpectDeletion(key, uid)
	// The decision was made on this version of the VMI: if it changed since (the cache lagged), the
	// delete is refused (Conflict) and the VMI's update event brings the VM back to decide again. The
	// case this guards: a VM deleted with propagation Orphan whose orphan finalizer the garbage
	// collector has already removed, seen beside a cached VMI that still names it as owner although the
	// collector has released it — deleting would kill a VMI the user asked to keep.
	pre := &metav1.Preconditions{UID: &uid}
	if rv != "" {
		pre.ResourceVersion = &rv
	}
	err = c.kv.KubevirtV1().VirtualMachineInstances(vmi.Namespace).Delete(ctx, vmi.Name, metav1.DeleteOptions{Preconditions: pre})
	if err != nil {
		c.exp.DeletionObserved(key, uid)
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return false, nil
		}
		c.recorder.Event(vm, corev1.EventTypeWarning, ReasonFailedDelete, fmt.Sprintf("Error deleting virtual machine instance %s: %v", vmi.Name, err))
		return false, fmt.Errorf("delete VMI: %w", err)
	}
	c.recorder.Event(vm, corev1.EventTypeNormal, ReasonSuccessfulDelete, "Stopped the virtual machine by deleting the virtual machine instance "+string(uid))
	c.log.Info("deleted VMI", "namespace", vm.Namespace, "vm", vm.Name, "vmi", vmi.Name, "uid", uid)
	return true, nil
}
