// Package grace is the launcher's shutdown logic (BEHAVIOUR.md §3): on SIGTERM (or a shutdown request from
// the control API) it presses the guest's ACPI power button, presses it again every 5 s, and stops the guest
// hard when terminationGracePeriodSeconds end; a grace of 0 stops it at once. It turns the way the guest
// ended into an Outcome (phase, reason, message, exit code) and writes the termination message the
// controller reads.
//
// The grace period is the VMI's at launch, but it can only shrink: the controller passes on a VMI whose
// terminationGracePeriodSeconds was lowered (`virtctl stop --force --grace-period N`) with SetGrace, as
// KubeVirt's virt-handler re-reads the VMI's grace period on every sync. A shutdown under way then ends
// at its start plus the new grace period if that is earlier (at once if that time has passed; grace 0
// stops the guest now), and a later SIGTERM uses the new value.
//
// Outcomes (KubeVirt's phases for the same domain states):
//
//	guest powered off                     Succeeded  reason Shutdown    exit 0
//	hard stop asked for (grace 0)         Succeeded  reason Destroyed   exit 0
//	hard stop when the grace period ended Failed     reason Destroyed   exit 1  (ACPI was tried and ignored)
//	guest crash (panic, triple fault)     Failed     reason Crashed     exit 1
//	VMM failure                           Failed     reason VMMError    exit 1
//	launcher failure before the guest ran Failed     reason LauncherFailed exit 2
package grace

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/kvirt/kvirt/launcher/control"
)

// DefaultResend is how often the power button is pressed again during a graceful shutdown.
const DefaultResend = 5 * time.Second

// DefaultTerminationLog is where Kubernetes reads a container's termination message.
const DefaultTerminationLog = "/dev/termination-log"

// VM is the part of the VMM the grace logic drives.
type VM interface {
	RequestShutdown() error // ACPI power button
	Stop() error            // hard stop
}

// ExitKind is how the VMM's run ended.
type ExitKind int

const (
	// Poweroff: the guest powered itself off (ACPI S5).
	Poweroff ExitKind = iota
	// Stopped: the VMM ended because Stop was called.
	Stopped
	// Crashed: the guest crashed (panic notifier, triple fault, shutdown with an error).
	Crashed
	// VMMError: the VMM itself failed.
	VMMError
)

// Exit is the VMM's report of how the guest ended.
type Exit struct {
	Kind    ExitKind
	Message string
}

// Outcome is the launcher's result.
type Outcome struct {
	Phase    control.Phase `json:"phase"`
	Reason   string        `json:"reason"`
	Message  string        `json:"message,omitempty"`
	ExitCode int           `json:"-"`
}

// LauncherFailed is the outcome of a launcher that could not start the guest.
func LauncherFailed(err error) Outcome {
	return Outcome{Phase: control.Failed, Reason: "LauncherFailed", Message: err.Error(), ExitCode: 2}
}

// Manager runs the shutdown logic for one guest.
type Manager struct {
	VM    VM
	Grace time.Duration // terminationGracePeriodSeconds
	// Resend is the interval between power-button presses (DefaultResend when 0).
	Resend time.Duration
	Clock  Clock // RealClock when nil
	// Board is optional: GracePeriodSeconds, ShuttingDown/Deadline and the final phase are published here.
	Board *control.Board
	Log   *slog.Logger

	once sync.Once
	reqs chan request
	mu   sync.Mutex
	// grace is the grace period now: Grace, lowered by SetGrace and Shutdown.
	grace time.Duration
}

// request is a shutdown (shutdown) or a new, shorter grace period only, from the control API.
type request struct {
	shutdown bool
	grace    time.Duration
}

func (m *Manager) init() {
	m.once.Do(func() {
		m.reqs = make(chan request, 16)
		m.grace = max(m.Grace, 0)
		if m.Clock == nil {
			m.Clock = RealClock{}
		}
		if m.Resend <= 0 {
			m.Resend = DefaultResend
		}
		if m.Log == nil {
			m.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		}
	})
}

// GracePeriod is the grace period a shutdown starting now gets.
func (m *Manager) GracePeriod() time.Duration {
	m.init()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.grace
}

// Publish puts the grace period on the board (Run does it too; the launcher calls it before it prepares
// the guest, so the controller sees it from the first report).
func (m *Manager) Publish() {
	g := m.GracePeriod()
	m.publish(func(s *control.Status) { s.GracePeriodSeconds = ptrSeconds(g) })
}

func ptrSeconds(d time.Duration) *int64 { s := int64(d / time.Second); return &s }

// lower sets the grace period to g if that is shorter; it reports whether it was.
func (m *Manager) lower(g time.Duration) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g < 0 || g >= m.grace {
		return false
	}
	m.grace = g
	return true
}

func (m *Manager) send(r request) {
	select {
	case m.reqs <- r:
	default: // a burst of requests: the ones queued already decide
	}
}

// Shutdown asks for a graceful shutdown with grace (negative: the grace period now; 0: hard stop now); a
// shorter grace also becomes the grace period. A shutdown already under way keeps the earlier of the two
// deadlines. It never blocks.
func (m *Manager) Shutdown(grace time.Duration) {
	m.init()
	if grace < 0 {
		grace = m.GracePeriod()
	} else if m.lower(grace) {
		m.Publish()
	}
	m.send(request{shutdown: true, grace: grace})
}

// SetGrace lowers the grace period to grace (a longer one, or a negative one, is ignored: the launcher
// pod's own grace period, which bounds the launcher's life, cannot grow). A shutdown under way then ends
// at its start plus grace if that is earlier; grace 0 stops the guest at once. It never blocks.
func (m *Manager) SetGrace(grace time.Duration) {
	m.init()
	if !m.lower(grace) {
		return
	}
	m.Log.Info("grace period lowered", "grace", grace)
	m.Publish()
	m.send(request{grace: grace})
}

// Run drives the guest until the VMM reports its exit: signals (SIGTERM, SIGINT) start a graceful shutdown
// with the grace period, a second signal stops the guest at once (a signal after a shutdown the control
// API started is a first one: the kubelet's SIGTERM that follows the controller's request). When ctx ends
// the guest is stopped hard. Run returns the Outcome; the VMM must deliver an Exit after Stop.
func (m *Manager) Run(ctx context.Context, signals <-chan os.Signal, exited <-chan Exit) Outcome {
	m.init()
	m.Publish()
	var (
		shuttingDown bool
		bySignal     bool // the shutdown under way was started by a signal
		hardStopped  bool
		stopAsked    bool // a grace of 0 was asked for: the hard stop is what was wanted
		applied      time.Duration
		started      time.Time
		deadline     time.Time
		resendT      Timer
		deadlineT    Timer
		resendC      <-chan time.Time
		deadlineC    <-chan time.Time
		ctxDone      = ctx.Done()
	)
	defer func() {
		if resendT != nil {
			resendT.Stop()
		}
		if deadlineT != nil {
			deadlineT.Stop()
		}
	}()
	stopNow := func(why string) {
		if hardStopped {
			return
		}
		hardStopped = true
		resendC, deadlineC = nil, nil
		m.Log.Info("stopping the guest", "why", why)
		if err := m.VM.Stop(); err != nil {
			m.Log.Error("hard stop failed", "err", err)
		}
	}
	// arm makes the shutdown end at d (now: at once).
	arm := func(d time.Time, grace time.Duration) {
		now := m.Clock.Now()
		deadline, applied = d, grace
		m.publish(func(s *control.Status) { s.ShuttingDown, s.Deadline = true, &d })
		if deadlineT != nil {
			deadlineT.Stop()
		}
		if !d.After(now) {
			deadlineC = nil
			stopNow(fmt.Sprintf("grace period of %s ended", applied))
			return
		}
		deadlineT = m.Clock.NewTimer(d.Sub(now))
		deadlineC = deadlineT.C()
	}
	start := func(grace time.Duration) {
		now := m.Clock.Now()
		if grace <= 0 {
			if !shuttingDown {
				started = now
			}
			shuttingDown, stopAsked = true, true
			m.publish(func(s *control.Status) { s.ShuttingDown, s.Deadline = true, &now })
			stopNow("grace period 0")
			return
		}
		if shuttingDown && !now.Add(grace).Before(deadline) {
			return // the running shutdown ends earlier
		}
		first := !shuttingDown
		if first {
			started = now
		}
		shuttingDown = true
		arm(now.Add(grace), grace)
		if first {
			m.Log.Info("graceful shutdown: pressing the power button", "grace", grace)
			if err := m.VM.RequestShutdown(); err != nil {
				m.Log.Warn("power button", "err", err)
			}
			resendT = m.Clock.NewTimer(m.Resend)
			resendC = resendT.C()
		}
	}
	// shorten applies a lowered grace period to a shutdown under way: it ends at its start plus grace.
	shorten := func(grace time.Duration) {
		if !shuttingDown || hardStopped || !started.Add(grace).Before(deadline) {
			return
		}
		if grace == 0 {
			start(0)
			return
		}
		m.Log.Info("grace period lowered: the shutdown ends earlier", "grace", grace)
		arm(started.Add(grace), grace)
	}
	for {
		select {
		case sig := <-signals:
			if shuttingDown && bySignal {
				m.Log.Info("second signal: stopping now", "signal", sig)
				start(0)
			} else {
				m.Log.Info("signal: graceful shutdown", "signal", sig)
				bySignal = true
				start(m.GracePeriod())
			}
		case r := <-m.reqs:
			if r.shutdown {
				start(r.grace)
			} else {
				shorten(r.grace)
			}
		case <-resendC:
			if err := m.VM.RequestShutdown(); err != nil {
				m.Log.Warn("power button", "err", err)
			}
			resendT = m.Clock.NewTimer(m.Resend)
			resendC = resendT.C()
		case <-deadlineC:
			stopNow(fmt.Sprintf("grace period of %s ended", applied))
		case <-ctxDone:
			ctxDone = nil
			stopNow("launcher cancelled")
		case e := <-exited:
			o := decide(e, hardStopped, stopAsked, applied)
			m.publish(func(s *control.Status) {
				s.Phase, s.Reason, s.Message, s.Paused, s.ShuttingDown = o.Phase, o.Reason, o.Message, false, false
			})
			m.Log.Info("guest ended", "phase", o.Phase, "reason", o.Reason, "message", o.Message)
			return o
		}
	}
}

func (m *Manager) publish(f func(*control.Status)) {
	if m.Board != nil {
		m.Board.Update(f)
	}
}

func decide(e Exit, hardStopped, stopAsked bool, grace time.Duration) Outcome {
	switch e.Kind {
	case Poweroff:
		return Outcome{Phase: control.Succeeded, Reason: "Shutdown", Message: "the guest powered off", ExitCode: 0}
	case Stopped:
		if stopAsked {
			return Outcome{Phase: control.Succeeded, Reason: "Destroyed", Message: "stopped at once (grace period 0)", ExitCode: 0}
		}
		if hardStopped && grace > 0 {
			return Outcome{Phase: control.Failed, Reason: "Destroyed",
				Message: fmt.Sprintf("the guest did not power off within the grace period of %s and was stopped", grace), ExitCode: 1}
		}
		return Outcome{Phase: control.Failed, Reason: "Destroyed", Message: cmp.Or(e.Message, "the guest was stopped"), ExitCode: 1}
	case Crashed:
		return Outcome{Phase: control.Failed, Reason: "Crashed", Message: cmp.Or(e.Message, "the guest crashed"), ExitCode: 1}
	default:
		return Outcome{Phase: control.Failed, Reason: "VMMError", Message: cmp.Or(e.Message, "the VMM failed"), ExitCode: 1}
	}
}

// maxTerminationMessage is Kubernetes' limit for one container's termination message.
const maxTerminationMessage = 4096

// WriteTerminationMessage writes o as one JSON line ({"phase","reason","message"}) to path, the
// container's terminationMessagePath (DefaultTerminationLog). The message is shortened to fit
// Kubernetes' 4096-byte limit.
func WriteTerminationMessage(path string, o Outcome) error {
	for {
		b, err := json.Marshal(o)
		if err != nil {
			return err
		}
		if len(b) < maxTerminationMessage || o.Message == "" {
			return os.WriteFile(path, append(b, '\n'), 0o644)
		}
		if len(o.Message) <= 16 {
			o.Message = ""
			continue
		}
		o.Message = strings.ToValidUTF8(o.Message[:len(o.Message)*3/4], "") + "…"
	}
}

// ReadTerminationMessage parses a termination message written by WriteTerminationMessage.
func ReadTerminationMessage(msg string) (Outcome, error) {
	var o Outcome
	if err := json.Unmarshal([]byte(msg), &o); err != nil {
		return Outcome{}, fmt.Errorf("termination message %q: %w", msg, err)
	}
	return o, nil
}
