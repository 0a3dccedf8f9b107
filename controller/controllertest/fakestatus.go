package controllertest

import (
	"context"
	"sync"

	"github.com/kvirt/kvirt/controller"
	"k8s.io/apimachinery/pkg/types"
)

// FakeStatusSource is a controller.StatusSource whose launcher states are set by tests (launcher pods do not run
// without a kubelet). States are keyed by namespace/VMI name; Set wakes every open Watch of that VMI.
// The first watch of a new VMI (another UID under the same name) starts with no state, as a fresh
// launcher would.
type FakeStatusSource struct {
	mu      sync.Mutex
	states  map[string]controller.LauncherState
	changed map[string]chan struct{}
	watches map[string]int
	uids    map[string]types.UID
	def     *controller.LauncherState
	cmds    map[string][]controller.LauncherCommand
	cmdErr  error
	// PodIPFree makes the fake reach launchers by pod name as the port-forward source does (the
	// controller watches once the pod is bound, without a pod IP). Set before the controller starts.
	PodIPFree bool
}

// NeedsPodIP is false with PodIPFree: the controller then watches a launcher from the moment its pod
// is bound, as with the port-forward source.
func (f *FakeStatusSource) NeedsPodIP() bool { return !f.PodIPFree }

// SetDefault makes every launcher without a state of its own report s (benchmarks: all guests run).
func (f *FakeStatusSource) SetDefault(s controller.LauncherState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.def = &s
}

// NewFakeStatusSource returns an empty fake.
func NewFakeStatusSource() *FakeStatusSource {
	return &FakeStatusSource{states: map[string]controller.LauncherState{}, changed: map[string]chan struct{}{}, watches: map[string]int{},
		uids: map[string]types.UID{}, cmds: map[string][]controller.LauncherCommand{}}
}

// Command implements controller.LauncherCommander: it records cmd for the VMI (Commands) and answers with
// the error set by FailCommands. It does not change the reported state: tests do, as the launcher would.
func (f *FakeStatusSource) Command(_ context.Context, ep controller.LauncherEndpoint, cmd controller.LauncherCommand) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cmdErr != nil {
		return f.cmdErr
	}
	key := ep.Namespace + "/" + ep.VMIName
	f.cmds[key] = append(f.cmds[key], cmd)
	return nil
}

// FailCommands makes every later Command fail with err (nil: succeed again).
func (f *FakeStatusSource) FailCommands(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmdErr = err
}

// Commands returns the requests the controller sent to the launcher of VMI namespace/name, in order.
func (f *FakeStatusSource) Commands(namespace, name string) []controller.LauncherCommand {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]controller.LauncherCommand(nil), f.cmds[namespace+"/"+name]...)
}

func (f *FakeStatusSource) ch(key string) chan struct{} {
	c := f.changed[key]
	if c == nil {
		c = make(chan struct{})
		f.changed[key] = c
	}
	return c
}

// Set makes the launcher of VMI namespace/name report s.
func (f *FakeStatusSource) Set(namespace, name string, s controller.LauncherState) {
	key := namespace + "/" + name
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states[key] = s
	close(f.ch(key))
	f.changed[key] = make(chan struct{})
}

// Watching reports how many watches of namespace/name are open.
func (f *FakeStatusSource) Watching(namespace, name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.watches[namespace+"/"+name]
}

// Watch implements controller.StatusSource.
func (f *FakeStatusSource) Watch(ctx context.Context, ep controller.LauncherEndpoint, report func(controller.LauncherState)) error {
	key := ep.Namespace + "/" + ep.VMIName
	f.mu.Lock()
	f.watches[key]++
	if f.uids[key] != ep.VMIUID {
		// A new VMI of the same name has a new launcher: it knows nothing of the old one's state.
		delete(f.states, key)
		f.uids[key] = ep.VMIUID
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.watches[key]--
		f.mu.Unlock()
	}()
	for {
		f.mu.Lock()
		s, ok := f.states[key]
		if !ok && f.def != nil {
			s, ok = *f.def, true
		}
		c := f.ch(key)
		f.mu.Unlock()
		if ok {
			report(s)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c:
		}
	}
}
