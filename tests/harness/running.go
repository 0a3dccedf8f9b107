package harness

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RunningCluster returns an admin configuration for the cluster `just cluster-up` started (its
// kubeconfig is build/cluster/kubeconfig, or $KVIRT_KUBECONFIG) and the kubeconfig path, for
// end-to-end tests that drive kubectl and virtctl. It skips the test when no cluster answers, or
// fails under KVIRT_REQUIRE_CLUSTER=1, saying to run `just cluster-up`.
func RunningCluster(t testing.TB) (*rest.Config, string) {
	t.Helper()
	path := os.Getenv("KVIRT_KUBECONFIG")
	if path == "" {
		root, err := repoRoot()
		if err != nil {
			t.Fatalf("%v", err)
		}
		path = filepath.Join(root, "build", "cluster", "kubeconfig")
	}
	missing := func(format string, args ...any) {
		t.Helper()
		if ClusterRequired() {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		missing("no running cluster (%v): run `just cluster-up`", err)
		return nil, ""
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("%v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		missing("cluster of %s not ready (%v): run `just cluster-up`", path, err)
		return nil, ""
	}
	cfg.QPS, cfg.Burst = 200, 400
	return cfg, path
}
