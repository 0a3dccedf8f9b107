package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Locally (no --root) a hostDisk's path is the file on this machine and a claim's disk is named with --pvc;
// every problem is exit 2 with a message naming the volume and what to do. The runs stop at the missing
// --kernel, after the disks were prepared, so no KVM is needed.
func TestRunLocalPersistentDisks(t *testing.T) {
	bin := launcherBinary(t)
	dir := t.TempDir()
	hostDisk := filepath.Join(dir, "data.ext4")
	if err := os.WriteFile(hostDisk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	claimDisk := filepath.Join(dir, "claim.raw")
	if err := os.WriteFile(claimDisk, make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	created := filepath.Join(dir, "new", "created.img")
	vmi := writeFile(t, "vmi.yaml", fmt.Sprintf(`apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: local, namespace: default}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices:
      autoattachPodInterface: false
      disks: [{name: data}, {name: made}, {name: root, cache: writeback}]
  volumes:
  - {name: data, hostDisk: {path: %s, type: Disk}}
  - {name: made, hostDisk: {path: %s, type: DiskOrCreate, capacity: 4Mi}}
  - {name: root, persistentVolumeClaim: {claimName: rootfs}}
`, hostDisk, created))
	run := func(args ...string) (int, string) {
		out, err := exec.Command(bin, append([]string{"run", "-f", vmi, "--kernel", "/nonexistent/never-booted"}, args...)...).CombinedOutput()
		return exitCodeOf(err), string(out)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"claim without --pvc", nil, []string{"spec.volumes[2].persistentVolumeClaim", `claim "rootfs" has no disk on this machine`, "--pvc rootfs=PATH"}},
		{"--pvc of a missing file", []string{"--pvc", "rootfs=" + filepath.Join(dir, "nope")}, []string{"spec.volumes[2].persistentVolumeClaim", "--pvc rootfs=", "no such file"}},
		{"--pvc naming no claim", []string{"--pvc", "rootfs=" + claimDisk, "--pvc", "typo=" + claimDisk}, []string{"--pvc typo", "no persistentVolumeClaim volume with claimName typo"}},
		{"--pvc malformed", []string{"--pvc", "rootfs"}, []string{"want CLAIM=PATH"}},
		{"--pvc with --root", []string{"--pvc", "rootfs=" + claimDisk, "--root", dir}, []string{"--pvc is for local runs"}},
		{"disks prepared", []string{"--pvc", "rootfs=" + claimDisk}, []string{"--kernel", "persistent disk", "path=" + hostDisk, "path=" + claimDisk, "cache=writeback"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := run(tc.args...)
			if code != 2 {
				t.Fatalf("exit %d, want 2\n%s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, "/var/run/kubevirt-private") {
				t.Errorf("a local run looked in the pod layout:\n%s", out)
			}
		})
	}
	if st, err := os.Stat(created); err != nil || st.Size() != 4<<20 {
		t.Errorf("DiskOrCreate at the host path: %v %v", st, err)
	}
}
