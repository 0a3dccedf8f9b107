package controller

import (
	"fmt"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestFakeStartStrategyPaused: a VM whose template has startStrategy Paused gets a VMI with it; the
// launcher's first report is already Running + paused (the guest has not run yet), and KubeVirt's status
// follows as for `virtctl pause`: VMI Running with Paused=True (PausedByUser), not Ready, VM printable
// Paused; unpausing makes it Running and Ready.
func TestFakeStartStrategyPaused(t *testing.T) {
	e := startFake(t)
	vm := testVM("sp", v1.RunStrategyAlways)
	paused := v1.StartStrategyPaused
	vm.Spec.Template.Spec.StartStrategy = &paused
	e.createVM(t, vm)
	eventually(t, "VMI Scheduling", 10*time.Second, phaseIs(e, "sp", v1.Scheduling))
	vmi := e.vmi("sp")
	if !vmi.ShouldStartPaused() {
		t.Fatalf("VMI startStrategy %v, want Paused from the template", vmi.Spec.StartStrategy)
	}
	e.setPodRunning(t, e.pods(t, vmi)[0], true)
	eventually(t, "a launcher watch", 5*time.Second, func() (bool, string) { return e.status.Watching("default", "sp") == 1, "" })

	e.status.Set("default", "sp", LauncherState{Phase: GuestRunning, Paused: true})
	eventually(t, "VM Paused", 5*time.Second, printableIs(e, t, "sp", v1.VirtualMachineStatusPaused))
	vmi = e.vmi("sp")
	if vmi.Status.Phase != v1.Running {
		t.Fatalf("VMI phase %q, want Running", vmi.Status.Phase)
	}
	if c := vmi.Status.Condition(v1.VirtualMachineInstancePaused); c == nil || c.Status != corev1.ConditionTrue || c.Reason != v1.PausedByUserReason || c.Message != v1.PausedByUserMessage {
		t.Fatalf("Paused condition %+v, want True/PausedByUser", c)
	}
	if vmi.Status.HasCondition(v1.VirtualMachineInstanceReady, corev1.ConditionTrue) {
		t.Fatal("a VMI that started paused must not be Ready")
	}

	// virtctl unpause → the launcher reports running.
	e.status.Set("default", "sp", LauncherState{Phase: GuestRunning})
	eventually(t, "VM Running and Ready", 5*time.Second, func() (bool, string) {
		vm := e.vm(t, "sp")
		return vm.Status.PrintableStatus == v1.VirtualMachineStatusRunning && vm.Status.Ready, fmt.Sprintf("%+v", vm.Status)
	})
	vmi = e.vmi("sp")
	if vmi.Status.HasCondition(v1.VirtualMachineInstancePaused, corev1.ConditionTrue) {
		t.Fatalf("Paused condition left after unpause: %+v", vmi.Status.Conditions)
	}
}
