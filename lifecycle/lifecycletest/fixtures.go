// Package lifecycletest holds the VM and VMI fixtures the tests of package lifecycle and of its callers
// (virtctl) build their cases from.
package lifecycletest

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/kvirt/kvirt/api/v1"
)

// VMIUID is the UID of the VMI VMI returns.
const VMIUID = types.UID("vmi-uid-1")

// VM is the VM "my-vm" in "ns" with run strategy rs ("running=true"/"running=false" set the deprecated
// spec.running instead).
func VM(rs v1.VirtualMachineRunStrategy) *v1.VirtualMachine {
	vm := &v1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Name: "my-vm", Namespace: "ns"},
		Spec:       v1.VirtualMachineSpec{Template: &v1.VirtualMachineInstanceTemplateSpec{}},
	}
	switch rs {
	case "running=true", "running=false":
		b := rs == "running=true"
		vm.Spec.Running = &b
	default:
		vm.Spec.RunStrategy = &rs
	}
	vm.Status.PrintableStatus = v1.VirtualMachineStatusStopped
	return vm
}

// VMI is the VMI of VM in phase.
func VMI(phase v1.VirtualMachineInstancePhase) *v1.VirtualMachineInstance {
	return &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "my-vm", Namespace: "ns", UID: VMIUID},
		Status:     v1.VirtualMachineInstanceStatus{Phase: phase},
	}
}
