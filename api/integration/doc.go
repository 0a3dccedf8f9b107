// Package integration checks deploy/crds and deploy/rbac against a real kube-apiserver (tests/harness):
// KubeVirt's validation messages from the CEL rules, printer columns, v1alpha3 with its deprecation
// warning, unknown fields kept, and that the RBAC roles grant what virt-controller and virtctl users do.
// Without the kube binary (`just cluster-build`) the tests skip, unless KVIRT_REQUIRE_CLUSTER=1.
package integration
