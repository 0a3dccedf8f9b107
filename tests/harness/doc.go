// Package harness runs a real Kubernetes control plane (etcd, kube-apiserver and, when asked,
// kube-controller-manager) for integration tests, and a full single-node cluster for `just cluster-up`.
//
// The components come from one multi-call binary built from upstream sources by `just cluster-build`
// (tests/cluster). Every process of a test control plane listens on 127.0.0.1 only, on free ports, with a
// PKI generated for the run; nothing outside the run's directory is touched. (The node of Up also serves
// Services on its pod bridge: see serviceproxy.go.)
//
// One control plane per test:
//
//	cp := harness.StartControlPlane(t, harness.Options{})
//	client := cp.Clientset(t)
//
// One control plane shared by a test binary (booting one per test is wasteful):
//
//	func TestMain(m *testing.M) { os.Exit(harness.RunShared(m, harness.Options{ControllerManager: true})) }
//	func TestX(t *testing.T) { cp := harness.Shared(t); ns := cp.Namespace(t); ... }
//
// cp.Config is an admin rest.Config, cp.Kubeconfig a kubeconfig file for kubectl-style tools,
// cp.InstallCRDs(t, "deploy/crds/...yaml") installs CRDs and waits until they are Established.
// Options.ControllerManager adds kube-controller-manager (garbage collection, namespace deletion).
//
// End-to-end tests against the node of `just cluster-up` get its admin config from RunningCluster(t).
// Up, Down and Leftovers are that node's bring-up and tear-down (tests/harness/cmd/cluster). The node
// has a dynamic volume provisioner for both volume modes behind its default StorageClass (storage.go,
// tests/provisioner); Down detaches its loop devices and removes its volumes.
//
// Without the binary the tests skip, unless KVIRT_REQUIRE_CLUSTER=1 (CI), where they fail with a message
// saying to run `just cluster-build`.
package harness
