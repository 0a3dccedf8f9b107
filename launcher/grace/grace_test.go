package grace

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/tests/testenv"
)

// fakeVM records power-button presses and hard stops; a guest that honours the button reports Poweroff on
// the nth press, and every Stop is followed by a Stopped exit, as the VMM does.
type fakeVM struct {
	mu           sync.Mutex
	presses      int
	stops        int
	powerOffAt   int // press number that powers the guest off (0: ignores the button)
	exited       chan Exit
	pressedEvent chan int
}

func newFakeVM(powerOffAt int) *fakeVM {
	return &fakeVM{powerOffAt: powerOffAt, exited: make(chan Exit, 2), pressedEvent: make(chan int, 100)}
}

func (v *fakeVM) RequestShutdown() error {
	v.mu.Lock()
	v.presses++
	n := v.presses
	v.mu.Unlock()
	v.pressedEvent <- n
	if n == v.powerOffAt {
		v.exited <- Exit{Kind: Poweroff}
	}
	return nil
}

func (v *fakeVM) Stop() error {
	v.mu.Lock()
	v.stops++
	v.mu.Unlock()
	v.exited <- Exit{Kind: Stopped}
	return nil
}

func (v *fakeVM) counts() (int, int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.presses, v.stops
}

type run struct {
	vm    *fakeVM
	clock *FakeClock
	m     *Manager
	sigs  chan os.Signal
	out   chan Outcome
	board *control.Board
}

func start(t *testing.T, grace time.Duration, powerOffAt int) *run {
	t.Helper()
	r := &run{vm: newFakeVM(powerOffAt), clock: NewFakeClock(time.Unix(1000, 0)), sigs: make(chan os.Signal, 2),
		out: make(chan Outcome, 1), board: control.NewBoard(control.Status{Phase: control.Running})}
	r.m = &Manager{VM: r.vm, Grace: grace, Clock: r.clock, Board: r.board}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { r.out <- r.m.Run(ctx, r.sigs, r.vm.exited) }()
	return r
}

func (r *run) waitPress(t *testing.T, n int) {
	t.Helper()
	select {
	case got := <-r.vm.pressedEvent:
		if got != n {
			t.Fatalf("press %d, want %d", got, n)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("power button press %d did not happen within 5s", n)
	}
}

func (r *run) outcome(t *testing.T) Outcome {
	t.Helper()
	select {
	case o := <-r.out:
		return o
	case <-time.After(5 * time.Second):
		t.Fatal("no outcome within 5s")
		return Outcome{}
	}
}

func TestGracefulPoweroff(t *testing.T) {
	r := start(t, 30*time.Second, 3) // the guest reacts to the third press (at 10 s)
	r.sigs <- syscall.SIGTERM
	r.waitPress(t, 1)
	st := r.board.Get()
	if !st.ShuttingDown || st.Deadline == nil || !st.Deadline.Equal(time.Unix(1030, 0)) {
		t.Fatalf("board %+v", st)
	}
	for i := 2; i <= 3; i++ {
		if !r.clock.WaitPending(2, 5*time.Second) { // resend + deadline
			t.Fatal("timers not armed")
		}
		r.clock.Advance(DefaultResend)
		r.waitPress(t, i)
	}
	o := r.outcome(t)
	if o.Phase != control.Succeeded || o.Reason != "Shutdown" || o.ExitCode != 0 {
		t.Fatalf("outcome %+v", o)
	}
	if _, stops := r.vm.counts(); stops != 0 {
		t.Fatalf("%d hard stops for a guest that powered off", stops)
	}
	if st := r.board.Get(); st.Phase != control.Succeeded || st.ShuttingDown {
		t.Fatalf("board after %+v", st)
	}
}

func TestIgnoredPowerButtonHardStopAtDeadline(t *testing.T) {
	r := start(t, 12*time.Second, 0)
	r.sigs <- syscall.SIGTERM
	r.waitPress(t, 1)
	for i := 2; i <= 3; i++ { // presses at 5 s and 10 s
		r.clock.WaitPending(2, 5*time.Second)
		r.clock.Advance(5 * time.Second)
		r.waitPress(t, i)
	}
	r.clock.WaitPending(2, 5*time.Second)
	r.clock.Advance(1999 * time.Millisecond) // 11.999 s: no stop yet
	if _, stops := r.vm.counts(); stops != 0 {
		t.Fatal("stopped before the deadline")
	}
	r.clock.Advance(time.Millisecond)
	o := r.outcome(t)
	if o.Phase != control.Failed || o.Reason != "Destroyed" || o.ExitCode != 1 || !strings.Contains(o.Message, "12s") {
		t.Fatalf("outcome %+v", o)
	}
	if presses, stops := r.vm.counts(); presses != 3 || stops != 1 {
		t.Fatalf("presses %d stops %d", presses, stops)
	}
}

func TestZeroGraceStopsAtOnce(t *testing.T) {
	r := start(t, 0, 1)
	r.sigs <- syscall.SIGTERM
	o := r.outcome(t)
	if o.Phase != control.Succeeded || o.Reason != "Destroyed" || o.ExitCode != 0 {
		t.Fatalf("outcome %+v", o)
	}
	if presses, stops := r.vm.counts(); presses != 0 || stops != 1 {
		t.Fatalf("presses %d stops %d", presses, stops)
	}
}

func TestShorterGraceWinsAndSecondSignal(t *testing.T) {
	r := start(t, 60*time.Second, 0)
	r.m.Shutdown(-1) // the VMI's grace: 60 s
	r.waitPress(t, 1)
	r.m.Shutdown(2 * time.Minute) // later deadline: ignored
	r.m.Shutdown(8 * time.Second) // earlier: wins
	testenv.Eventually(t, "deadline moved to 8 s", 5*time.Second, func() (bool, string) {
		d := r.board.Get().Deadline
		return d != nil && d.Equal(time.Unix(1008, 0)), fmt.Sprintf("deadline %v", d)
	})
	r.clock.WaitPending(2, 5*time.Second)
	r.clock.Advance(5 * time.Second)
	r.waitPress(t, 2)
	r.clock.WaitPending(2, 5*time.Second)
	r.clock.Advance(3 * time.Second)
	o := r.outcome(t)
	if o.Phase != control.Failed || !strings.Contains(o.Message, "8s") {
		t.Fatalf("outcome %+v", o)
	}

	r = start(t, 60*time.Second, 0)
	r.sigs <- syscall.SIGINT
	r.waitPress(t, 1)
	r.sigs <- syscall.SIGINT // Ctrl-C twice: stop now
	if o := r.outcome(t); o.Reason != "Destroyed" {
		t.Fatalf("outcome %+v", o)
	}
}

func TestCrashAndVMMError(t *testing.T) {
	r := start(t, 30*time.Second, 0)
	r.vm.exited <- Exit{Kind: Crashed, Message: "Kernel panic - not syncing"}
	if o := r.outcome(t); o.Phase != control.Failed || o.Reason != "Crashed" || o.Message != "Kernel panic - not syncing" || o.ExitCode != 1 {
		t.Fatalf("outcome %+v", o)
	}
	r = start(t, 30*time.Second, 0)
	r.vm.exited <- Exit{Kind: VMMError, Message: "KVM_EXIT_INTERNAL_ERROR"}
	if o := r.outcome(t); o.Reason != "VMMError" {
		t.Fatalf("outcome %+v", o)
	}
}

func TestTerminationMessage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "termination-log")
	o := Outcome{Phase: control.Failed, Reason: "Crashed", Message: strings.Repeat("é", 5000)}
	if err := WriteTerminationMessage(p, o); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if len(b) > maxTerminationMessage {
		t.Fatalf("message is %d bytes", len(b))
	}
	got, err := ReadTerminationMessage(string(b))
	if err != nil || got.Phase != control.Failed || got.Reason != "Crashed" || !strings.HasPrefix(got.Message, "éé") {
		t.Fatalf("read back %+v %v", got, err)
	}
	if lf := LauncherFailed(os.ErrNotExist); lf.ExitCode != 2 || lf.Phase != control.Failed {
		t.Fatalf("%+v", lf)
	}
}

func (r *run) grace(t *testing.T, want int64) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("board grace %d s", want), 5*time.Second, func() (bool, string) {
		g := r.board.Get().GracePeriodSeconds
		return g != nil && *g == want, fmt.Sprintf("grace %v", g)
	})
}

// A grace period lowered during a shutdown (virtctl stop --force --grace-period 30 while the guest
// ignores the button with 600 s left) moves the hard stop to the shutdown's start plus the new grace.
func TestLoweredGraceShortensShutdownUnderWay(t *testing.T) {
	r := start(t, 600*time.Second, 0)
	r.grace(t, 600)
	r.sigs <- syscall.SIGTERM
	r.waitPress(t, 1)
	r.clock.WaitPending(2, 5*time.Second)
	r.clock.Advance(5 * time.Second)
	r.waitPress(t, 2)
	r.m.SetGrace(20 * time.Second) // ends at 1020, 15 s from now
	r.grace(t, 20)
	testenv.Eventually(t, "deadline moved to start + 20 s", 5*time.Second, func() (bool, string) {
		d := r.board.Get().Deadline
		return d != nil && d.Equal(time.Unix(1020, 0)), fmt.Sprintf("deadline %v", d)
	})
	r.m.SetGrace(300 * time.Second) // longer: ignored
	r.clock.WaitPending(2, 5*time.Second)
	r.clock.Advance(5 * time.Second)
	r.waitPress(t, 3)
	r.clock.WaitPending(2, 5*time.Second)
	r.clock.Advance(10 * time.Second) // 1020
	o := r.outcome(t)
	if o.Phase != control.Failed || o.Reason != "Destroyed" || !strings.Contains(o.Message, "20s") {
		t.Fatalf("outcome %+v", o)
	}
	if g := r.board.Get().GracePeriodSeconds; g == nil || *g != 20 {
		t.Fatalf("grace %v after a longer SetGrace, want 20", g)
	}
}

// Lowered below the time the shutdown has run, or to 0, the grace period stops the guest at once.
func TestLoweredGraceStopsAtOnce(t *testing.T) {
	r := start(t, 600*time.Second, 0)
	r.sigs <- syscall.SIGTERM
	r.waitPress(t, 1)
	for i := 2; i <= 3; i++ {
		r.clock.WaitPending(2, 5*time.Second)
		r.clock.Advance(5 * time.Second)
		r.waitPress(t, i)
	}
	r.m.SetGrace(8 * time.Second) // the shutdown started 10 s ago
	o := r.outcome(t)
	if o.Phase != control.Failed || o.Reason != "Destroyed" || !strings.Contains(o.Message, "8s") {
		t.Fatalf("outcome %+v", o)
	}

	r = start(t, 600*time.Second, 0)
	r.sigs <- syscall.SIGTERM
	r.waitPress(t, 1)
	r.m.SetGrace(0) // virtctl stop --force --grace-period=0
	o = r.outcome(t)
	if o.Phase != control.Succeeded || o.Reason != "Destroyed" || o.ExitCode != 0 {
		t.Fatalf("outcome %+v", o)
	}
	if presses, stops := r.vm.counts(); presses != 1 || stops != 1 {
		t.Fatalf("presses %d stops %d", presses, stops)
	}
}

// A grace period lowered before any shutdown is the one the kubelet's SIGTERM gets.
func TestLoweredGraceAppliesToTheNextSignal(t *testing.T) {
	r := start(t, 600*time.Second, 0)
	r.m.SetGrace(5 * time.Second)
	r.grace(t, 5)
	r.sigs <- syscall.SIGTERM
	r.waitPress(t, 1)
	if d := r.board.Get().Deadline; d == nil || !d.Equal(time.Unix(1005, 0)) {
		t.Fatalf("deadline %v, want 5 s after the signal", d)
	}
	r.clock.WaitPending(2, 5*time.Second)
	r.clock.Advance(5 * time.Second)
	if o := r.outcome(t); o.Phase != control.Failed || !strings.Contains(o.Message, "5s") {
		t.Fatalf("outcome %+v", o)
	}

	r = start(t, 600*time.Second, 0)
	r.m.SetGrace(0)
	r.grace(t, 0)
	r.sigs <- syscall.SIGTERM
	if o := r.outcome(t); o.Phase != control.Succeeded || o.Reason != "Destroyed" {
		t.Fatalf("outcome %+v", o)
	}
}

// The controller starts the shutdown through the control API and the kubelet's SIGTERM follows: that
// signal is not a second one (it does not stop the guest); a signal after it is.
func TestSignalAfterControlShutdownIsNotASecondSignal(t *testing.T) {
	r := start(t, 600*time.Second, 0)
	r.m.Shutdown(30 * time.Second)
	r.waitPress(t, 1)
	r.grace(t, 30)
	r.sigs <- syscall.SIGTERM
	r.clock.WaitPending(2, 5*time.Second)
	r.clock.Advance(5 * time.Second)
	r.waitPress(t, 2)
	if _, stops := r.vm.counts(); stops != 0 {
		t.Fatal("the kubelet's SIGTERM after the controller's shutdown stopped the guest")
	}
	if d := r.board.Get().Deadline; d == nil || !d.Equal(time.Unix(1030, 0)) {
		t.Fatalf("deadline %v, want the controller's (start + 30 s)", d)
	}
	r.sigs <- syscall.SIGTERM
	if o := r.outcome(t); o.Phase != control.Succeeded || o.Reason != "Destroyed" {
		t.Fatalf("outcome %+v", o)
	}
}
