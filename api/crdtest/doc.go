// Package crdtest checks the generated CRDs in deploy/crds without a cluster:
// they must pass the apiserver's own CRD validation (structural schema, CEL
// compilation and cost), and objects are validated against them with the
// apiserver's schema and CEL validators, so KubeVirt's messages are checked
// exactly as kube-apiserver would return them. Integration tests against a
// real apiserver live with the controller.
package crdtest
