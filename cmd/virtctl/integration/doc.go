// Package integration holds virtctl's tests against a real kube-apiserver (tests/harness) with kvirt's
// CRDs installed: every verb on every run strategy, --dry-run, and racing requests. Without the kube
// binary (`just cluster-build`) they skip, or fail under KVIRT_REQUIRE_CLUSTER=1.
package integration
