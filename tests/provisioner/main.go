// Command hostpath-provisioner is the dynamic volume provisioner of kvirt's local cluster (`just
// cluster-up`): Kubernetes' own external-provisioner controller library
// (sigs.k8s.io/sig-storage-lib-external-provisioner, which watches claims, creates and binds PVs, retries,
// and deletes released volumes) with a small storage back end on this machine, serving both volume modes:
//
//   - Filesystem: a directory <root>/<pv> (mode 0777), exposed as a `local` PersistentVolume;
//   - Block: a sparse file <root>/<pv>.img of the claim's size attached to a loop device (/dev/loopN, set
//     up with the kernel's loop ioctls), exposed as a `local` PersistentVolume of volumeMode Block.
//
// Every PV carries node affinity to the node it was made on (the scheduler's choice for
// WaitForFirstConsumer classes). Deleting a PV (reclaim policy Delete) removes its directory, or detaches
// the loop device and removes the file; `just cluster-down` detaches what is left (tests/harness/storage.go)
// and removes <root>.
//
// Why not an existing provisioner: the CSI host-path driver and node-driver-registrar (both modes) are
// refused by the Go module proxy (every version, 2026-12-07), and rancher/local-path-provisioner v0.0.30,
// the one version served, provisions Filesystem volumes only (its controller refuses Block claims).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	root := flag.String("root", "", "directory holding the volumes (created)")
	node := flag.String("node", "", "node name for volumes of Immediate classes (WaitForFirstConsumer uses the scheduler's choice)")
	name := flag.String("name", ProvisionerName, "provisioner name the StorageClass names")
	klog.InitFlags(nil)
	flag.Parse()
	if *root == "" || *kubeconfig == "" || *node == "" {
		fmt.Fprintln(os.Stderr, "hostpath-provisioner: --kubeconfig, --root and --node are required")
		os.Exit(2)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Fatalf("kubeconfig: %v", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		klog.Fatalf("client: %v", err)
	}
	if err := os.MkdirAll(*root, 0o755); err != nil {
		klog.Fatalf("root: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	p := &Provisioner{Root: *root, Node: *node}
	pc := controller.NewProvisionController(ctx, client, *name, p,
		controller.LeaderElection(false), controller.Threadiness(2))
	klog.Infof("provisioning %s volumes under %s on node %s", *name, *root, *node)
	pc.Run(ctx)
}
