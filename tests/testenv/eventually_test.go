package testenv

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message and ends the goroutine, as the real
// one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(f)
}

func TestEventually(t *testing.T) {
	calls := 0
	Eventually(t, "the third call", time.Second, func() (bool, string) { calls++; return calls == 3, "" })
	if calls != 3 {
		t.Fatalf("cond called %d times, want 3", calls)
	}

	f := &fatalRecorder{TB: t}
	func() {
		defer func() {
			if r := recover(); r != f {
				t.Fatalf("Eventually did not fail the test on timeout (recovered %v)", r)
			}
		}()
		Eventually(f, "never", 50*time.Millisecond, func() (bool, string) { return false, "still no" })
	}()
	if !strings.Contains(f.msg, "waiting for never") || !strings.Contains(f.msg, "last seen: still no") {
		t.Fatalf("failure message %q names neither what nor the last state", f.msg)
	}
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				_, _ = b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if n := len(b.String()); n != 400 {
		t.Fatalf("%d bytes, want 400", n)
	}
}
