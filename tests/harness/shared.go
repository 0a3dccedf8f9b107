package harness

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
)

var shared struct {
	opts    Options
	enabled bool
	once    sync.Once
	cp      *ControlPlane
	err     error
}

// RunShared runs the tests of a package with one control plane for all of them; the first call of
// Shared starts it and RunShared stops it at the end (so tests that do not need it, and fuzzing, pay
// nothing). Use it from TestMain: os.Exit(harness.RunShared(m, opts)).
func RunShared(m *testing.M, opts Options) int {
	shared.opts, shared.enabled = opts, true
	code := m.Run()
	if cp := shared.cp; cp != nil {
		if code != 0 {
			fmt.Fprintf(os.Stderr, "control plane logs (%s):\n%s", cp.Dir, cp.LogTails(40))
		}
		cp.Stop()
	}
	return code
}

// Shared returns the control plane of RunShared, starting it on first use. It skips the test when the
// kube binary is missing (fails under KVIRT_REQUIRE_CLUSTER=1) and fails it when the control plane did
// not start.
func Shared(t testing.TB) *ControlPlane {
	t.Helper()
	if !shared.enabled {
		t.Fatalf("harness.Shared called without harness.RunShared in TestMain")
	}
	shared.once.Do(func() {
		if _, err := KubeBinary(shared.opts.Binary); err != nil {
			shared.err = err
			return
		}
		shared.cp, shared.err = Start(shared.opts)
	})
	switch {
	case shared.cp != nil:
		return shared.cp
	case errors.Is(shared.err, ErrNoBinary) && !ClusterRequired():
		t.Skipf("%v", shared.err)
	default:
		t.Fatalf("shared control plane: %v", shared.err)
	}
	return nil
}
