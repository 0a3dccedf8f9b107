package harness

import (
	"errors"
	"fmt"
	"os"
	"testing"
)

var (
	shared    *ControlPlane
	sharedErr error
)

// RunShared starts one control plane for the whole test binary, runs the tests and stops it. Use it
// from TestMain: os.Exit(harness.RunShared(m, opts)). Tests reach it with Shared(t). When the control
// plane cannot start the tests still run, and Shared skips or fails them with the reason.
func RunShared(m *testing.M, opts Options) int {
	if _, err := KubeBinary(opts.Binary); err != nil {
		sharedErr = err
		return m.Run()
	}
	shared, sharedErr = Start(opts)
	if sharedErr != nil {
		return m.Run()
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "control plane logs (%s):\n%s", shared.Dir, shared.LogTails(40))
	}
	shared.Stop()
	return code
}

// Shared returns the control plane started by RunShared. It skips the test when the kube binary is
// missing (fails under KVIRT_REQUIRE_CLUSTER=1) and fails it when the control plane did not start.
func Shared(t testing.TB) *ControlPlane {
	t.Helper()
	switch {
	case shared != nil:
		return shared
	case errors.Is(sharedErr, ErrNoBinary) && !ClusterRequired():
		t.Skipf("%v", sharedErr)
	case sharedErr != nil:
		t.Fatalf("shared control plane: %v", sharedErr)
	default:
		t.Fatalf("harness.Shared called without harness.RunShared in TestMain")
	}
	return nil
}
