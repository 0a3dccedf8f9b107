// Package app is virt-api: KubeVirt's subresources.kubevirt.io/v1 API, served by an aggregated API
// server built on k8s.io/apiserver, so KubeVirt's virtctl, kubevirt.io/client-go's kubecli and other
// KubeVirt clients drive kvirt unmodified.
//
//   - Requests reach it through the kube-apiserver's aggregator (APIService v1.subresources.kubevirt.io).
//     The apiserver authenticates the user and authorises the request (RBAC: update on
//     virtualmachines/start, virtualmachineinstances/pause, … in group subresources.kubevirt.io, as
//     KubeVirt's kubevirt.io:admin/edit roles grant); virt-api authenticates the aggregator's front-proxy
//     headers and authorises again with a SubjectAccessReview (delegated authentication and
//     authorization), then acts with its own service account.
//   - Paths, bodies (StartOptions, StopOptions, RestartOptions, PauseOptions), status codes and messages
//     are KubeVirt's (pkg/virt-api/rest): PUT …/virtualmachines/N/start|stop|restart → 202,
//     PUT …/virtualmachineinstances/N/pause|unpause → 200, errors as a metav1.Status. The decisions and
//     the writes are package lifecycle's, the same code kvirt's virtctl runs.
//   - Pause and unpause run `virt-launcher pause|unpause` in the VMI's launcher pod through pod exec
//     (KubeVirt asks the node's virt-handler; kvirt has none).
//   - GET version is kvirt's version (package version); GET healthz reports whether virt-api reaches the
//     apiserver, with the apiserver's version, as KubeVirt's does.
//   - Serving certificate: created at start-up into a Secret all replicas share, renewed before it
//     ends, its CA written into the APIService's caBundle (certs.go). No manual step.
//
// Not served yet: console, vnc, portforward (websockets), softreboot, reset, migrate, volume hotplug,
// guest agent queries, expand-spec, and the v1alpha3 version of the group.
package app
