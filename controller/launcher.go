package controller

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/control"
	"k8s.io/apimachinery/pkg/types"
)

// maxWatchRetry caps the delay between attempts to reach a launcher: a launcher preparing disks may not
// listen yet, and its first report should not wait long once it does.
const maxWatchRetry = 5 * time.Second

// fastRetryWindow is how long after a watcher starts (or last heard from its launcher) it retries at the
// base delay instead of backing off: a watch started when the pod is bound fails until the kubelet has the
// sandbox and the launcher listens (typically 0.3–1 s), and each doubling there would be paid by every
// start as time to Running.
const fastRetryWindow = 5 * time.Second

// DefaultControlPort is the TCP port the launcher serves its control API on (on the pod IP).
const DefaultControlPort = 8186

// GuestPhase is the guest state a launcher reports.
type GuestPhase string

// Guest phases a launcher reports.
const (
	// GuestStarting: the launcher is preparing disks, network or booting the VMM.
	GuestStarting GuestPhase = "Starting"
	// GuestRunning: the vCPUs run (or are paused; see LauncherState.Paused).
	GuestRunning GuestPhase = "Running"
	// GuestSucceeded: the guest powered off (or was shut down within its grace period).
	GuestSucceeded GuestPhase = "Succeeded"
	// GuestFailed: the guest crashed, the VMM failed, or the launcher could not start it.
	GuestFailed GuestPhase = "Failed"
)

// LauncherState is what the controller learns from a launcher's control API.
type LauncherState struct {
	Phase GuestPhase
	// Paused: the vCPUs are paused (by `virtctl pause` or startStrategy Paused).
	Paused bool
	// Reason and Message explain a final phase (e.g. "Crashed", "VMM error: ...").
	Reason  string
	Message string
	// Interfaces the guest has, as the launcher sees them (MAC, IP if known).
	Interfaces []v1.VirtualMachineInstanceNetworkInterface
	// Boot is the launcher's choice of kernel (nil until made); see bootstatus.go.
	Boot *control.Boot
	// ShuttingDown: a graceful shutdown is under way in the launcher.
	ShuttingDown bool
	// GracePeriodSeconds is the grace period the launcher gives a shutdown (nil: not reported).
	GracePeriodSeconds *int64
}

// LauncherEndpoint says how to reach one VMI's launcher.
type LauncherEndpoint struct {
	Namespace string
	VMIName   string
	VMIUID    types.UID
	PodName   string
	PodIP     string
	Port      int
	// Token authenticates the controller to the launcher (from the per-VMI secret).
	Token string
}

// StatusSource streams launcher state. The real implementation talks to the launcher's control API;
// tests use a fake behind the same interface (launcher pods do not run without a kubelet).
type StatusSource interface {
	// Watch calls report with the launcher's current state and then with every change until ctx ends
	// or the connection breaks; it returns the error that ended it (nil or ctx.Err() when ctx ended).
	Watch(ctx context.Context, ep LauncherEndpoint, report func(LauncherState)) error
}

// LauncherOp names a request to a launcher's control API.
type LauncherOp string

// What the controller asks of a launcher: KubeVirt's virt-handler part of stopping a VMI.
const (
	// OpShutdown starts a graceful shutdown with LauncherCommand.Grace (virt-handler's
	// ShutdownVirtualMachine), which also becomes the launcher's grace period.
	OpShutdown LauncherOp = "Shutdown"
	// OpSetGrace lowers the launcher's grace period to LauncherCommand.Grace (the VMI's was lowered): a
	// shutdown under way then ends at its start plus Grace, as virt-handler's grace-period check does.
	OpSetGrace LauncherOp = "SetGrace"
	// OpStop stops the guest now (virt-handler's KillVirtualMachine).
	OpStop LauncherOp = "Stop"
)

// LauncherCommand is one request to a launcher.
type LauncherCommand struct {
	Op    LauncherOp
	Grace time.Duration
}

// LauncherCommander is implemented by StatusSources that can also act on a launcher through its control
// API (the real one and the tests' fake). Without it the controller only watches; a launcher then learns
// of a VMI's end from its pod's deletion alone.
type LauncherCommander interface {
	Command(ctx context.Context, ep LauncherEndpoint, cmd LauncherCommand) error
}

// podIPFreeSource is implemented by StatusSources that reach a launcher without its pod IP (through
// pods/portforward): the controller then watches as soon as the pod is bound to a node, without waiting
// for the kubelet to publish the pod IP (its status update follows the next PLEG relist, up to a second
// after the containers started). Sources that don't implement it need LauncherEndpoint.PodIP.
type podIPFreeSource interface {
	NeedsPodIP() bool
}

// needsPodIP reports whether src needs a launcher's pod IP to reach it.
func needsPodIP(src StatusSource) bool {
	if s, ok := src.(podIPFreeSource); ok {
		return s.NeedsPodIP()
	}
	return true
}

// launcherWatchers owns one goroutine per VMI that keeps a StatusSource.Watch open, caches the latest
// state and tells the VMI controller about every change. A watcher lives until Stop (the VMI is final or
// gone), StopAll (the controller stops) or a changed endpoint (a new pod) replaces it.
type launcherWatchers struct {
	src     StatusSource
	notify  func(key string)
	log     *slog.Logger
	backoff time.Duration

	mu     sync.Mutex
	byKey  map[string]*launcherWatcher
	wg     sync.WaitGroup
	closed bool
}

type launcherWatcher struct {
	ep     LauncherEndpoint
	cancel context.CancelFunc
	state  *LauncherState
	sent   launcherSent
}

// launcherSent is what the controller has asked of one launcher, so that a request and its event are made
// once however often the VMI is synced before the launcher's report says it was done.
type launcherSent struct {
	shutdown, stop bool
	// grace is the shortest grace period sent, in seconds (nil: none).
	grace *int64
}

// Sent returns what was asked of the launcher of key at pod podName.
func (w *launcherWatchers) Sent(key, podName string) launcherSent {
	w.mu.Lock()
	defer w.mu.Unlock()
	if lw := w.byKey[key]; lw != nil && lw.ep.PodName == podName {
		return lw.sent
	}
	return launcherSent{}
}

// MarkSent records that cmd was sent to the launcher of key at pod podName.
func (w *launcherWatchers) MarkSent(key, podName string, cmd LauncherCommand) {
	w.mu.Lock()
	defer w.mu.Unlock()
	lw := w.byKey[key]
	if lw == nil || lw.ep.PodName != podName {
		return
	}
	switch cmd.Op {
	case OpStop:
		lw.sent.stop = true
		return
	case OpShutdown:
		lw.sent.shutdown = true
	}
	if g := int64(cmd.Grace / time.Second); lw.sent.grace == nil || g < *lw.sent.grace {
		lw.sent.grace = &g
	}
}

func newLauncherWatchers(src StatusSource, notify func(string), log *slog.Logger) *launcherWatchers {
	// The first attempt usually comes before the launcher listens: retry at the base delay for
	// fastRetryWindow, then double up to maxWatchRetry, or every start waits a second more to show Running.
	return &launcherWatchers{src: src, notify: notify, log: log, backoff: 100 * time.Millisecond, byKey: map[string]*launcherWatcher{}}
}

// Ensure makes sure a watcher for key runs against ep, replacing one that watches another endpoint.
func (w *launcherWatchers) Ensure(key string, ep LauncherEndpoint) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.src == nil {
		return
	}
	if cur := w.byKey[key]; cur != nil {
		if cur.ep == ep {
			return
		}
		cur.cancel()
	}
	ctx, cancel := context.WithCancel(context.Background())
	lw := &launcherWatcher{ep: ep, cancel: cancel}
	w.byKey[key] = lw
	w.wg.Add(1)
	go w.run(ctx, key, lw)
}

func (w *launcherWatchers) run(ctx context.Context, key string, lw *launcherWatcher) {
	defer w.wg.Done()
	delay := w.backoff
	var mu sync.Mutex // guards heard (written by report, read by this loop)
	heard := time.Now()
	for {
		attempt := time.Now()
		err := w.src.Watch(ctx, lw.ep, func(s LauncherState) {
			w.mu.Lock()
			if w.byKey[key] != lw { // replaced or stopped
				w.mu.Unlock()
				return
			}
			st := s
			lw.state = &st
			w.mu.Unlock()
			mu.Lock()
			heard = time.Now()
			mu.Unlock()
			w.notify(key)
		})
		if ctx.Err() != nil {
			return
		}
		mu.Lock()
		if heard.After(attempt) || time.Since(heard) < fastRetryWindow {
			delay = w.backoff
		}
		mu.Unlock()
		if err != nil && !errors.Is(err, context.Canceled) {
			w.log.Debug("launcher watch ended; retrying", "vmi", key, "pod", lw.ep.PodName, "err", err, "retryIn", delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if delay *= 2; delay > maxWatchRetry {
			delay = maxWatchRetry
		}
	}
}

// State returns the latest state reported for key by the launcher at pod podName.
func (w *launcherWatchers) State(key, podName string) (LauncherState, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	lw := w.byKey[key]
	if lw == nil || lw.state == nil || lw.ep.PodName != podName {
		return LauncherState{}, false
	}
	return *lw.state, true
}

// Stop ends the watcher of key, if any.
func (w *launcherWatchers) Stop(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if lw := w.byKey[key]; lw != nil {
		lw.cancel()
		delete(w.byKey, key)
	}
}

// Len is the number of running watchers.
func (w *launcherWatchers) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.byKey)
}

// StopAll ends every watcher and waits for their goroutines.
func (w *launcherWatchers) StopAll() {
	w.mu.Lock()
	w.closed = true
	for k, lw := range w.byKey {
		lw.cancel()
		delete(w.byKey, k)
	}
	w.mu.Unlock()
	w.wg.Wait()
}
