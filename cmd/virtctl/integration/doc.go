// Package integration holds virtctl's tests against a real kube-apiserver (tests/harness) with kvirt's
// CRDs installed: every verb on every run strategy, --dry-run, and racing requests. One test starts its
// own control plane with kube-controller-manager, whose garbage collector must delete the Services
// expose makes together with their owner. Without the kube binary (`just cluster-build`) they skip, or
// fail under KVIRT_REQUIRE_CLUSTER=1.
package integration
