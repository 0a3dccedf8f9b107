package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Bad volumes give exit 2 and a message naming the field and what is wrong, before any VM is created:
// an unsupported volume type, a missing image, a corrupt qcow2 (here one the pod's init container copied),
// and a capacity larger than the existing disk.
func TestRunBadVolumes(t *testing.T) {
	bin := launcherBinary(t)
	root := t.TempDir()
	host := filepath.Join(root, "var/run/kubevirt-private/vmi-disks/root/small.img")
	os.MkdirAll(filepath.Dir(host), 0o755)
	os.WriteFile(host, make([]byte, 1<<20), 0o644)
	disks := t.TempDir()
	bad := filepath.Join(disks, "root", "disk.img")
	os.MkdirAll(filepath.Dir(bad), 0o755)
	hdr := make([]byte, 512)
	copy(hdr, "QFI\xfb\x00\x00\x00\x63") // qcow2 magic, version 99
	os.WriteFile(bad, hdr, 0o444)
	vmi := func(volume string) string {
		return fmt.Sprintf(`apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: bad, namespace: default}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices:
      autoattachPodInterface: false
      disks: [{name: root}]
  volumes:
  - name: root
    %s
`, volume)
	}
	for _, tc := range []struct {
		name, volume string
		want         []string
		disks        string
	}{
		{"unsupported volume type", "dataVolume: {name: dv}", []string{"spec.volumes[0].dataVolume", "kvirt does not support"}, ""},
		{"missing image", "containerDisk: {image: docker-archive:/nonexistent/disk.tar}", []string{"spec.volumes[0].containerDisk.image", "no such file"}, ""},
		{"corrupt qcow2", "containerDisk: {image: kvirt.io/never-pulled:1}", []string{"spec.volumes[0].containerDisk", "version 99 not supported"}, disks},
		{"capacity larger than the disk", "hostDisk: {path: /data/small.img, type: DiskOrCreate, capacity: 2Mi}", []string{"spec.volumes[0].hostDisk.capacity", "larger than the existing disk"}, ""},
		{"capacity larger than the filesystem", "emptyDisk: {capacity: 1Ei}", []string{"spec.volumes[0].emptyDisk.capacity", "larger than the filesystem"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(bin, "run", "-q", "-f", writeFile(t, "vmi.yaml", vmi(tc.volume)),
				"--root", root, "--container-disks-dir", tc.disks, "--kernel", "/nonexistent/never-booted").CombinedOutput()
			if code := exitCodeOf(err); code != 2 {
				t.Fatalf("exit %d, want 2\n%s", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
