// Package v1 holds kvirt's subset of the kubevirt.io/v1 API: VirtualMachine and
// VirtualMachineInstance with KubeVirt's Go and JSON field names, the constants
// KubeVirt uses for phases, statuses, conditions, labels and finalizers, and the
// defaulting and validation both the controller and the launcher apply.
//
// The CRDs in deploy/crds are generated from these types (`just generate`).
// Unknown fields inside spec objects are preserved by the CRD schema rather than
// pruned, so KubeVirt manifests using features kvirt does not model are accepted
// and stored; UnknownFields reports them by path so the controller and launcher
// can say what they ignore instead of silently dropping it.
//
// +kubebuilder:object:generate=true
// +groupName=kubevirt.io
package v1
