package controller

import (
	"errors"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
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
	if !st.Created || !st.Ready || st.PrintableStatus != v1.VirtualMachineStatusPaused || st.RunStrategy != v1.RunStrategyAlways || st.ObservedGeneration != 3 {
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
