package app

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/kvirt/kvirt/api/v1"
)

const vmiUID = types.UID("vmi-uid-1")

// testVM is the VM "my-vm" in "ns" with run strategy rs ("running=true"/"running=false" set the
// deprecated spec.running instead).
func testVM(rs v1.VirtualMachineRunStrategy) *v1.VirtualMachine {
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

// testVMI is the VMI of testVM in phase.
func testVMI(phase v1.VirtualMachineInstancePhase) *v1.VirtualMachineInstance {
	return &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: "my-vm", Namespace: "ns", UID: vmiUID},
		Status:     v1.VirtualMachineInstanceStatus{Phase: phase},
	}
}
