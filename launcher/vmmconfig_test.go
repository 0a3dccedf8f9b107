package launcher

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/launcher/spec"
)

// TestVMMConfigTopologyAndPaused: the translated topology and startStrategy reach the VMM's config.
func TestVMMConfigTopologyAndPaused(t *testing.T) {
	r := &runner{o: Options{Kernel: "/nonexistent/vmlinux"}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		board: control.NewBoard(control.Status{}), hub: control.NewConsoleHub(0)}
	defer r.hub.Close()
	m := &spec.Machine{MemoryBytes: 64 << 20, Sockets: 2, Cores: 3, Threads: 1, StartPaused: true}
	cfg, err := r.vmmConfig(context.Background(), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CPUs != 6 || cfg.Sockets != 2 || cfg.Cores != 3 || cfg.Threads != 1 || !cfg.StartPaused {
		t.Fatalf("vmm config: cpus %d topology %d/%d/%d paused %v", cfg.CPUs, cfg.Sockets, cfg.Cores, cfg.Threads, cfg.StartPaused)
	}
}
