// Command service-proxy gives Services their meaning on the node of `just cluster-up` without kube-proxy
// (harness.ServeServices): ClusterIPs and node ports are served in userspace on this machine, and the
// apiserver on 127.0.0.1 is also reachable from pods at the bridge address. cluster-up starts it
// (run/service-proxy.pid, log run/service-proxy.log); cluster-down stops it.
//
//	service-proxy -kubeconfig build/cluster/pki/service-proxy.kubeconfig [-apiserver 127.0.0.1:6443]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kvirt/kvirt/tests/harness"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the proxy's user (required)")
	apiserver := flag.String("apiserver", fmt.Sprintf("127.0.0.1:%d", harness.APIServerPort), "where the bridge listener forwards API connections")
	flag.Parse()
	if err := run(*kubeconfig, *apiserver); err != nil {
		fmt.Fprintf(os.Stderr, "service-proxy: %v\n", err)
		os.Exit(1)
	}
}

func run(kubeconfig, apiserver string) error {
	if kubeconfig == "" {
		return fmt.Errorf("-kubeconfig is required (cluster-up writes build/cluster/pki/service-proxy.kubeconfig)")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return harness.ServeServices(ctx, client, apiserver, os.Stdout)
}
