// Package v1alpha3 is kubevirt.io/v1alpha3, which KubeVirt still serves
// (deprecated) with exactly the v1 schema. The types are v1's; the CRDs serve
// both versions with conversion None, so no conversion code exists.
package v1alpha3

import (
	v1 "github.com/kvirt/kvirt/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Types are v1's.
type (
	VirtualMachine             = v1.VirtualMachine
	VirtualMachineList         = v1.VirtualMachineList
	VirtualMachineInstance     = v1.VirtualMachineInstance
	VirtualMachineInstanceList = v1.VirtualMachineInstanceList
)

var (
	// SchemeGroupVersion is kubevirt.io/v1alpha3.
	SchemeGroupVersion = schema.GroupVersion{Group: v1.GroupName, Version: "v1alpha3"}
	// SchemeBuilder registers the v1 types under v1alpha3.
	SchemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		s.AddKnownTypes(SchemeGroupVersion,
			&v1.VirtualMachine{}, &v1.VirtualMachineList{},
			&v1.VirtualMachineInstance{}, &v1.VirtualMachineInstanceList{})
		metav1.AddToGroupVersion(s, SchemeGroupVersion)
		return nil
	})
	// AddToScheme adds the v1alpha3 kinds to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// DeprecationWarning is what the apiserver returns for v1alpha3 requests.
const DeprecationWarning = "kubevirt.io/v1alpha3 is now deprecated and will be removed in a future release."
