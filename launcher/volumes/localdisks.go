package volumes

import (
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kvirt/kvirt/devices/virtio/blk"
)

// KubeVirt's layout of volumes inside the launcher pod (pkg/host-disk, pkg/virt-launcher in kubevirt/kubevirt).
const (
	// VMIDisksDir is where filesystem-mode PVCs and hostDisk directories are mounted, one directory per volume.
	VMIDisksDir = "/var/run/kubevirt-private/vmi-disks"
	// PVCDiskFile is the disk image file inside a filesystem-mode PVC.
	PVCDiskFile = "disk.img"
)

// PVCDiskPath is where a filesystem-mode PVC's disk image appears in the pod.
func PVCDiskPath(root, volume string) string {
	return filepath.Join(root, VMIDisksDir, volume, PVCDiskFile)
}

// PVCBlockPath is where a block-mode PVC's device appears in the pod.
func PVCBlockPath(root, volume string) string { return filepath.Join(root, "/dev", volume) }

// HostDiskPath is where a hostDisk whose spec path is hostPath appears in the pod.
func HostDiskPath(root, volume, hostPath string) string {
	return filepath.Join(root, VMIDisksDir, volume, filepath.Base(hostPath))
}

// PrepareEmptyDisk creates a sparse raw file of capacity in workDir/<volume>.img and opens it read-write.
func PrepareEmptyDisk(field, workDir, volume string, capacity resource.Quantity) (*blk.File, error) {
	p := filepath.Join(workDir, volume+".img")
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return nil, fieldErr(field, "create work directory: %w", err)
	}
	os.Remove(p) // an emptyDisk starts empty on every boot
	if err := CreateSparse(field+".capacity", p, capacity); err != nil {
		return nil, err
	}
	b, err := blk.OpenFile(p, blk.FileOptions{})
	if err != nil {
		return nil, fieldErr(field, "%w", err)
	}
	return b, nil
}

// CreateSparse creates a sparse file of capacity bytes. The capacity must be positive, a multiple of 512
// (the sector size the guest sees), and no larger than the filesystem that holds the file.
func CreateSparse(field, p string, capacity resource.Quantity) error {
	n := capacity.Value()
	if capacity.Sign() <= 0 {
		return fieldErr(field, "%s is not a positive number of bytes", capacity.String())
	}
	if n%512 != 0 {
		return fieldErr(field, "%s (%d bytes) is not a multiple of 512 bytes: use a size such as 1Gi", capacity.String(), n)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fieldErr(field, "%w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(p), &st); err == nil {
		total := int64(st.Blocks) * int64(st.Bsize)
		if total > 0 && n > total {
			return fieldErr(field, "%s (%d bytes) is larger than the filesystem holding %s (%d bytes): lower the capacity or give the pod more storage",
				capacity.String(), n, filepath.Dir(p), total)
		}
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fieldErr(field, "create %s: %w", p, err)
	}
	defer f.Close()
	if err := f.Truncate(n); err != nil {
		os.Remove(p)
		return fieldErr(field, "size %s to %d bytes: %w", p, n, err)
	}
	return nil
}
