package testenv

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// Eventually polls cond until it reports true, and fails the test (t.Fatalf) when timeout passes first,
// naming what was awaited and the last explanation cond gave (the second result: what it saw instead,
// empty when there is nothing to add). Call it from the test's goroutine. The first poll is immediate; the
// pause between polls grows from 1 ms to 50 ms, so a condition that holds soon is seen soon.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := time.Millisecond
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if why != "" {
				t.Fatalf("%s: not within %v: %s", what, timeout, why)
			}
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(pause)
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// SyncBuffer is a bytes.Buffer that several goroutines may write and read, such as a child process's
// output read by the test while the process runs. The zero value is ready to use.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
