// Package integration tests virt-controller against a real kube-apiserver, etcd and
// kube-controller-manager (garbage collection) started by tests/harness. No kubelet runs: the tests act
// as the kubelet (bind launcher pods, write their status, finish their deletion) and as the launcher
// (controllertest.FakeStatusSource, behind the same interface the control-API client implements).
package integration
