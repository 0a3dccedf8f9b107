package containerdisk

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// allocated returns the bytes a file occupies on disk.
func allocated(t *testing.T, p string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestCopySparseReadOnly(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	const size = 64 << 20
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.WriteAt(bytes.Repeat([]byte("A"), 4096), 0)
	f.WriteAt(bytes.Repeat([]byte("B"), 100), 40<<20+7)
	f.WriteAt(make([]byte, 1<<20), 50<<20) // written zeros: data to SEEK_DATA, a hole in the copy
	f.WriteAt([]byte("Z"), size-1)
	f.Close()

	var progress bytes.Buffer
	dst, err := Copy(context.Background(), src, filepath.Join(dir, "out", "root"), &progress)
	if err != nil {
		t.Fatal(err)
	}
	if dst != filepath.Join(dir, "out", "root", DiskFile) {
		t.Errorf("dst %s", dst)
	}
	a, _ := os.ReadFile(src)
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("copy differs from the source")
	}
	if got := allocated(t, dst); got > 1<<20 {
		t.Errorf("copy allocates %d bytes; want it sparse (< 1 MiB)", got)
	}
	st, _ := os.Stat(dst)
	if st.Mode().Perm() != 0o444 {
		t.Errorf("mode %v, want 0444", st.Mode().Perm())
	}
	if _, err := os.Stat(dst + ".partial"); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
	if !strings.Contains(progress.String(), "container-disk: copying") || !strings.Contains(progress.String(), "container-disk: done") {
		t.Errorf("progress:\n%s", progress.String())
	}
	if p, ok := LocalDisk(filepath.Join(dir, "out"), "root"); !ok || p != dst {
		t.Errorf("LocalDisk = %q %v", p, ok)
	}
}

func TestCopyCancelledLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "disk.img")
	os.WriteFile(src, bytes.Repeat([]byte("x"), 1<<20), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := filepath.Join(dir, "out")
	if _, err := Copy(ctx, src, out, nil); err == nil {
		t.Fatal("no error after cancel")
	}
	if _, ok := LocalDisk(dir, "out"); ok {
		t.Error("a cancelled copy is visible as a disk")
	}
	if ents, _ := os.ReadDir(out); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

func TestFindDisk(t *testing.T) {
	root := t.TempDir()
	if _, err := FindDisk(root, ""); err == nil || !strings.Contains(err.Error(), "/disk/disk.img") {
		t.Errorf("no /disk: %v", err)
	}
	os.Mkdir(filepath.Join(root, "disk"), 0o755)
	if _, err := FindDisk(root, ""); err == nil || !strings.Contains(err.Error(), "no regular file") {
		t.Errorf("empty /disk: %v", err)
	}
	os.WriteFile(filepath.Join(root, "disk", "a.qcow2"), []byte("a"), 0o644)
	os.Mkdir(filepath.Join(root, "disk", "sub"), 0o755)
	if p, err := FindDisk(root, ""); err != nil || p != filepath.Join(root, "disk", "a.qcow2") {
		t.Errorf("single file: %q %v", p, err)
	}
	os.WriteFile(filepath.Join(root, "disk", "b.img"), []byte("b"), 0o644)
	if _, err := FindDisk(root, ""); err == nil || !strings.Contains(err.Error(), "more than one") {
		t.Errorf("two files: %v", err)
	}
	if p, err := FindDisk(root, "disk/b.img"); err != nil || p != filepath.Join(root, "disk", "b.img") {
		t.Errorf("path: %q %v", p, err)
	}
	if p, err := FindDisk(root, "../../disk/b.img"); err != nil || p != filepath.Join(root, "disk", "b.img") {
		t.Errorf("path escaping the root stays inside: %q %v", p, err)
	}
	if _, err := FindDisk(root, "/disk/sub"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory path: %v", err)
	}
	if _, err := FindDisk(root, "/nope"); err == nil || !strings.Contains(err.Error(), "containerDisk.path") {
		t.Errorf("missing path: %v", err)
	}
}

func TestInstallAndLocalDisk(t *testing.T) {
	dir := t.TempDir()
	p, err := Install(filepath.Join(dir, "bin"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o755 || st.Size() == 0 {
		t.Fatalf("installed helper %v %v", st, err)
	}
	for _, v := range []string{"", ".", "..", "a/b", "missing"} {
		if _, ok := LocalDisk(dir, v); ok {
			t.Errorf("LocalDisk(%q) found a disk", v)
		}
	}
	if _, ok := LocalDisk("", "root"); ok {
		t.Error("LocalDisk without a directory found a disk")
	}
	for ref, local := range map[string]bool{"oci:/x": true, "docker-archive:/x.tar": true, "/x.tar": true,
		"kvirt.io/demo-disk:dev": false, "quay.io/containerdisks/fedora:40": false} {
		if IsLocalReference(ref) != local {
			t.Errorf("IsLocalReference(%q) != %v", ref, local)
		}
	}
}

func TestCopyKernelBoot(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	os.WriteFile(filepath.Join(root, "boot", "vmlinuz"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(root, "boot", "initrd.img"), []byte("initrd"), 0o644)
	disks := t.TempDir()
	if _, _, ok := LocalKernelBoot(disks); ok {
		t.Fatal("kernel found before the copy")
	}
	dst := filepath.Join(disks, KernelBootDir)
	if err := CopyKernelBoot(context.Background(), root, "/boot/nope", "", dst, nil); err == nil || !strings.Contains(err.Error(), "kernelPath") {
		t.Errorf("missing kernel: %v", err)
	}
	if err := CopyKernelBoot(context.Background(), root, "/boot/vmlinuz", "/boot/none", dst, nil); err == nil {
		t.Error("missing initrd accepted")
	}
	if _, _, ok := LocalKernelBoot(disks); ok {
		t.Fatal("a failed copy left a kernel")
	}
	if err := CopyKernelBoot(context.Background(), root, "/boot/vmlinuz", "boot/initrd.img", dst, nil); err != nil {
		t.Fatal(err)
	}
	k, i, ok := LocalKernelBoot(disks)
	if !ok || k != filepath.Join(dst, KernelFile) || i != filepath.Join(dst, InitrdFile) {
		t.Fatalf("LocalKernelBoot = %q %q %v", k, i, ok)
	}
	if b, _ := os.ReadFile(i); string(b) != "initrd" {
		t.Errorf("initrd %q", b)
	}
	if _, _, ok := LocalKernelBoot(""); ok {
		t.Error("found without a directory")
	}
}
