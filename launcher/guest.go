package launcher

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"

	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/launcher/grace"
	"github.com/kvirt/kvirt/launcher/spec"
	"github.com/kvirt/kvirt/launcher/volumes"
	"github.com/kvirt/kvirt/vmm"
)

// guest is a VMM machine seen through control.VM and grace.VM.
type guest struct {
	m   *vmm.Machine
	hub *control.ConsoleHub

	inMu sync.Mutex // one writer at a time into the serial input
	inW  *io.PipeWriter
	inR  *io.PipeReader

	done chan struct{} // closed when the exit was reported
}

func newGuest(cfg vmm.Config, hub *control.ConsoleHub, local io.Reader) (*guest, error) {
	g := &guest{hub: hub, done: make(chan struct{})}
	g.inR, g.inW = io.Pipe()
	cfg.ConsoleInput = g.inR
	m, err := vmm.New(cfg)
	if err != nil {
		g.inW.Close()
		return nil, err
	}
	g.m = m
	if local != nil {
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := local.Read(buf)
				if n > 0 {
					if _, werr := g.writeInput(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
	return g, nil
}

func (g *guest) writeInput(p []byte) (int, error) {
	g.inMu.Lock()
	defer g.inMu.Unlock()
	return g.inW.Write(p)
}

// abort releases a machine that was never started.
func (g *guest) abort() {
	g.m.Stop()
	g.inW.Close()
	close(g.done)
}

// start boots the machine (its vCPUs stay parked when vmm.Config.StartPaused is set) and reports its end
// on the returned channel.
func (g *guest) start() (<-chan grace.Exit, error) {
	if err := g.m.Start(); err != nil {
		g.inW.Close()
		close(g.done)
		return nil, err
	}
	exits := make(chan grace.Exit, 1)
	go func() {
		defer close(g.done)
		o, err := g.m.Wait(context.Background())
		g.inW.Close()
		exits <- toExit(o, err)
	}()
	return exits, nil
}

// wait blocks until the machine's end was reported (or it never ran).
func (g *guest) wait() { <-g.done }

func toExit(o vmm.Outcome, err error) grace.Exit {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	switch o {
	case vmm.PoweredOff:
		return grace.Exit{Kind: grace.Poweroff, Message: msg}
	case vmm.Stopped:
		return grace.Exit{Kind: grace.Stopped, Message: msg}
	case vmm.Crashed:
		return grace.Exit{Kind: grace.Crashed, Message: msg}
	}
	return grace.Exit{Kind: grace.VMMError, Message: fmt.Sprintf("machine ended (%v): %s", o, msg)}
}

func (g *guest) Pause() error           { return g.m.Pause() }
func (g *guest) Resume() error          { return g.m.Resume() }
func (g *guest) RequestShutdown() error { return g.m.RequestShutdown() }
func (g *guest) Stop() error            { g.m.Stop(); return nil }

func (g *guest) Console() (io.ReadCloser, io.Writer, error) {
	return g.hub.Subscribe(), writerFunc(g.writeInput), nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// markerWatcher calls found once when marker appears in the stream written to it (across writes).
type markerWatcher struct {
	marker []byte
	found  func()
	mu     sync.Mutex
	tail   []byte
	seen   bool
}

func newMarkerWatcher(marker string, found func()) *markerWatcher {
	return &markerWatcher{marker: []byte(marker), found: found}
}

func (w *markerWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.seen {
		w.mu.Unlock()
		return len(p), nil
	}
	buf := append(w.tail, p...)
	if bytes.Contains(buf, w.marker) {
		w.seen, w.tail = true, nil
		w.mu.Unlock()
		w.found()
		return len(p), nil
	}
	keep := min(len(buf), len(w.marker)-1)
	w.tail = append([]byte(nil), buf[len(buf)-keep:]...)
	w.mu.Unlock()
	return len(p), nil
}

func randomMAC() net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	rand.Read(m)
	m[0] = m[0]&0xfe | 0x02
	return m
}

// volumesExtract fetches the kernelBoot files.
func volumesExtract(ctx context.Context, image, pullSecret string, paths []string, dir string, dirs spec.Dirs) (map[string]string, error) {
	opts := dirs.ContainerDisk
	opts.PullSecret = pullSecret
	return volumes.ExtractFiles(ctx, "spec.domain.firmware.kernelBoot.container.image", image, paths, filepath.Clean(dir), opts)
}
