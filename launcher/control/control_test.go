package control

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeVM is the VMM side: it records calls and exposes a console hub and an input buffer.
type fakeVM struct {
	mu      sync.Mutex
	calls   []string
	hub     *ConsoleHub
	input   bytes.Buffer
	inputCh chan struct{}
}

func newFakeVM() *fakeVM { return &fakeVM{hub: NewConsoleHub(0), inputCh: make(chan struct{}, 100)} }

func (v *fakeVM) record(c string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.calls = append(v.calls, c)
	return nil
}
func (v *fakeVM) Pause() error           { return v.record("pause") }
func (v *fakeVM) Resume() error          { return v.record("resume") }
func (v *fakeVM) RequestShutdown() error { return v.record("shutdown") }
func (v *fakeVM) Stop() error            { return v.record("stop") }
func (v *fakeVM) Console() (io.ReadCloser, io.Writer, error) {
	return v.hub.Subscribe(), writerFunc(func(p []byte) (int, error) {
		v.mu.Lock()
		v.input.Write(p)
		v.mu.Unlock()
		v.inputCh <- struct{}{}
		return len(p), nil
	}), nil
}
func (v *fakeVM) Calls() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return strings.Join(v.calls, ",")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

type fakeShutdown struct{ got, grace chan time.Duration }

func (f fakeShutdown) Shutdown(g time.Duration) { f.got <- g }
func (f fakeShutdown) SetGrace(g time.Duration) { f.grace <- g }

type rig struct {
	vm        *fakeVM
	board     *Board
	srv       *Server
	shut      fakeShutdown
	tcp, unix *Client
	tcpAddr   string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{vm: newFakeVM(), board: NewBoard(Status{Phase: Running}), shut: fakeShutdown{make(chan time.Duration, 4), make(chan time.Duration, 4)}}
	r.srv = &Server{VM: r.vm, Board: r.board, Shutdown: r.shut, Token: "s3cret"}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "launcher.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); r.srv.Serve(tl, false) }()
	go func() { defer wg.Done(); r.srv.Serve(ul, true) }()
	t.Cleanup(func() { r.srv.Close(); wg.Wait() })
	r.tcpAddr = tl.Addr().String()
	r.tcp = NewClient(r.tcpAddr, "s3cret")
	r.unix = NewUnixClient(sock)
	return r
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestAuth(t *testing.T) {
	r := newRig(t)
	for _, tok := range []string{"", "wrong", "s3cre", "s3cret2"} {
		_, err := NewClient(r.tcpAddr, tok).Status(ctx(t))
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != http.StatusUnauthorized {
			t.Errorf("token %q: %v, want 401", tok, err)
		}
	}
	if _, err := NewClient(r.tcpAddr, "wrong").Console(ctx(t)); err == nil {
		t.Error("console without the token succeeded")
	}
	if st, err := r.tcp.Status(ctx(t)); err != nil || st.Phase != Running {
		t.Fatalf("status with token: %+v %v", st, err)
	}
	if st, err := r.unix.Status(ctx(t)); err != nil || st.Phase != Running {
		t.Fatalf("status on the unix socket: %+v %v", st, err)
	}
	// A server without a token refuses every TCP request.
	open := &Server{VM: r.vm, Board: r.board}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/v1/status", nil)
	req.Header.Set("Authorization", "Bearer ")
	open.Handler(false).ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("server without a token answered %d to an empty bearer token", rec.Code)
	}
}

func TestPauseUnpause(t *testing.T) {
	r := newRig(t)
	c := ctx(t)
	if err := r.unix.Unpause(c); err == nil || err.Error() != "VMI is not paused" || !IsConflict(err) {
		t.Fatalf("unpause while running: %v", err)
	}
	if err := r.unix.Pause(c); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.tcp.Status(c); !st.Paused {
		t.Fatal("status not paused")
	}
	if err := r.tcp.Pause(c); err == nil || err.Error() != "VMI is already paused" {
		t.Fatalf("second pause: %v", err)
	}
	if err := r.tcp.Unpause(c); err != nil {
		t.Fatal(err)
	}
	if got := r.vm.Calls(); got != "pause,resume" {
		t.Fatalf("VM calls %q", got)
	}
	r.board.Update(func(s *Status) { s.Phase = Starting })
	if err := r.tcp.Pause(c); err == nil || err.Error() != "VM is not running" {
		t.Fatalf("pause while starting: %v", err)
	}
}

func TestWatch(t *testing.T) {
	r := newRig(t)
	c, cancel := context.WithCancel(ctx(t))
	got := make(chan Status, 10)
	done := make(chan error, 1)
	go func() { done <- r.tcp.Watch(c, func(s Status) { got <- s }) }()
	next := func() Status {
		select {
		case s := <-got:
			return s
		case <-time.After(5 * time.Second):
			t.Fatal("no status from watch within 5s")
			return Status{}
		}
	}
	if s := next(); s.Phase != Running {
		t.Fatalf("first %+v", s)
	}
	r.board.Update(func(s *Status) {
		s.BootMarkerSeen = true
		s.Interfaces = []Interface{{Name: "default", MAC: "02:00:00:00:00:01", IP: "10.0.2.2"}}
	})
	if s := next(); !s.BootMarkerSeen || len(s.Interfaces) != 1 || s.Interfaces[0].IP != "10.0.2.2" {
		t.Fatalf("after update %+v", s)
	}
	r.board.Update(func(s *Status) { s.Phase, s.Reason = Succeeded, "Shutdown" })
	if s := next(); s.Phase != Succeeded || s.Reason != "Shutdown" {
		t.Fatalf("final %+v", s)
	}
	// A final phase sticks.
	r.board.Update(func(s *Status) { s.Phase = Running })
	if s := next(); s.Phase != Succeeded {
		t.Fatalf("final phase changed: %+v", s)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("watch ended with %v", err)
	}
	// Closing the server ends a watch with an error the controller retries on.
	connected := make(chan struct{}, 1)
	go func() {
		done <- r.unix.Watch(ctx(t), func(Status) {
			select {
			case connected <- struct{}{}:
			default:
			}
		})
	}()
	select {
	case <-connected:
	case <-time.After(5 * time.Second):
		t.Fatal("second watch got no status within 5s")
	}
	r.srv.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("watch ended without error when the server closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not end when the server closed")
	}
}

func TestShutdownStop(t *testing.T) {
	r := newRig(t)
	c := ctx(t)
	if err := r.tcp.Shutdown(c, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if g := <-r.shut.got; g != 30*time.Second {
		t.Fatalf("grace %v", g)
	}
	if err := r.unix.Shutdown(c, -1); err != nil {
		t.Fatal(err)
	}
	if g := <-r.shut.got; g >= 0 {
		t.Fatalf("default grace %v, want negative", g)
	}
	if err := r.tcp.SetGrace(c, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if g := <-r.shut.grace; g != 5*time.Second {
		t.Fatalf("SetGrace reached the grace logic with %v, want 5s", g)
	}
	for _, q := range []string{"", "?seconds=-1", "?seconds=x"} {
		rec := httptest.NewRecorder()
		r.srv.Handler(true).ServeHTTP(rec, httptest.NewRequest("POST", "/v1/grace"+q, nil))
		if rec.Code != http.StatusBadRequest {
			t.Fatalf("POST /v1/grace%s: %d %s, want 400", q, rec.Code, rec.Body)
		}
	}
	if err := r.tcp.Stop(c); err != nil {
		t.Fatal(err)
	}
	if g := <-r.shut.got; g != 0 {
		t.Fatalf("stop went to the shutdown logic with grace %v, want 0", g)
	}
	// Without grace logic: straight to the VM.
	bare := &Server{VM: r.vm, Board: r.board}
	rec := httptest.NewRecorder()
	bare.Handler(true).ServeHTTP(rec, httptest.NewRequest("POST", "/v1/stop", nil))
	if rec.Code != http.StatusAccepted {
		t.Fatalf("stop without grace logic: %d %s", rec.Code, rec.Body)
	}
	if got := r.vm.Calls(); got != "stop" {
		t.Fatalf("VM calls %q", got)
	}
	resp, err := r.tcp.do(c, "POST", "/v1/shutdown", map[string][]string{"grace": {"-3"}})
	if err == nil || !strings.Contains(err.Error(), "grace") {
		t.Fatalf("bad grace: %v %v", resp, err)
	}
	r.board.Update(func(s *Status) { s.Phase = Failed })
	if err := r.tcp.Stop(c); err == nil || err.Error() != "VM is not running" {
		t.Fatalf("stop after the end: %v", err)
	}
}

func TestConsoleWhilePaused(t *testing.T) {
	r := newRig(t)
	c := ctx(t)
	if err := r.unix.Pause(c); err != nil {
		t.Fatal(err)
	}
	con, err := r.unix.Console(c)
	if err != nil {
		t.Fatal(err)
	}
	defer con.Close()
	// Output written after attaching reaches the client; the subscription exists once Console returned.
	r.vm.hub.Write([]byte("login: "))
	buf := make([]byte, 7)
	con.(net.Conn).SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(con, buf); err != nil || string(buf) != "login: " {
		t.Fatalf("console read %q, %v", buf, err)
	}
	if _, err := con.Write([]byte("root\n")); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case <-r.vm.inputCh:
		case <-time.After(5 * time.Second):
			t.Fatal("guest input not received within 5s")
		}
		r.vm.mu.Lock()
		in := r.vm.input.String()
		r.vm.mu.Unlock()
		if in == "root\n" {
			break
		}
		if !strings.HasPrefix("root\n", in) {
			t.Fatalf("guest input %q", in)
		}
	}
	// Two consoles see the same output (the hub fans out).
	con2, err := r.tcp.Console(c)
	if err != nil {
		t.Fatal(err)
	}
	defer con2.Close()
	r.vm.hub.Write([]byte("x"))
	for _, cc := range []io.Reader{con, con2} {
		b := make([]byte, 1)
		if _, err := io.ReadFull(cc, b); err != nil || b[0] != 'x' {
			t.Fatalf("fan-out read %q %v", b, err)
		}
	}
	// Without the upgrade header: a clear error.
	if _, err := r.unix.do(c, "GET", "/v1/console", nil); err == nil || !strings.Contains(err.Error(), "Upgrade") {
		t.Fatalf("plain GET console: %v", err)
	}
}

func TestConsoleHubSlowSubscriber(t *testing.T) {
	h := NewConsoleHub(8)
	s := h.Subscribe()
	h.Write([]byte("0123456789abcdef")) // never blocks; keeps the newest 8 bytes
	b := make([]byte, 16)
	n, _ := s.Read(b)
	if string(b[:n]) != "89abcdef" {
		t.Fatalf("got %q", b[:n])
	}
	h.Close()
	if _, err := s.Read(b); err != io.EOF {
		t.Fatalf("after close: %v", err)
	}
}
