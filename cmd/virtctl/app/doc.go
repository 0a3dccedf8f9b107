// Package app is virtctl: the command-line client users drive kvirt VMs with, with KubeVirt's verbs,
// flags and messages (docs: docs/virtctl.md).
//
// virtctl performs what KubeVirt's subresource handlers do, with the user's own credentials, through
// package lifecycle (the code kvirt's virt-api serves too):
//   - start/stop/restart read the VM and its VMI, decide (lifecycle.StartPlan, StopPlan, RestartPlan —
//     pure functions) and apply JSON patches guarded by "test" operations to spec.runStrategy/spec.running or
//     to status.stateChangeRequests through the /status subresource, so concurrent requests conflict
//     instead of overwriting each other;
//   - pause/unpause check the VMI's state, then run `virt-launcher pause|unpause` in the VMI's launcher
//     pod through pod exec; console runs `virt-launcher console` there with a raw local terminal;
//   - expose creates a Service selecting the launcher pod, owned by the VM or VMI so it goes with it;
//     rename re-creates a stopped VM under a new name; version prints the client and server versions;
//     completion comes from cobra.
//
// Kubeconfig handling is kubectl's (k8s.io/cli-runtime ConfigFlags). The same binary works as the
// kubectl plugin `kubectl-virt`; cmd/virtctl and cmd/kubectl-virt are thin mains around Main.
package app
