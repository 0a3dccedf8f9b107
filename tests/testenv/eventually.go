package testenv

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// pollInterval is how often Eventually asks its condition again.
const pollInterval = 20 * time.Millisecond

// Eventually waits until cond reports true, asking it every 20 ms for at most timeout, and fails the test
// (t.Fatalf) when the deadline passes, naming what it waited for and the last thing cond saw. cond's
// string says what it saw (shown only on failure; it may be empty).
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, seen := cond()
		if ok {
			return
		}
		last = seen
		if !time.Now().Before(deadline) {
			break
		}
		time.Sleep(pollInterval)
	}
	t.Fatalf("timed out after %v waiting for %s; last seen: %s", timeout, what, last)
}

// SyncBuffer is a bytes.Buffer safe for one writer and concurrent readers (a process's or a logger's
// output read by the test while it is written).
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
