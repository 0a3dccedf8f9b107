// Package integration holds virt-api's tests against a real kube-apiserver (tests/harness) with kvirt's
// CRDs and deploy/virt-api's RBAC and APIService: virt-api runs in the test process as its service account
// (impersonated), registered behind the APIService, and every path is called through the apiserver's
// aggregator with a REST client built as KubeVirt's kubecli builds it. Without the kube binary (`just
// cluster-build`) the tests skip, or fail under KVIRT_REQUIRE_CLUSTER=1.
package integration
