package volumes

import (
	"errors"
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

// PreparePVC finds the PVC volume's disk in the pod: the block device /dev/<volume> if present, else the file
// <VMIDisksDir>/<volume>/disk.img. root prefixes both (empty in the pod; a temp dir in tests). field names
// the volume, e.g. "spec.volumes[2].persistentVolumeClaim".
func PreparePVC(field, root, volume string, readOnly bool) (*blk.File, error) {
	for _, p := range []string{PVCBlockPath(root, volume), PVCDiskPath(root, volume)} {
		st, err := os.Stat(p)
		if err != nil {
			continue
		}
		if st.IsDir() {
			return nil, fieldErr(field, "%s is a directory: the PVC must hold its disk image as the file %s", p, PVCDiskFile)
		}
		b, err := blk.OpenFile(p, blk.FileOptions{ReadOnly: readOnly})
		if err != nil {
			return nil, fieldErr(field, "%w", err)
		}
		return b, nil
	}
	return nil, fieldErr(field, "neither %s nor %s exists: the claim is not mounted into the pod (for a filesystem-mode PVC put the image at %s inside the volume)",
		PVCBlockPath(root, volume), PVCDiskPath(root, volume), PVCDiskFile)
}

// HostDiskType is spec.volumes[].hostDisk.type.
type HostDiskType string

const (
	HostDiskExists   HostDiskType = "Disk"
	HostDiskOrCreate HostDiskType = "DiskOrCreate"
)

// PrepareHostDisk opens (type Disk) or opens-or-creates (type DiskOrCreate, sparse, capacity bytes) the hostDisk
// at its pod path. capacity may be nil for type Disk; when given for an existing disk it must not exceed it.
func PrepareHostDisk(field, root, volume, hostPath string, typ HostDiskType, capacity *resource.Quantity, readOnly bool) (*blk.File, error) {
	if hostPath == "" {
		return nil, fieldErr(field+".path", "empty: set the disk image path on the node")
	}
	p := HostDiskPath(root, volume, hostPath)
	switch typ {
	case HostDiskExists:
		if _, err := os.Stat(p); err != nil {
			return nil, fieldErr(field+".path", "%s: %v: the disk must exist for type Disk (use type DiskOrCreate with a capacity to create it)", hostPath, err)
		}
	case HostDiskOrCreate:
		if capacity == nil {
			return nil, fieldErr(field+".capacity", "required for type DiskOrCreate")
		}
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			if err := CreateSparse(field+".capacity", p, *capacity); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fieldErr(field+".type", "%q is not supported: use Disk or DiskOrCreate", typ)
	}
	b, err := blk.OpenFile(p, blk.FileOptions{ReadOnly: readOnly})
	if err != nil {
		return nil, fieldErr(field+".path", "%w", err)
	}
	if capacity != nil && capacity.Value() > b.Size() {
		b.Close()
		return nil, fieldErr(field+".capacity", "%s (%d bytes) is larger than the existing disk %s (%d bytes): grow the disk or lower the capacity",
			capacity.String(), capacity.Value(), hostPath, b.Size())
	}
	return b, nil
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
