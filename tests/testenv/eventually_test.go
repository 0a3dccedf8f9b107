package testenv

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// fatalTB records Fatalf and ends its goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls Eventually on a fatalTB in its own goroutine (Fatalf ends it) and returns the failure, if any.
func run(timeout time.Duration, cond func() (bool, string)) string {
	tb := &fatalTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(tb, "the thing", timeout, cond)
	}()
	<-done
	return tb.msg
}

func TestEventuallyReturnsOnceTheConditionHolds(t *testing.T) {
	polls := 0
	if msg := run(time.Minute, func() (bool, string) { polls++; return polls == 3, "not yet" }); msg != "" {
		t.Fatalf("failed: %s", msg)
	}
	if polls != 3 {
		t.Fatalf("%d polls, want 3 (it must stop polling once the condition holds)", polls)
	}
}

func TestEventuallyFailsAfterTheTimeoutWithTheLastExplanation(t *testing.T) {
	polls := 0
	start := time.Now()
	msg := run(20*time.Millisecond, func() (bool, string) { polls++; return false, fmt.Sprintf("poll %d", polls) })
	if time.Since(start) < 20*time.Millisecond {
		t.Errorf("gave up after %v, before the 20ms timeout", time.Since(start))
	}
	if want := fmt.Sprintf("the thing: not within 20ms: poll %d", polls); msg != want {
		t.Fatalf("failure %q, want %q", msg, want)
	}
	if msg := run(time.Millisecond, func() (bool, string) { return false, "" }); msg != "the thing: not within 1ms" {
		t.Fatalf("failure without explanation %q", msg)
	}
}

func TestSyncBufferConcurrentWrites(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := b.String(); got != strings.Repeat("x", 800) {
		t.Fatalf("%d bytes, want 800", len(got))
	}
}
