package control

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// serveLimited serves a fresh Server with lim on a loopback TCP listener and returns its address.
func serveLimited(t *testing.T, lim Limits) string {
	t.Helper()
	srv := &Server{VM: newFakeVM(), Board: NewBoard(Status{Phase: Running}), Token: "s3cret", Limits: lim}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l, false) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return l.Addr().String()
}

// rawRequest sends one GET /v1/status on conn (with token, if any, and extra header lines) and reads the
// answer.
func rawRequest(conn net.Conn, br *bufio.Reader, token string, extra ...string) (*http.Response, error) {
	req := "GET /v1/status HTTP/1.1\r\nHost: launcher\r\n"
	if token != "" {
		req += "Authorization: Bearer " + token + "\r\n"
	}
	for _, h := range extra {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// closedByServer reports whether the server closes conn within d (a read returns EOF or a reset).
func closedByServer(conn net.Conn, br *bufio.Reader, d time.Duration) error {
	conn.SetReadDeadline(time.Now().Add(d))
	_, err := br.ReadByte()
	switch {
	case err == nil:
		return errors.New("the server sent more bytes")
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("still open after %v", d)
	}
	return nil // EOF or connection reset: closed
}

// Review finding F2: thousands of unauthenticated keep-alive connections, one 401 each, all stayed open.
// A connection that fails to authenticate is now closed right after its 401.
func TestUnauthenticatedConnectionsAreClosed(t *testing.T) {
	addr := serveLimited(t, Limits{})
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			tok := []string{"", "wrong"}[i%2]
			resp, err := rawRequest(conn, br, tok)
			if err != nil {
				errs <- fmt.Errorf("connection %d: %w", i, err)
				return
			}
			if resp.StatusCode != http.StatusUnauthorized {
				errs <- fmt.Errorf("connection %d: %s, want 401", i, resp.Status)
				return
			}
			if err := closedByServer(conn, br, 5*time.Second); err != nil {
				errs <- fmt.Errorf("connection %d after its 401: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// An authenticated keep-alive connection is closed once idle for IdleTimeout.
func TestIdleConnectionIsClosed(t *testing.T) {
	addr := serveLimited(t, Limits{IdleTimeout: 100 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	if resp, err := rawRequest(conn, br, "s3cret"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("authorized request: %v %v", resp, err)
	}
	if err := closedByServer(conn, br, 5*time.Second); err != nil {
		t.Fatalf("idle keep-alive connection: %v", err)
	}
}

// A connection that never finishes its headers is closed after ReadHeaderTimeout.
func TestSlowHeadersAreCutOff(t *testing.T) {
	addr := serveLimited(t, Limits{ReadHeaderTimeout: 100 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /v1/status HTTP/1.1\r\nHost: launcher\r\n") // and never the blank line
	if err := closedByServer(conn, bufio.NewReader(conn), 5*time.Second); err != nil {
		t.Fatalf("connection with unfinished headers: %v", err)
	}
}

// Headers are bounded (net/http's default is 1 MiB per request).
func TestOversizedHeadersAreRefused(t *testing.T) {
	addr := serveLimited(t, Limits{})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := rawRequest(conn, bufio.NewReader(conn), "s3cret", "X-Padding: "+strings.Repeat("a", 64<<10))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("64 KiB of headers: %s, want 431", resp.Status)
	}
}

// At most MaxConns connections are served at once; the next one is served when one of them closes.
func TestConnectionCap(t *testing.T) {
	const maxConns = 4
	addr := serveLimited(t, Limits{MaxConns: maxConns})
	var held []net.Conn
	for range maxConns {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Served, so accepted: the connection now counts against the cap while it idles.
		if resp, err := rawRequest(conn, bufio.NewReader(conn), "s3cret"); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("request within the cap: %v %v", resp, err)
		}
		held = append(held, conn)
	}
	extra, err := net.Dial("tcp", addr) // the kernel completes the handshake; the server does not accept it
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	type result struct {
		resp *http.Response
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := rawRequest(extra, bufio.NewReader(extra), "s3cret")
		got <- result{resp, err}
	}()
	select {
	case r := <-got:
		t.Fatalf("connection %d was served while %d were open: %v %v", maxConns+1, maxConns, r.resp, r.err)
	case <-time.After(300 * time.Millisecond): // it must not be served at all: no wait here can be too short
	}
	held[0].Close()
	select {
	case r := <-got:
		if r.err != nil || r.resp.StatusCode != http.StatusOK {
			t.Fatalf("connection %d after one closed: %v %v", maxConns+1, r.resp, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting connection was not served within 10s of another closing")
	}
}

// A watch outlives ReadTimeout: the deadline bounds the request, not the stream.
func TestWatchOutlivesReadTimeout(t *testing.T) {
	board := NewBoard(Status{Phase: Starting})
	srv := &Server{VM: newFakeVM(), Board: board, Token: "s3cret", Limits: Limits{ReadTimeout: 50 * time.Millisecond}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l, false) }()
	defer func() { srv.Close(); <-done }()
	c := NewClient(l.Addr().String(), "s3cret")
	reports := make(chan Status, 4)
	werr := make(chan error, 1)
	wctx := ctx(t)
	go func() { werr <- c.Watch(wctx, func(s Status) { reports <- s }) }()
	if s := <-reports; s.Phase != Starting {
		t.Fatalf("first report %+v", s)
	}
	// Outlive the read deadline ten times over (a stream under it would be cut at 50ms), then change.
	select {
	case err := <-werr:
		t.Fatalf("watch ended early: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	board.Update(func(s *Status) { s.Phase = Running })
	select {
	case s := <-reports:
		if s.Phase != Running {
			t.Fatalf("second report %+v", s)
		}
	case err := <-werr:
		t.Fatalf("watch ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no report of the change within 5s")
	}
}
