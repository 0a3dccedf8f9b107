// Package containerdisk is the pod side of containerDisk volumes: how a launcher pod gets a containerDisk
// image pulled by the kubelet (imagePullPolicy, pull secrets and the node's image cache apply, as in
// KubeVirt) and hands its disk to the launcher without any registry access of its own.
//
// The launcher pod (controller/poddisks.go) carries, before the compute container:
//
//  1. an init container from the launcher image, "container-disk-binary", running
//     `virt-launcher container-disk install --to BinDir`: it copies the (static) virt-launcher binary into
//     the emptyDir BinDir, because a containerDisk image holds only /disk/* and nothing to run;
//  2. per containerDisk volume, an init container "volume<name>" whose image IS the containerDisk image,
//     running `BinDir/virt-launcher container-disk copy --to DisksDir/<volume> [--path P]`: it copies the
//     single file under /disk/ (or containerDisk.path) sparsely into the emptyDir DisksDir, as
//     <volume>/disk.img, read-only (mode 0444, written under a temporary name and renamed when complete).
//
// The compute container mounts DisksDir read-only; the launcher (launcher/spec.PrepareDisks) finds each
// volume's disk with LocalDisk and puts its copy-on-write overlay over it, so the guest never writes to the
// copy either.
//
// Decision: init containers that copy, not KubeVirt's sidecar that stays up. KubeVirt's sidecar works
// because the privileged virt-handler bind-mounts the disk out of the sidecar's root filesystem into the
// launcher; kvirt has no privileged node agent, and reaching another container's root through
// /proc/<pid>/root needs a shared PID namespace and ptrace rights. A copy costs the disk's data size in the
// emptyDir and the copy time at start, and in exchange is plain Kubernetes: the pod is Pending with the
// kubelet's own ErrImagePull/ImagePullBackOff reasons until the image is there, and the compute container
// starts only with every disk complete.
package containerdisk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Pod layout shared by the controller (which renders the pod) and the launcher (which reads the disks).
const (
	// BinDir is the emptyDir the launcher image's init container installs the helper into.
	BinDir = "/var/run/kvirt/bin"
	// Helper is the helper's file name in BinDir.
	Helper = "virt-launcher"
	// DisksDir is the emptyDir holding one directory per containerDisk volume.
	DisksDir = "/var/run/kvirt/container-disks"
	// DiskFile is the disk's name inside a volume's directory.
	DiskFile = "disk.img"
	// ImageDiskDir is where a containerDisk image keeps its disk.
	ImageDiskDir = "/disk"
	// KernelBootDir is the directory under DisksDir where the "kernel-boot" init container copies the
	// kernel (KernelFile) and initrd (InitrdFile) of firmware.kernelBoot.container (no volume can have this
	// name: volume names are DNS labels).
	KernelBootDir = ".kernel-boot"
	KernelFile    = "kernel"
	InitrdFile    = "initrd"
)

// LocalKernelBoot returns the kernel and, if copied, the initrd that the pod's kernel-boot init container
// left under disksDir.
func LocalKernelBoot(disksDir string) (kernel, initrd string, ok bool) {
	if disksDir == "" {
		return "", "", false
	}
	dir := filepath.Join(disksDir, KernelBootDir)
	regular := func(p string) bool {
		st, err := os.Stat(p)
		return err == nil && st.Mode().IsRegular()
	}
	kernel = filepath.Join(dir, KernelFile)
	if !regular(kernel) {
		return "", "", false
	}
	if p := filepath.Join(dir, InitrdFile); regular(p) {
		initrd = p
	}
	return kernel, initrd, true
}

// CopyKernelBoot copies the kernel (and the initrd, when initrdPath is set) at their paths inside the image
// whose filesystem is at root into dstDir as KernelFile and InitrdFile, each complete before it appears.
func CopyKernelBoot(ctx context.Context, root, kernelPath, initrdPath, dstDir string, progress io.Writer) error {
	files := [][2]string{{kernelPath, KernelFile}}
	if initrdPath != "" {
		files = append(files, [2]string{initrdPath, InitrdFile})
	}
	if kernelPath == "" {
		return errors.New("kernelBoot.container.kernelPath is empty")
	}
	// Initrd first: the kernel's presence is what marks the copy as complete (LocalKernelBoot).
	for i := len(files) - 1; i >= 0; i-- {
		f := files[i]
		src := filepath.Join(root, path.Clean("/"+f[0]))
		if st, err := os.Stat(src); err != nil || !st.Mode().IsRegular() {
			return fmt.Errorf("kernelBoot.container: %s is not a regular file in the image (%v): check kernelPath/initrdPath", f[0], err)
		}
		if _, err := copyFile(ctx, src, dstDir, f[1], progress); err != nil {
			return err
		}
	}
	return nil
}

// VolumeDir is the directory of volume's disk under disksDir.
func VolumeDir(disksDir, volume string) string { return filepath.Join(disksDir, volume) }

// LocalDisk returns the complete disk of volume under disksDir, if an init container left one there.
func LocalDisk(disksDir, volume string) (string, bool) {
	if disksDir == "" || volume == "" || strings.ContainsAny(volume, "/\x00") || volume == "." || volume == ".." {
		return "", false
	}
	p := filepath.Join(VolumeDir(disksDir, volume), DiskFile)
	st, err := os.Stat(p)
	if err != nil || !st.Mode().IsRegular() {
		return "", false
	}
	return p, true
}

// IsLocalReference reports whether a containerDisk image reference names a file on the launcher's own
// filesystem ("oci:<dir>", "docker-archive:<file>" or an absolute path) rather than an image the kubelet can
// pull; such volumes keep being read by the launcher itself (launcher/volumes).
func IsLocalReference(ref string) bool {
	return strings.HasPrefix(ref, "oci:") || strings.HasPrefix(ref, "docker-archive:") || strings.HasPrefix(ref, "/")
}

// Install copies the running executable (a static binary) to dir/Helper, mode 0755.
func Install(dir string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find my own executable: %w", err)
	}
	src, err := os.Open(self)
	if err != nil {
		return "", fmt.Errorf("open my own executable: %w", err)
	}
	defer src.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s (is the emptyDir mounted?): %w", dir, err)
	}
	dst := filepath.Join(dir, Helper)
	tmp := dst + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		os.Remove(tmp)
		return "", fmt.Errorf("copy %s to %s: %w", self, tmp, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return dst, nil
}

// FindDisk returns the disk file of a containerDisk image whose filesystem is at root ("/" in the
// volume's init container): want (containerDisk.path) when set, else the single regular file in /disk.
func FindDisk(root, want string) (string, error) {
	if want != "" {
		p := filepath.Join(root, path.Clean("/"+want))
		st, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("containerDisk.path %s: %w (check the path inside the image)", want, err)
		}
		if !st.Mode().IsRegular() {
			return "", fmt.Errorf("containerDisk.path %s is not a regular file", want)
		}
		return p, nil
	}
	dir := filepath.Join(root, ImageDiskDir)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("the image has no %s directory (%w): build it with the disk at /disk/disk.img (raw or qcow2)", ImageDiskDir, err)
	}
	var found []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			found = append(found, e.Name())
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no regular file under %s: build the image with the disk at /disk/disk.img (raw or qcow2)", ImageDiskDir)
	case 1:
		return filepath.Join(dir, found[0]), nil
	}
	return "", fmt.Errorf("more than one file under %s (%s): keep exactly one disk there, or set containerDisk.path", ImageDiskDir, strings.Join(found, ", "))
}

// Copy copies src to dstDir/DiskFile sparsely (holes of src stay holes; 64 KiB runs of zeros become holes),
// syncs it, makes it read-only (0444) and renames it into place only when complete. progress, if not nil,
// receives a few plain lines (start, every GiB, end). It returns the destination path.
func Copy(ctx context.Context, src, dstDir string, progress io.Writer) (string, error) {
	return copyFile(ctx, src, dstDir, DiskFile, progress)
}

func copyFile(ctx context.Context, src, dstDir, name string, progress io.Writer) (string, error) {
	if progress == nil {
		progress = io.Discard
	}
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", src)
	}
	if err := os.MkdirAll(dstDir, 0o755); err != nil {
		return "", fmt.Errorf("create %s (is the emptyDir mounted?): %w", dstDir, err)
	}
	dst := filepath.Join(dstDir, name)
	tmp := dst + ".partial"
	out, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	ok := false
	defer func() {
		if !ok {
			out.Close()
			os.Remove(tmp)
		}
	}()
	size := st.Size()
	start := time.Now()
	fmt.Fprintf(progress, "container-disk: copying %s (%s) to %s\n", src, human(size), dst)
	c := copier{ctx: ctx, in: in, out: out, progress: progress, next: 1 << 30, buf: make([]byte, 64<<10)}
	for _, r := range dataRanges(in, size) {
		if err := c.copyRange(r[0], r[1]); err != nil {
			return "", fmt.Errorf("copy %s: %w", src, err)
		}
	}
	if err := out.Truncate(size); err != nil {
		return "", err
	}
	if err := out.Sync(); err != nil {
		return "", err
	}
	if err := out.Chmod(0o444); err != nil {
		return "", err
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	ok = true
	fmt.Fprintf(progress, "container-disk: done: %s of data in %s\n", human(c.written), time.Since(start).Round(time.Millisecond))
	return dst, nil
}

// dataRanges lists [start, end) ranges of f that may hold data, from SEEK_DATA/SEEK_HOLE; where the
// filesystem cannot tell, the whole file.
func dataRanges(f *os.File, size int64) [][2]int64 {
	fd := int(f.Fd())
	var out [][2]int64
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			return append(out, [2]int64{off, size})
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil || hole > size {
			hole = size
		}
		if hole <= data {
			return append(out, [2]int64{data, size})
		}
		out = append(out, [2]int64{data, hole})
		off = hole
	}
	return out
}

type copier struct {
	ctx      context.Context
	in, out  *os.File
	buf      []byte
	progress io.Writer
	written  int64
	next     int64
}

func (c *copier) copyRange(start, end int64) error {
	zero := make([]byte, len(c.buf))
	for off := start; off < end; {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		n := int(min(int64(len(c.buf)), end-off))
		m, err := c.in.ReadAt(c.buf[:n], off)
		if m > 0 && !bytes.Equal(c.buf[:m], zero[:m]) {
			if _, werr := c.out.WriteAt(c.buf[:m], off); werr != nil {
				return werr
			}
			c.written += int64(m)
		}
		off += int64(m)
		if off >= c.next {
			fmt.Fprintf(c.progress, "container-disk: %s copied\n", human(off))
			c.next += 1 << 30
		}
		if err == io.EOF {
			return nil // the file shrank under us; Truncate restores the size seen at start
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
