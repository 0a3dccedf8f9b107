// Package v1 holds kvirt's subset of the kubevirt.io/v1 API: VirtualMachine and
// VirtualMachineInstance with KubeVirt's Go and JSON field names, the constants
// KubeVirt uses for phases, statuses, conditions, labels and finalizers, and the
// defaulting and validation both the controller and the launcher apply.
//
// The CRDs in deploy/crds are generated from these types (`just generate`;
// `just verify-generated` fails when they are stale). Decisions:
//
//   - Unknown fields. Spec objects are marked PreserveUnknownFields: the CRD
//     validates the fields kvirt models and keeps the others, so KubeVirt
//     manifests (architecture, evictionStrategy, features, dataVolumeTemplates,
//     ...) pass kubectl's default strict field validation instead of failing
//     or being pruned silently. Typed clients drop such fields when decoding,
//     so nothing may Update a VM or VMI from a typed object (the controller
//     writes JSON patches of just its fields); UnknownFields lists them by
//     path from the raw manifest, so whoever acts on a spec can report what
//     it ignores. Status is pruned: kvirt is its only writer.
//   - Status subresources on both CRDs (KubeVirt has none on VMIs): the VMI
//     controller is the only status writer, and users' kubectl apply/edit of
//     a VMI can then never overwrite its phase or conditions.
//   - Validation the apiserver must enforce is CEL in the CRDs with KubeVirt's
//     messages (run strategy, VMI memory). kvirt runs no admission webhook;
//     KubeVirt's spec.running deprecation warning comes from a
//     ValidatingAdmissionPolicy in Warn mode (deploy/crds). The Validate*
//     functions here carry the rest of KubeVirt's webhook checks for the
//     controller and the launcher, judging a defaulted copy as the webhooks do.
//   - There is no mutating webhook. The apiserver applies the CRDs' defaults
//     (domain.machine: q35, persisted as KubeVirt's webhooks persist it); the
//     VM controller writes a new VM's firmware UUID and serial into its
//     template (controller/abi.go); whoever needs a complete VMI spec applies
//     SetDefaults_VirtualMachineInstance(Spec) in memory.
//   - Quantities in the CRDs accept at most a 3-digit exponent and 64
//     characters: apimachinery's ParseQuantity takes minutes on values like
//     "1e-999999999", which would stall every typed client decoding the object.
//   - kubevirt.io/v1alpha3 is served (deprecated, with KubeVirt's warning) with
//     the v1 schema and conversion None; v1 is stored.
//
// +kubebuilder:object:generate=true
// +groupName=kubevirt.io
package v1
