package integration

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/controller"
	"github.com/kvirt/kvirt/controller/controllertest"
	"github.com/kvirt/kvirt/tests/testenv"
)

// TestHealthReadyMetrics serves a running controller's /healthz, /readyz and /metrics: readiness follows
// the ready func, and the metrics count VMI phases and both controllers' reconciles.
func TestHealthReadyMetrics(t *testing.T) {
	e := start(t)
	e.createVM(t, controllertest.VM("m1", v1.RunStrategyAlways))
	testenv.Eventually(t, "VMI Scheduled", 30*time.Second, e.vmiPhase("m1", v1.Scheduled))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var ready atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- controller.ServeHTTP(ctx, addr, e.c.Metrics, ready.Load, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeHTTP: %v", err)
		}
	}()
	get := func(path string) (code int, body string) {
		testenv.Eventually(t, "GET "+path, 5*time.Second, func() (bool, string) {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			code, body = resp.StatusCode, string(b)
			return true, ""
		})
		return code, body
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz %d", code)
	}
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz before ready: %d", code)
	}
	ready.Store(true)
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz when ready: %d", code)
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics %d", code)
	}
	for _, want := range []string{
		`kvirt_vmi_phase_count{phase="Scheduled"} `,
		`kvirt_controller_reconciles_total{controller="vm",result="success"}`,
		`kvirt_controller_reconcile_duration_seconds_bucket{controller="vmi"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
