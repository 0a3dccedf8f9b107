package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvirt/kvirt/launcher/control"
)

// TestControlStatusSource watches a real launcher control-API server (launcher/control) over TCP with
// the bearer token, as the VMI controller does on the pod IP.
func TestControlStatusSource(t *testing.T) {
	board := control.NewBoard(control.Status{Phase: control.Starting})
	srv := &control.Server{Board: board, Token: "s3cret"}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l, false) }()
	defer func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	src := NewControlStatusSource()

	// A wrong token is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := src.Watch(ctx, LauncherEndpoint{PodIP: "127.0.0.1", Port: port, Token: "wrong"}, func(LauncherState) {}); err == nil {
		t.Fatal("a wrong token was accepted")
	}

	got := make(chan LauncherState, 16)
	wctx, wcancel := context.WithCancel(context.Background())
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- src.Watch(wctx, LauncherEndpoint{PodIP: "127.0.0.1", Port: port, Token: "s3cret"}, func(s LauncherState) { got <- s })
	}()
	next := func() LauncherState {
		select {
		case s := <-got:
			return s
		case <-time.After(5 * time.Second):
			t.Fatal("no report within 5s")
			return LauncherState{}
		}
	}
	if s := next(); s.Phase != GuestStarting {
		t.Fatalf("first report %+v", s)
	}
	board.Update(func(s *control.Status) {
		s.Phase, s.Paused = control.Running, true
		s.Interfaces = []control.Interface{{Name: "default", MAC: "02:00:00:00:00:01", IP: "10.0.2.2"}}
	})
	s := next()
	if s.Phase != GuestRunning || !s.Paused || len(s.Interfaces) != 1 || s.Interfaces[0].IP != "10.0.2.2" || s.Interfaces[0].IPs[0] != "10.0.2.2" || s.Interfaces[0].MAC != "02:00:00:00:00:01" {
		t.Fatalf("running report %+v", s)
	}
	board.Update(func(s *control.Status) { s.Phase, s.Reason, s.Message = control.Failed, "Crashed", "guest panicked" })
	if s := next(); s.Phase != GuestFailed || s.Reason != "Crashed" || s.Message != "guest panicked" {
		t.Fatalf("failed report %+v", s)
	}
	wcancel()
	if err := <-watchDone; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("watch ended with %v", err)
	}
}

type recordingShutdowner struct{ got chan string }

func (r recordingShutdowner) Shutdown(g time.Duration) { r.got <- "shutdown " + g.String() }
func (r recordingShutdowner) SetGrace(g time.Duration) { r.got <- "grace " + g.String() }

// TestControlStatusSourceCommands sends the controller's requests to a real control-API server and reads
// the launcher's grace period and shutdown state from its reports.
func TestControlStatusSourceCommands(t *testing.T) {
	g := int64(600)
	board := control.NewBoard(control.Status{Phase: control.Running, ShuttingDown: true, GracePeriodSeconds: &g})
	rec := recordingShutdowner{make(chan string, 4)}
	srv := &control.Server{Board: board, Shutdown: rec, Token: "s3cret"}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l, false)
	defer srv.Close()
	ep := LauncherEndpoint{PodIP: "127.0.0.1", Port: l.Addr().(*net.TCPAddr).Port, Token: "s3cret"}
	src := NewControlStatusSource().(LauncherCommander)
	for _, tc := range []struct {
		cmd  LauncherCommand
		want string
	}{
		{LauncherCommand{Op: OpShutdown, Grace: 30 * time.Second}, "shutdown 30s"},
		{LauncherCommand{Op: OpSetGrace, Grace: 5 * time.Second}, "grace 5s"},
		{LauncherCommand{Op: OpStop}, "shutdown 0s"},
	} {
		if err := src.Command(context.Background(), ep, tc.cmd); err != nil {
			t.Fatalf("%s: %v", tc.cmd.Op, err)
		}
		if got := <-rec.got; got != tc.want {
			t.Fatalf("%s reached the launcher as %q, want %q", tc.cmd.Op, got, tc.want)
		}
	}
	bad := ep
	bad.Token = "wrong"
	if err := src.Command(context.Background(), bad, LauncherCommand{Op: OpStop}); err == nil {
		t.Fatal("a wrong token was accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan LauncherState, 1)
	go src.(StatusSource).Watch(ctx, ep, func(s LauncherState) {
		select {
		case got <- s:
		default:
		}
	})
	select {
	case s := <-got:
		if !s.ShuttingDown || s.GracePeriodSeconds == nil || *s.GracePeriodSeconds != 600 {
			t.Fatalf("report %+v: want shutting down with a grace period of 600 s", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no report within 5s")
	}
}

// Review finding F4: one 128 MiB status message drove the controller's heap to 449 MiB (its limit is
// 512 Mi), so one launcher could crash-loop the controller every VM depends on. The watch now refuses a
// message over control.MaxStatusBytes without reading the rest of it.
func TestControlStatusSourceRefusesOversizedStatus(t *testing.T) {
	const huge = 128 << 20
	var written atomic.Int64
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		n, _ := io.WriteString(w, `{"phase":"Running","message":"`)
		written.Add(int64(n))
		chunk := []byte(strings.Repeat("a", 64<<10))
		for written.Load() < huge {
			n, err := w.Write(chunk)
			written.Add(int64(n))
			if err != nil {
				return // the controller hung up
			}
		}
		io.WriteString(w, "\"}\n")
	}))
	defer hs.Close()
	port := hs.Listener.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reports := 0
	err := NewControlStatusSource().Watch(ctx, LauncherEndpoint{PodIP: "127.0.0.1", Port: port, Token: "t"}, func(LauncherState) { reports++ })
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("exceeds %d bytes", control.MaxStatusBytes)) {
		t.Fatalf("watch ended with %v, want the message refused for its size", err)
	}
	if reports != 0 {
		t.Fatalf("%d reports from an oversized message", reports)
	}
	hs.CloseClientConnections()
	// The launcher could push only what the socket buffers hold past the bound before the controller hung up.
	if w := written.Load(); w >= huge {
		t.Fatalf("the controller read all %d bytes of the message", w)
	}
}
