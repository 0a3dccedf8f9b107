// Package controllertest holds what the virt-controller's tests share: builders of the VMs and VMIs they
// create, and FakeStatusSource, which plays the launchers (launcher pods do not run without a kubelet)
// behind the same controller.StatusSource interface as the control-API client. It is the counterpart of
// KubeVirt's pkg/virt-controller/watch/testing; nothing in it is compiled into virt-controller.
package controllertest

import (
	v1 "github.com/kvirt/kvirt/api/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VM returns a VirtualMachine named name (no namespace: the client's or the test's) with the given run
// strategy and a template of 64Mi guest memory and one masquerade interface on the pod network.
func VM(name string, strategy v1.VirtualMachineRunStrategy) *v1.VirtualMachine {
	return &v1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.VirtualMachineSpec{
			RunStrategy: &strategy,
			Template: &v1.VirtualMachineInstanceTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"kubevirt.io/vm": name}},
				Spec:       VMISpec(),
			},
		},
	}
}

// VMI returns a standalone VirtualMachineInstance named name (no namespace) with VMISpec.
func VMI(name string) *v1.VirtualMachineInstance {
	return &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: VMISpec()}
}

// VMISpec is the spec of VM's template and of VMI: 64Mi guest memory, one masquerade interface "default"
// on the pod network.
func VMISpec() v1.VirtualMachineInstanceSpec {
	mem := resource.MustParse("64Mi")
	return v1.VirtualMachineInstanceSpec{
		Domain: v1.DomainSpec{
			Memory:  &v1.Memory{Guest: &mem},
			Devices: v1.Devices{Interfaces: []v1.Interface{{Name: "default", Masquerade: &v1.InterfaceMasquerade{}}}},
		},
		Networks: []v1.Network{{Name: "default", Pod: &v1.PodNetwork{}}},
	}
}
