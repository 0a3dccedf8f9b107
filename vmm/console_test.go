package vmm

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// console collects guest output and lets tests wait for markers.
type console struct {
	mu   sync.Mutex
	buf  strings.Builder
	cond chan struct{}
	t    testing.TB
	echo bool
	line []byte
}

func newConsole(t testing.TB) *console {
	return &console{cond: make(chan struct{}, 1), t: t, echo: testing.Verbose()}
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.buf.Write(p)
	if c.echo {
		for _, b := range p {
			if b == '\n' {
				c.t.Logf("guest: %s", strings.TrimRight(string(c.line), "\r"))
				c.line = c.line[:0]
			} else {
				c.line = append(c.line, b)
			}
		}
	}
	c.mu.Unlock()
	select {
	case c.cond <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// expect waits until the output contains marker n times (n>=1).
func (c *console) expectN(marker string, n int, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if strings.Count(c.String(), marker) >= n {
			return true
		}
		select {
		case <-c.cond:
		case <-deadline.C:
			return false
		}
	}
}

// waitFor waits until ok(output) holds.
func (c *console) waitFor(ok func(string) bool, timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if ok(c.String()) {
			return true
		}
		select {
		case <-c.cond:
		case <-deadline.C:
			return false
		}
	}
}

func (c *console) expect(t testing.TB, marker string, timeout time.Duration) {
	t.Helper()
	if !c.expectN(marker, 1, timeout) {
		t.Fatalf("no %q on the console within %v; output so far:\n%s", marker, timeout, tail(c.String()))
	}
}

func tail(s string) string {
	if len(s) > 3000 {
		return "…" + s[len(s)-3000:]
	}
	return s
}
