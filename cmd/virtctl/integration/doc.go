// Package integration holds virtctl's tests against a real kube-apiserver (tests/harness) with kvirt's
// CRDs installed and kube-controller-manager's garbage collector running: every verb on every run
// strategy, --dry-run, racing requests, and the Services expose makes going with their owner. Without
// the kube binary (`just cluster-build`) they skip, or fail under KVIRT_REQUIRE_CLUSTER=1.
package integration
