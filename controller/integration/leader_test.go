package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/kvirt/kvirt/controller"
	"github.com/kvirt/kvirt/controller/controllertest"
	"github.com/kvirt/kvirt/tests/harness"
	"github.com/kvirt/kvirt/tests/testenv"
	"k8s.io/client-go/kubernetes"
)

// TestLeaderElectionFailover runs two controllers on one Lease: only one acts; when it stops, the other
// takes over and keeps managing VMs.
func TestLeaderElectionFailover(t *testing.T) {
	start(t) // CRDs and RBAC installed; its own controller holds the usual Lease, the replicas below another one
	cp := harness.Shared(t)
	kube, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	type replica struct {
		c      *controller.Controller
		cancel context.CancelFunc
		done   chan error
	}
	run := func(id string) *replica {
		c, err := controller.New(cp.Config, controller.Options{LauncherImage: "x", Status: controllertest.NewFakeStatusSource(), Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := &replica{c: c, cancel: cancel, done: make(chan error, 1)}
		go func() {
			r.done <- controller.RunWithLeaderElection(ctx, kube, controller.LeaderElection{Namespace: "kubevirt", Name: "failover-test", Identity: id}, log, func(lctx context.Context) {
				_ = c.Run(lctx)
			})
		}()
		t.Cleanup(func() {
			cancel()
			select {
			case <-r.done:
			case <-time.After(20 * time.Second):
				t.Errorf("replica %s did not stop", id)
			}
		})
		return r
	}
	a, b := run("a"), run("b")
	testenv.Eventually(t, "one leader", 60*time.Second, func() (bool, string) {
		return a.c.Ready() != b.c.Ready(), fmt.Sprintf("a ready %v, b ready %v", a.c.Ready(), b.c.Ready())
	})
	// Stay at exactly one leader for a while.
	for i := 0; i < 20; i++ {
		if a.c.Ready() == b.c.Ready() {
			t.Fatalf("a ready %v, b ready %v: want exactly one leader", a.c.Ready(), b.c.Ready())
		}
		time.Sleep(100 * time.Millisecond)
	}
	leader, standby := a, b
	if b.c.Ready() {
		leader, standby = b, a
	}
	leader.cancel()
	if err := <-leader.done; err != nil {
		t.Fatalf("leader stopped with %v, want nil (its context ended)", err)
	}
	leader.done <- nil // for the cleanup
	testenv.Eventually(t, "standby takes over", 60*time.Second, func() (bool, string) { return standby.c.Ready(), "" })
}
