package controller

import (
	"context"
	"log/slog"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// syncFunc reconciles one key; a positive delay asks for the key again after it (0: not needed).
type syncFunc func(ctx context.Context, key string) (requeue time.Duration, err error)

// runQueue runs workers goroutines that take keys from queue and sync them until ctx ends (the queue is
// shut down then); it returns once every worker has stopped. A failed sync is retried with the queue's
// rate limit; a requested delay resets it. kind labels the metrics and logs ("vm", "vmi").
func runQueue(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string], workers int, kind string, sync syncFunc, log *slog.Logger, metrics *Metrics) {
	go func() { <-ctx.Done(); queue.ShutDown() }()
	done := make(chan struct{})
	for i := 0; i < workers; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for processNext(ctx, queue, kind, sync, log, metrics) {
			}
		}()
	}
	for i := 0; i < workers; i++ {
		<-done
	}
}

// processNext syncs one key; false once the queue is shut down.
func processNext(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string], kind string, sync syncFunc, log *slog.Logger, metrics *Metrics) bool {
	key, quit := queue.Get()
	if quit {
		return false
	}
	defer queue.Done(key)
	start := time.Now()
	requeue, err := sync(ctx, key)
	metrics.observe(kind, start, err)
	switch {
	case err != nil:
		log.Info("sync failed; retrying", kind, key, "err", err)
		queue.AddRateLimited(key)
	case requeue > 0:
		queue.Forget(key)
		queue.AddAfter(key, requeue)
	default:
		queue.Forget(key)
	}
	return true
}
