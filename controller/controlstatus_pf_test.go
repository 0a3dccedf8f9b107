package controller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/tests/testenv"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/client-go/rest"
)

// fakePortForward stands in for the apiserver and the kubelet behind pods/portforward: it serves the
// subresource of one pod (bearer apiToken required) and connects each data stream to ports[port], as the
// kubelet connects to 127.0.0.1:port inside the pod. A port not in the map gets the kubelet's error.
type fakePortForward struct {
	srv      *httptest.Server
	active   atomic.Int32 // upgraded connections not yet closed
	sessions atomic.Int32
}

func newFakePortForward(t *testing.T, namespace, pod, apiToken string, ports map[int]string) *fakePortForward {
	f := &fakePortForward{}
	path := fmt.Sprintf("/api/v1/namespaces/%s/pods/%s/portforward", namespace, pod)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+apiToken {
			http.Error(w, `pods "x" is forbidden`, http.StatusForbidden)
			return
		}
		if r.Method != http.MethodPost || r.URL.Path != path {
			http.Error(w, "not found: "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		if _, err := httpstream.Handshake(r, w, []string{"portforward.k8s.io"}); err != nil {
			return
		}
		streams := make(chan httpstream.Stream, 4)
		conn := spdy.NewResponseUpgrader().UpgradeResponse(w, r, func(s httpstream.Stream, _ <-chan struct{}) error {
			streams <- s
			return nil
		})
		if conn == nil {
			return
		}
		f.active.Add(1)
		f.sessions.Add(1)
		defer f.active.Add(-1)
		defer conn.Close()
		pairs := map[string][2]httpstream.Stream{}
		for {
			select {
			case <-conn.CloseChan():
				return
			case s := <-streams:
				id := s.Headers().Get(corev1.PortForwardRequestIDHeader)
				p := pairs[id]
				if s.Headers().Get(corev1.StreamType) == corev1.StreamTypeError {
					p[0] = s
				} else {
					p[1] = s
				}
				pairs[id] = p
				if p[0] != nil && p[1] != nil {
					go forwardPair(p[0], p[1], s.Headers().Get(corev1.PortHeader), ports)
				}
			}
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func forwardPair(errS, data httpstream.Stream, port string, ports map[int]string) {
	defer errS.Close()
	defer data.Close()
	p, _ := strconv.Atoi(port)
	addr, ok := ports[p]
	var c net.Conn
	var err error
	if ok {
		c, err = net.Dial("tcp", addr)
	} else {
		err = errors.New("connect: connection refused")
	}
	if err != nil {
		fmt.Fprintf(errS, "error forwarding port %s to pod: %v", port, err)
		return
	}
	defer c.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(c, data); done <- struct{}{} }()
	go func() { io.Copy(data, c); done <- struct{}{} }()
	<-done
}

func startControlServer(t *testing.T, board *control.Board, token string) (addr string, stop func()) {
	t.Helper()
	srv := &control.Server{Board: board, Token: token}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l, false) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Close()
			if err := <-served; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return l.Addr().String(), stop
}

// TestPortForwardStatusSource watches a real launcher control-API server through the pods/portforward
// subresource. The endpoint's pod IP is unroutable (TEST-NET-1): nothing may dial it.
func TestPortForwardStatusSource(t *testing.T) {
	defer func(d time.Duration) { pfDialTimeout = d }(pfDialTimeout)
	pfDialTimeout = 300 * time.Millisecond
	board := control.NewBoard(control.Status{Phase: control.Starting})
	addr, stopLauncher := startControlServer(t, board, "s3cret")
	f := newFakePortForward(t, "ns1", "virt-launcher-a-xyz", "api-token", map[int]string{control.DefaultPort: addr})
	src, err := NewPortForwardStatusSource(&rest.Config{Host: f.srv.URL, BearerToken: "api-token"})
	if err != nil {
		t.Fatal(err)
	}
	ep := LauncherEndpoint{Namespace: "ns1", PodName: "virt-launcher-a-xyz", PodIP: "192.0.2.1", Token: "s3cret"}

	// A wrong launcher token is refused by the launcher, through the tunnel.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bad := ep
	bad.Token = "wrong"
	err = src.Watch(ctx, bad, func(LauncherState) {})
	var ae *control.APIError
	if !errors.As(err, &ae) || ae.Code != http.StatusUnauthorized {
		t.Fatalf("wrong token: got %v, want the launcher's 401", err)
	}
	testenv.Eventually(t, "the refused request's tunnel to close", 5*time.Second, func() (bool, string) { return f.active.Load() == 0, "" })

	got := make(chan LauncherState, 16)
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	watchDone := make(chan error, 1)
	go func() { watchDone <- src.Watch(wctx, ep, func(s LauncherState) { got <- s }) }()
	next := func() LauncherState {
		t.Helper()
		select {
		case s := <-got:
			return s
		case err := <-watchDone:
			t.Fatalf("watch ended: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("no report within 5s")
		}
		return LauncherState{}
	}
	if s := next(); s.Phase != GuestStarting {
		t.Fatalf("first report %+v", s)
	}
	board.Update(func(s *control.Status) {
		s.Phase = control.Running
		s.Interfaces = []control.Interface{{Name: "default", MAC: "02:00:00:00:00:01", IP: "192.0.2.1"}}
	})
	if s := next(); s.Phase != GuestRunning || len(s.Interfaces) != 1 || s.Interfaces[0].IP != "192.0.2.1" {
		t.Fatalf("running report %+v", s)
	}
	// The tunnel outlives the handshake timeout.
	time.Sleep(2 * pfDialTimeout)
	board.Update(func(s *control.Status) { s.Paused = true })
	if s := next(); !s.Paused {
		t.Fatalf("paused report %+v", s)
	}
	wcancel()
	if err := <-watchDone; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("watch ended with %v", err)
	}
	testenv.Eventually(t, "the watch's tunnel to close after cancel", 5*time.Second, func() (bool, string) { return f.active.Load() == 0, "" })

	// The launcher going away ends the watch with an error (the watcher then retries).
	go func() { watchDone <- src.Watch(context.Background(), ep, func(s LauncherState) { got <- s }) }()
	next()
	stopLauncher()
	select {
	case err := <-watchDone:
		if err == nil {
			t.Fatal("watch ended without error when the launcher went away")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch still open 10s after the launcher went away")
	}
	testenv.Eventually(t, "the tunnel to close after the launcher went away", 5*time.Second, func() (bool, string) { return f.active.Load() == 0, "" })
}

// TestPortForwardErrors: the kubelet's and the apiserver's refusals end Watch promptly with errors that
// say what failed.
func TestPortForwardErrors(t *testing.T) {
	f := newFakePortForward(t, "ns1", "pod-a", "api-token", nil) // nothing listens in the pod
	ep := LauncherEndpoint{Namespace: "ns1", PodName: "pod-a", PodIP: "192.0.2.1", Port: 8186, Token: "t"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	src, err := NewPortForwardStatusSource(&rest.Config{Host: f.srv.URL, BearerToken: "api-token"})
	if err != nil {
		t.Fatal(err)
	}
	err = src.Watch(ctx, ep, func(LauncherState) { t.Error("report without a launcher") })
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "pod-a") {
		t.Fatalf("nothing listening: got %v, want the kubelet's error naming the pod", err)
	}

	denied, err := NewPortForwardStatusSource(&rest.Config{Host: f.srv.URL, BearerToken: "other"})
	if err != nil {
		t.Fatal(err)
	}
	err = denied.Watch(ctx, ep, func(LauncherState) { t.Error("report without access") })
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "pods/portforward") {
		t.Fatalf("forbidden: got %v, want an error naming the RBAC need", err)
	}

	gone := ep
	gone.PodName = "pod-b"
	err = src.Watch(ctx, gone, func(LauncherState) { t.Error("report from a missing pod") })
	if err == nil || ctx.Err() != nil {
		t.Fatalf("missing pod: got %v", err)
	}
	testenv.Eventually(t, "all tunnels closed", 5*time.Second, func() (bool, string) { return f.active.Load() == 0, "" })
	if n := f.sessions.Load(); n != 1 {
		t.Fatalf("%d port-forward sessions were opened, want 1 (only the permitted request for pod-a)", n)
	}
}
