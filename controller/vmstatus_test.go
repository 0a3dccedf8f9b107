package controller

import (
	"errors"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// vmStatus, BEHAVIOUR.md §2: created, ready, Ready always present, Failure from the sync error and
// cleared by the next clean sync, other VMI conditions mirrored (and dropped once the VMI no longer has
// them), RestartRequired kept, WaitingForVolumeBinding from the PVC cache.
func TestVMStatus(t *testing.T) {
	pvcs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	now := time.Unix(1000, 0)
	c := &VMController{pvcs: corelisters.NewPersistentVolumeClaimLister(pvcs)}
	status := func(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance, syncErr *syncError) *v1.VirtualMachineStatus {
		st := vmStatus(vm, vm.Status, vmStatusInput{strategy: v1.RunStrategyAlways, vmi: vmi, unboundPVC: c.unboundPVC(vm), syncErr: syncErr, now: now, jitter: func(int64) int64 { return 0 }})
		return &st
	}
	vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "vm", Namespace: "ns", Generation: 3}}
	vm.Status.Conditions = []v1.VirtualMachineCondition{{Type: v1.VirtualMachineRestartRequired, Status: corev1.ConditionTrue}}
	vmi := vmiIn(v1.Running)
	vmi.Annotations = map[string]string{v1.VirtualMachineGenerationAnnotation: "2"} // no template hash: RestartRequired kept
	vmi.Status.Conditions = []v1.VirtualMachineInstanceCondition{
		{Type: v1.VirtualMachineInstanceReady, Status: corev1.ConditionTrue},
		{Type: v1.VirtualMachineInstancePaused, Status: corev1.ConditionTrue, Reason: v1.PausedByUserReason},
		{Type: v1.VirtualMachineInstancePodScheduled, Status: corev1.ConditionTrue},
	}
	types := func(st *v1.VirtualMachineStatus) map[v1.VirtualMachineConditionType]corev1.ConditionStatus {
		m := map[v1.VirtualMachineConditionType]corev1.ConditionStatus{}
		for _, c := range st.Conditions {
			m[c.Type] = c.Status
		}
		return m
	}

	st := status(vm, vmi, &syncError{errors.New("boom"), ReasonFailedCreate})
	got := types(st)
	if !st.Created || !st.Ready || st.PrintableStatus != v1.VirtualMachineStatusPaused || st.RunStrategy != v1.RunStrategyAlways ||
		st.ObservedGeneration != 2 || st.DesiredGeneration != 3 {
		t.Fatalf("status %+v", st)
	}
	for _, want := range []v1.VirtualMachineConditionType{v1.VirtualMachineReady, v1.VirtualMachineFailure, "Paused", "PodScheduled", v1.VirtualMachineRestartRequired} {
		if _, ok := got[want]; !ok {
			t.Errorf("condition %s missing: %v", want, got)
		}
	}
	if f := st.Condition(v1.VirtualMachineFailure); f == nil || f.Reason != ReasonFailedCreate || f.Message != "boom" {
		t.Errorf("Failure condition %+v", f)
	}

	// Next sync: clean, and the VMI lost its Paused condition.
	vm.Status = *st
	vmi.Status.Conditions = vmi.Status.Conditions[:1]
	st = status(vm, vmi, nil)
	got = types(st)
	if _, ok := got[v1.VirtualMachineFailure]; ok {
		t.Errorf("Failure not cleared by a clean sync: %v", got)
	}
	if _, ok := got["Paused"]; ok {
		t.Errorf("Paused still mirrored after the VMI dropped it: %v", got)
	}
	if st.PrintableStatus != v1.VirtualMachineStatusRunning {
		t.Errorf("printableStatus %s", st.PrintableStatus)
	}

	// No VMI: Ready False/VMINotExists; an unbound template PVC shows WaitingForVolumeBinding (Always).
	vm.Spec.Template = &v1.VirtualMachineInstanceTemplateSpec{}
	vm.Spec.Template.Spec.Volumes = []v1.Volume{{Name: "d", PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "disk"}}}
	if err := pvcs.Add(&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "disk", Namespace: "ns"}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending}}); err != nil {
		t.Fatal(err)
	}
	vm.Status = *st
	st = status(vm, nil, nil)
	if r := st.Condition(v1.VirtualMachineReady); st.Created || st.Ready || r == nil || r.Reason != v1.VMINotExistsReason {
		t.Errorf("without a VMI: %+v", st)
	}
	if st.PrintableStatus != v1.VirtualMachineStatusWaitingForVolumeBinding {
		t.Errorf("unbound PVC: printableStatus %s", st.PrintableStatus)
	}
	if err := pvcs.Update(&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "disk", Namespace: "ns"}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}}); err != nil {
		t.Fatal(err)
	}
	st = status(vm, nil, nil)
	if st.PrintableStatus != v1.VirtualMachineStatusStopped {
		t.Errorf("bound PVC, no VMI, no create expected: printableStatus %s", st.PrintableStatus)
	}
}

// BEHAVIOUR.md §2 RestartRequired and generations (syncRestartRequired, syncGenerationInfo,
// conditionallyBumpGenerationAnnotationOnVmi): a VMI records the VM generation and template it was created
// from; a template change shows RestartRequired=True and observedGeneration behind desiredGeneration until
// a new VMI runs the new template.
func TestRestartRequired(t *testing.T) {
	newVM := func(gen int64, memory string) *v1.VirtualMachine {
		vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "vm", Namespace: "ns", Generation: gen}}
		vm.Spec.Template = &v1.VirtualMachineInstanceTemplateSpec{}
		vm.Spec.Template.Spec.Domain.Memory = &v1.Memory{Guest: ptrQuantity(memory)}
		return vm
	}
	vmiFrom := func(vm *v1.VirtualMachine, phase v1.VirtualMachineInstancePhase) *v1.VirtualMachineInstance {
		vmi := newVMIFromTemplate(vm, false)
		vmi.Status.Phase = phase
		return vmi
	}
	at := metav1.NewTime(time.Unix(500, 0))
	rrTrue := v1.VirtualMachineCondition{Type: v1.VirtualMachineRestartRequired, Status: corev1.ConditionTrue, Message: restartRequiredMessage, LastTransitionTime: at}
	running := vmiFrom(newVM(4, "64Mi"), v1.Running)
	deleting := running.DeepCopy()
	deleting.DeletionTimestamp = &at
	foreign := running.DeepCopy()
	delete(foreign.Annotations, TemplateHashAnnotation)
	delete(foreign.Annotations, v1.VirtualMachineGenerationAnnotation)
	for _, tc := range []struct {
		name           string
		vm             *v1.VirtualMachine
		vmi            *v1.VirtualMachineInstance
		old            *v1.VirtualMachineCondition
		createExpected bool
		wantRR         bool
		observed       int64 // status.observedGeneration (desired is the VM's generation when a VMI says)
		bump           int64 // 0: none
	}{
		{"template unchanged/no condition, generations equal", newVM(4, "64Mi"), running, nil, false, false, 4, 0},
		{"template changed/True, observed behind desired", newVM(5, "128Mi"), running, nil, false, true, 4, 0},
		{"template changed, already True/transition time kept", newVM(6, "128Mi"), running, &rrTrue, false, true, 4, 0},
		{"other spec change (run strategy)/generation moved on", newVM(5, "64Mi"), running, nil, false, false, 4, 5},
		{"template changed back/condition removed", newVM(6, "64Mi"), running, &rrTrue, false, false, 4, 6},
		{"VMI being deleted, template changed/True, no bump", newVM(5, "128Mi"), deleting, nil, false, true, 4, 0},
		{"VMI being deleted, run strategy changed/no bump", newVM(5, "64Mi"), deleting, nil, false, false, 4, 0},
		{"VMI gone/condition kept", newVM(5, "128Mi"), nil, &rrTrue, false, true, 1, 0},
		{"restart: the new VMI is being created/condition dropped", newVM(5, "128Mi"), nil, &rrTrue, true, false, 1, 0},
		{"VMI not created from this VM's template/condition kept, nothing known", newVM(5, "128Mi"), foreign, &rrTrue, false, true, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := tc.vm.DeepCopy()
			vm.Status.ObservedGeneration, vm.Status.DesiredGeneration = 1, 1
			if tc.old != nil {
				vm.Status.Conditions = []v1.VirtualMachineCondition{*tc.old}
			}
			st := vmStatus(vm, vm.Status, vmStatusInput{strategy: v1.RunStrategyAlways, vmi: tc.vmi, createExpected: tc.createExpected,
				now: time.Unix(1000, 0), jitter: func(int64) int64 { return 0 }})
			rr := st.Condition(v1.VirtualMachineRestartRequired)
			if (rr != nil) != tc.wantRR {
				t.Fatalf("RestartRequired %+v, want present %v", rr, tc.wantRR)
			}
			if rr != nil && (rr.Status != corev1.ConditionTrue || rr.Message != restartRequiredMessage || rr.Reason != "") {
				t.Fatalf("RestartRequired %+v", rr)
			}
			if rr != nil && tc.old != nil && !rr.LastTransitionTime.Equal(&tc.old.LastTransitionTime) {
				t.Fatalf("transition time %v, want the old one kept", rr.LastTransitionTime)
			}
			wantDesired := int64(1)
			if tc.observed != 1 {
				wantDesired = vm.Generation
			}
			if st.ObservedGeneration != tc.observed || st.DesiredGeneration != wantDesired {
				t.Fatalf("observedGeneration %d desiredGeneration %d, want %d %d", st.ObservedGeneration, st.DesiredGeneration, tc.observed, wantDesired)
			}
			if g, ok := generationBump(vm, tc.vmi); (tc.bump != 0) != ok || g != tc.bump {
				t.Fatalf("generationBump %d %v, want %d", g, ok, tc.bump)
			}
		})
	}
}

func ptrQuantity(s string) *resource.Quantity { q := resource.MustParse(s); return &q }
