package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of VirtualMachine and VirtualMachineInstance.
const GroupName = "kubevirt.io"

// SubresourceGroupName is the group serving the start/stop/restart/pause subresources.
const SubresourceGroupName = "subresources.kubevirt.io"

var (
	// GroupVersion is the version kvirt stores and prefers: kubevirt.io/v1.
	GroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1"}
	// SchemeGroupVersion is GroupVersion under the name client-go generators expect.
	SchemeGroupVersion = GroupVersion

	// VirtualMachineGroupVersionKind is the GVK of VirtualMachine.
	VirtualMachineGroupVersionKind = GroupVersion.WithKind("VirtualMachine")
	// VirtualMachineInstanceGroupVersionKind is the GVK of VirtualMachineInstance.
	VirtualMachineInstanceGroupVersionKind = GroupVersion.WithKind("VirtualMachineInstance")

	// VirtualMachineGroupVersionResource is the GVR of VirtualMachine (for dynamic clients).
	VirtualMachineGroupVersionResource = GroupVersion.WithResource("virtualmachines")
	// VirtualMachineInstanceGroupVersionResource is the GVR of VirtualMachineInstance.
	VirtualMachineInstanceGroupVersionResource = GroupVersion.WithResource("virtualmachineinstances")

	// SchemeBuilder registers the types of this package.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds VirtualMachine and VirtualMachineInstance (and lists) to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Resource turns an unqualified resource name into a group-qualified one.
func Resource(resource string) schema.GroupResource {
	return GroupVersion.WithResource(resource).GroupResource()
}

func addKnownTypes(scheme *runtime.Scheme) error {
	scheme.AddKnownTypes(GroupVersion,
		&VirtualMachine{}, &VirtualMachineList{},
		&VirtualMachineInstance{}, &VirtualMachineInstanceList{},
	)
	metav1.AddToGroupVersion(scheme, GroupVersion)
	return nil
}
