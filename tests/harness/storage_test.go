package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// losetup attaches file to a free loop device and returns it.
func losetup(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("losetup", "-f", "--show", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup -f --show %s: %v: %s", file, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

// cluster-down with a block volume still mapped into a pod: the volume's loop device is held open by the
// kubelet's own loop device over its device node (its AttachFileDevice lock), which has to go first, or
// the volume's device stays attached to a deleted file.
func TestDetachLoopsWithKubeletLock(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("no losetup")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "volumes", "pvc-1.img")
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	vol := losetup(t, file)
	lock := losetup(t, vol) // as the kubelet does for a mapped block volume
	if got := loopsUnder(dir); !slices.Equal(got, []string{vol}) {
		t.Fatalf("loopsUnder = %v, want [%s]", got, vol)
	}
	if got := loopsOver(vol); !slices.Equal(got, []string{lock}) {
		t.Fatalf("loopsOver(%s) = %v, want [%s]", vol, got, lock)
	}
	if left := detachLoops(dir); len(left) != 0 {
		t.Fatalf("left attached: %v", left)
	}
	for _, dev := range []string{vol, lock} {
		if b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file")); err == nil {
			t.Errorf("%s still attached to %s", dev, strings.TrimSpace(string(b)))
		}
	}
}
