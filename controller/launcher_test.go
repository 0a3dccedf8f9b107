package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvirt/kvirt/tests/testenv"
)

// flakySource fails its first calls, then reports Running until cancelled.
type flakySource struct {
	calls, open atomic.Int32
	failFirst   int32
}

func (f *flakySource) Watch(ctx context.Context, ep LauncherEndpoint, report func(LauncherState)) error {
	if f.calls.Add(1) <= f.failFirst {
		return errors.New("connection refused")
	}
	f.open.Add(1)
	defer f.open.Add(-1)
	report(LauncherState{Phase: GuestRunning, Message: ep.PodName})
	<-ctx.Done()
	return ctx.Err()
}

func TestLauncherWatchers(t *testing.T) {
	src := &flakySource{failFirst: 2}
	var mu sync.Mutex
	notified := map[string]int{}
	w := newLauncherWatchers(src, func(k string) { mu.Lock(); notified[k]++; mu.Unlock() }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	w.backoff = 10 * time.Millisecond
	ep := LauncherEndpoint{Namespace: "ns", VMIName: "a", PodName: "pod1", PodIP: "10.0.0.1"}
	w.Ensure("ns/a", ep)
	w.Ensure("ns/a", ep) // idempotent
	testenv.Eventually(t, "state after retries", 5*time.Second, func() (bool, string) {
		s, ok := w.State("ns/a", "pod1")
		return ok && s.Phase == GuestRunning, ""
	})
	if _, ok := w.State("ns/a", "other-pod"); ok {
		t.Fatal("a state for another pod")
	}
	// A new pod replaces the watcher; the old watch ends.
	ep2 := ep
	ep2.PodName = "pod2"
	w.Ensure("ns/a", ep2)
	testenv.Eventually(t, "state of the new pod", 5*time.Second, func() (bool, string) {
		s, ok := w.State("ns/a", "pod2")
		return ok && s.Message == "pod2" && src.open.Load() == 1, ""
	})
	w.Ensure("ns/b", LauncherEndpoint{Namespace: "ns", VMIName: "b", PodName: "pod3"})
	// open counts a watch before its first report reaches notify: wait for both.
	testenv.Eventually(t, "two watches", 5*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return src.open.Load() == 2 && notified["ns/b"] >= 1, fmt.Sprintf("%d open, notified %v", src.open.Load(), notified)
	})
	w.Stop("ns/a")
	testenv.Eventually(t, "one watch", 5*time.Second, func() (bool, string) { return src.open.Load() == 1, "" })
	w.StopAll()
	if n := src.open.Load(); n != 0 || w.Len() != 0 {
		t.Fatalf("%d watches open, %d watchers after StopAll", n, w.Len())
	}
	w.Ensure("ns/c", ep) // after StopAll: ignored
	if w.Len() != 0 {
		t.Fatal("a watcher started after StopAll")
	}
	mu.Lock()
	defer mu.Unlock()
	if notified["ns/a"] < 2 || notified["ns/b"] < 1 {
		t.Fatalf("notifications %v", notified)
	}
}

// While a launcher is not reachable yet (the pod is bound but its sandbox or the launcher's listener is not
// up), the watcher retries at its base delay instead of doubling: twelve failures at 10 ms cost ~0.1 s,
// not the ~20 s of a doubling schedule capped at maxWatchRetry.
func TestLauncherWatchersRetryFastWhileStarting(t *testing.T) {
	src := &flakySource{failFirst: 12}
	w := newLauncherWatchers(src, func(string) {}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	w.backoff = 10 * time.Millisecond
	defer w.StopAll()
	start := time.Now()
	w.Ensure("ns/a", LauncherEndpoint{Namespace: "ns", VMIName: "a", PodName: "pod1"})
	testenv.Eventually(t, "state after 12 failed attempts", 3*time.Second, func() (bool, string) {
		s, ok := w.State("ns/a", "pod1")
		return ok && s.Phase == GuestRunning, ""
	})
	if n := src.calls.Load(); n != 13 {
		t.Fatalf("%d attempts, want 13", n)
	}
	t.Logf("connected after %v", time.Since(start))
}
