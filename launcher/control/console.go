package control

import (
	"io"
	"sync"
)

// ConsoleHub fans the guest's serial output out to any number of subscribers without ever blocking the
// writer (the serial device): a subscriber that falls more than its buffer behind loses the oldest bytes.
// The VMM's serial output writes into the hub; VM.Console implementations return hub.Subscribe().
type ConsoleHub struct {
	mu     sync.Mutex
	subs   map[*consoleSub]struct{}
	limit  int
	closed bool
}

// NewConsoleHub returns a hub whose subscribers buffer up to limit bytes each (default 1 MiB).
func NewConsoleHub(limit int) *ConsoleHub {
	if limit <= 0 {
		limit = 1 << 20
	}
	return &ConsoleHub{subs: map[*consoleSub]struct{}{}, limit: limit}
}

// Write copies p to every subscriber. It never blocks and never fails.
func (h *ConsoleHub) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		s.push(p, h.limit)
	}
	return len(p), nil
}

// Subscribe returns a reader of the output written from now on; Close it to unsubscribe.
func (h *ConsoleHub) Subscribe() io.ReadCloser {
	s := &consoleSub{hub: h}
	s.cond = sync.NewCond(&s.mu)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		s.closed = true
	} else {
		h.subs[s] = struct{}{}
	}
	return s
}

// Close ends every subscription (readers get io.EOF after draining).
func (h *ConsoleHub) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		s.close()
		delete(h.subs, s)
	}
	return nil
}

type consoleSub struct {
	hub    *ConsoleHub
	mu     sync.Mutex
	cond   *sync.Cond
	buf    []byte
	closed bool
}

func (s *consoleSub) push(p []byte, limit int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(s.buf, p...)
	if over := len(s.buf) - limit; over > 0 {
		s.buf = append(s.buf[:0], s.buf[over:]...)
	}
	s.cond.Broadcast()
}

func (s *consoleSub) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.cond.Broadcast()
}

func (s *consoleSub) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.buf) == 0 && !s.closed {
		s.cond.Wait()
	}
	if len(s.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

func (s *consoleSub) Close() error {
	s.hub.mu.Lock()
	delete(s.hub.subs, s)
	s.hub.mu.Unlock()
	s.close()
	return nil
}
