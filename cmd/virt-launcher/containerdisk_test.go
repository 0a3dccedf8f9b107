package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The init containers' commands, as the launcher pod runs them: install the helper, then copy the image's
// disk with the installed helper.
func TestContainerDiskInstallAndCopy(t *testing.T) {
	bin := launcherBinary(t)
	dir := t.TempDir()
	out, err := exec.Command(bin, "container-disk", "install", "--to", filepath.Join(dir, "bin")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "installed") {
		t.Fatalf("install: %v\n%s", err, out)
	}
	helper := filepath.Join(dir, "bin", "virt-launcher")
	root := filepath.Join(dir, "image")
	os.MkdirAll(filepath.Join(root, "disk"), 0o755)
	disk := bytes.Repeat([]byte("disk"), 1<<18)
	os.WriteFile(filepath.Join(root, "disk", "fedora.qcow2"), disk, 0o444)
	dst := filepath.Join(dir, "disks", "root")
	out, err = exec.Command(helper, "container-disk", "copy", "--root", root, "--to", dst).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "container-disk: done") {
		t.Fatalf("copy: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "disk.img")); err != nil || !bytes.Equal(b, disk) {
		t.Fatalf("copied disk differs: %v", err)
	}
	kdst := filepath.Join(dir, "disks", ".kernel-boot")
	out, err = exec.Command(helper, "container-disk", "copy-kernel", "--root", root, "--to", kdst, "--kernel", "/disk/fedora.qcow2").CombinedOutput()
	if b, rerr := os.ReadFile(filepath.Join(kdst, "kernel")); err != nil || rerr != nil || !bytes.Equal(b, disk) {
		t.Fatalf("copy-kernel: %v %v\n%s", err, rerr, out)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"container-disk", "copy", "--root", root}, 2, "--to DIR is required"},
		{[]string{"container-disk", "copy", "--root", dir, "--to", dst}, 2, "/disk/disk.img"},
		{[]string{"container-disk", "copy", "--root", root, "--path", "/disk/other.img", "--to", dst}, 2, "containerDisk.path"},
		{[]string{"container-disk"}, 2, "install, copy or copy-kernel"},
		{[]string{"container-disk", "copy-kernel", "--to", dst}, 2, "--kernel PATH are required"},
		{[]string{"container-disk", "copy-kernel", "--root", root, "--to", dst, "--kernel", "/boot/vmlinuz"}, 2, "kernelPath"},
	} {
		out, err := exec.Command(helper, tc.args...).CombinedOutput()
		if code := exitCodeOf(err); code != tc.code || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: exit %d %q, want %d mentioning %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}
