package controller

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// runQueue: a failed sync is retried, a requested delay brings the key back, and cancelling the context
// stops every worker.
func TestRunQueue(t *testing.T) {
	q := workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Millisecond, 10*time.Millisecond))
	var mu sync.Mutex
	calls := map[string]int{}
	done := make(chan struct{})
	var closeOnce sync.Once
	syncFn := func(_ context.Context, key string) (time.Duration, error) {
		mu.Lock()
		defer mu.Unlock()
		calls[key]++
		switch {
		case key == "fails" && calls[key] < 3:
			return 0, errors.New("transient")
		case key == "later" && calls[key] < 2:
			return 5 * time.Millisecond, nil
		}
		if calls["fails"] >= 3 && calls["later"] >= 2 && calls["once"] >= 1 {
			closeOnce.Do(func() { close(done) })
		}
		return 0, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	m := NewMetrics()
	go func() {
		runQueue(ctx, q, 2, "test", syncFn, slog.New(slog.NewTextHandler(io.Discard, nil)), m)
		close(stopped)
	}()
	q.Add("fails")
	q.Add("later")
	q.Add("once")
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("keys not retried/requeued as expected within 10s: %v", calls)
	}
	cancel()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("runQueue did not return within 10s of cancel")
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["once"] != 1 {
		t.Errorf("a clean key was synced %d times", calls["once"])
	}
}
