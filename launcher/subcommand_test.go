package launcher

import (
	"bytes"
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/tests/testenv"
)

// echoVM answers console input by echoing it on the console output.
type echoVM struct {
	hub    *control.ConsoleHub
	mu     sync.Mutex
	paused bool
}

func (v *echoVM) Pause() error           { v.mu.Lock(); v.paused = true; v.mu.Unlock(); return nil }
func (v *echoVM) Resume() error          { v.mu.Lock(); v.paused = false; v.mu.Unlock(); return nil }
func (v *echoVM) RequestShutdown() error { return nil }
func (v *echoVM) Stop() error            { return nil }
func (v *echoVM) Console() (io.ReadCloser, io.Writer, error) {
	return v.hub.Subscribe(), writerFunc(func(p []byte) (int, error) { return v.hub.Write(p) }), nil
}

func TestSubcommands(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "l.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	vm := &echoVM{hub: control.NewConsoleHub(0)}
	srv := &control.Server{VM: vm, Board: control.NewBoard(control.Status{Phase: control.Running})}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l, true) }()
	defer func() { srv.Close(); <-done }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var out, errb bytes.Buffer
	if code := Subcommand(ctx, sock, "pause", nil, &out, &errb); code != 0 {
		t.Fatalf("pause: %d %s", code, errb.String())
	}
	if code := Subcommand(ctx, sock, "pause", nil, &out, &errb); code != 1 || strings.TrimSpace(errb.String()) != "VMI is already paused" {
		t.Fatalf("second pause: %d %q", code, errb.String())
	}
	errb.Reset()
	if code := Subcommand(ctx, sock, "unpause", nil, &out, &errb); code != 0 {
		t.Fatalf("unpause: %d %s", code, errb.String())
	}
	// console: what is typed comes back (echo guest) until stdin ends.
	pr, pw := io.Pipe()
	var cout testenv.SyncBuffer
	codeCh := make(chan int, 1)
	go func() { codeCh <- Subcommand(ctx, sock, "console", pr, &cout, &errb) }()
	pw.Write([]byte("hello\n"))
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(cout.String(), "hello") {
		if time.Now().After(deadline) {
			t.Fatalf("console echo not seen within 5s: %q", cout.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	pw.Close()
	select {
	case code := <-codeCh:
		if code != 0 {
			t.Fatalf("console exit %d: %s", code, errb.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("console did not end when stdin ended")
	}
	if code := Subcommand(ctx, filepath.Join(t.TempDir(), "none.sock"), "pause", nil, &out, &errb); code != 1 {
		t.Fatalf("missing socket: %d", code)
	}
}
