package volumes

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kvirt/kvirt/devices/virtio/blk"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Persistent disks: persistentVolumeClaim and hostDisk volumes outlive the pod, so how writes reach them
// matters. Both are opened with devices/virtio/blk.File (vectored I/O, discard, write-zeroes, FLUSH as
// fdatasync) in the disk's cache mode, KubeVirt's spec.domain.devices.disks[].cache:
//
//	none          O_DIRECT: no host page cache. The guest sees a volatile write cache (FLUSH offered);
//	              its flushes are fdatasync on the file or device. KubeVirt's default where O_DIRECT works.
//	writethrough  host page cache, every write made durable (fdatasync) before it completes, so the guest
//	              has nothing to flush. The default where O_DIRECT does not work (tmpfs).
//	writeback     host page cache; the guest's flushes are fdatasync. Fastest; a host crash loses what the
//	              guest wrote since its last flush, exactly as with a disk's own write cache.
//
// `io` (native, threads) is accepted and does not change anything: requests are always served by the
// device's worker goroutines doing positional I/O, which is QEMU's io=threads. io=native (Linux AIO) exists
// in QEMU to avoid its thread pool's cost; kvirt's pool is goroutines already.
//
// disk.img in a Filesystem-mode claim is created sparse when it is missing, at KubeVirt's size
// (pkg/host-disk): the claim's request if smaller than its capacity, else the capacity, aligned down to
// 1 MiB; when the volume has less space free than that (minus MinimumReserveBytes), a shortfall of up to
// LessSpaceToleration percent is accepted and the image takes the space there is (KubeVirt's
// ToleratedSmallPV), a larger one is an error. hostDisk DiskOrCreate is created the same way from its
// capacity.
const (
	// LessSpaceToleration is KubeVirt's default pvc-tolerate-less-space-up-to-percent.
	LessSpaceToleration = 10
	// MinimumReserveBytes is KubeVirt's default minimumReservePVCBytes, kept free on the volume.
	MinimumReserveBytes = 131072
)

// Cache is a disk's cache mode (spec.domain.devices.disks[].cache).
type Cache string

const (
	CacheDefault      Cache = ""
	CacheNone         Cache = "none"
	CacheWriteThrough Cache = "writethrough"
	CacheWriteBack    Cache = "writeback"
)

// PersistentOptions say how a persistent disk is opened.
type PersistentOptions struct {
	ReadOnly bool
	Cache    Cache
}

// PersistentDisk is an opened persistent disk.
type PersistentDisk struct {
	Backend Backend
	// Path is the file or device opened.
	Path string
	// Cache is the mode in effect (the default resolved).
	Cache Cache
	// BlockSize is the logical block size the guest must use (O_DIRECT's alignment), 0 for the default 512.
	BlockSize uint32
	// Warnings are for the user (a disk image smaller than the claim within the toleration).
	Warnings []string
}

// ClaimInfo is what the launcher knows of a volume's claim (the VMI's status.volumeStatus).
type ClaimInfo struct {
	Name     string
	Block    bool
	Requests *resource.Quantity // spec.resources.requests.storage
	Capacity *resource.Quantity // status.capacity.storage (nil while unbound)
}

// ClaimDiskSize is KubeVirt's size of a claim's disk.img: the request when it is smaller than the capacity
// (or there is no capacity), else the capacity, aligned down to 1 MiB.
func ClaimDiskSize(c ClaimInfo) (int64, error) {
	var size int64
	switch {
	case c.Requests != nil && (c.Capacity == nil || c.Capacity.Cmp(*c.Requests) > 0):
		size = c.Requests.Value()
	case c.Capacity != nil:
		size = c.Capacity.Value()
	default:
		return 0, errors.New("the claim states neither a requested size nor a capacity")
	}
	size &^= 1<<20 - 1
	if size <= 0 {
		return 0, errors.New("the claim's size is below 1 MiB")
	}
	return size, nil
}

// PVCLocation is where a claim's disk is: a device (Block mode), a directory holding disk.img (Filesystem
// mode), or, for local runs, a file used as the disk as it is.
type PVCLocation struct {
	Device, Dir, File string
}

// PodPVCLocation is KubeVirt's layout in the launcher pod: /dev/<volume> or VMIDisksDir/<volume>/disk.img
// (root prefixes both; empty in the pod).
func PodPVCLocation(root, volume string) PVCLocation {
	return PVCLocation{Device: PVCBlockPath(root, volume), Dir: filepath.Dir(PVCDiskPath(root, volume))}
}

// LocalPVCLocation maps the path a user named for a claim: a block device, a directory (disk.img inside,
// as in a pod) or a file (the disk itself).
func LocalPVCLocation(p string) (PVCLocation, error) {
	st, err := os.Stat(p)
	if err != nil {
		return PVCLocation{}, err
	}
	switch {
	case st.Mode()&os.ModeDevice != 0:
		return PVCLocation{Device: p}, nil
	case st.IsDir():
		return PVCLocation{Dir: p}, nil
	case st.Mode().IsRegular():
		return PVCLocation{File: p}, nil
	}
	return PVCLocation{}, fmt.Errorf("%s is neither a block device, a directory nor a regular file", p)
}

// PreparePVC opens a claim's disk at loc: the device, the file, or disk.img in the directory, creating
// disk.img (KubeVirt's size, see ClaimDiskSize) when it is missing. field names the volume, e.g.
// "spec.volumes[2].persistentVolumeClaim"; claim may be nil when nothing is known about it (a local run).
func PreparePVC(field string, loc PVCLocation, claim *ClaimInfo, o PersistentOptions) (*PersistentDisk, error) {
	if loc.Device != "" {
		if st, err := os.Stat(loc.Device); err == nil {
			if st.Mode()&os.ModeDevice == 0 {
				return nil, fieldErr(field, "%s is not a block device", loc.Device)
			}
			return openPersistent(field, loc.Device, o, nil)
		}
	}
	if loc.File != "" {
		return openPersistent(field, loc.File, o, nil)
	}
	if claim != nil && claim.Block {
		return nil, fieldErr(field, "the claim %q is in Block mode but %s does not exist: the pod must get it as a volumeDevice at that path", claim.Name, loc.Device)
	}
	if loc.Dir == "" {
		return nil, fieldErr(field, "no location for the claim's disk")
	}
	if st, err := os.Stat(loc.Dir); err != nil || !st.IsDir() {
		return nil, fieldErr(field, "neither %s nor %s exists: the claim is not mounted into the pod (for a filesystem-mode PVC the image is %s inside the volume)",
			loc.Device, filepath.Join(loc.Dir, PVCDiskFile), PVCDiskFile)
	}
	p := filepath.Join(loc.Dir, PVCDiskFile)
	st, err := os.Lstat(p) // not followed: a link in the claim could name any file of the launcher's container
	switch {
	case err == nil && st.Mode()&os.ModeSymlink != 0:
		return nil, fieldErr(field, "%s is a symbolic link, which kvirt does not follow: put the disk image itself in the volume", p)
	case err == nil && st.IsDir():
		return nil, fieldErr(field, "%s is a directory: the PVC must hold its disk image as the file %s", p, PVCDiskFile)
	case err == nil:
		return openPersistent(field, p, o, nil)
	case !errors.Is(err, os.ErrNotExist):
		return nil, fieldErr(field, "%w", err)
	case o.ReadOnly:
		return nil, fieldErr(field, "the claim is read-only and holds no %s: write the disk image into the volume first", PVCDiskFile)
	case claim == nil:
		return nil, fieldErr(field, "%s does not exist and the claim's size is unknown: create the image (e.g. truncate -s 10G %s)", p, p)
	}
	size, err := ClaimDiskSize(*claim)
	if err != nil {
		return nil, fieldErr(field, "cannot create %s for claim %q: %v", PVCDiskFile, claim.Name, err)
	}
	var warnings []string
	if _, warnings, err = createDiskImage(p, size, LessSpaceToleration, MinimumReserveBytes); err != nil {
		return nil, fieldErr(field, "claim %q: %w", claim.Name, err)
	}
	return openPersistent(field, p, o, warnings)
}

// HostDiskType is spec.volumes[].hostDisk.type.
type HostDiskType string

const (
	HostDiskExists   HostDiskType = "Disk"
	HostDiskOrCreate HostDiskType = "DiskOrCreate"
)

// PrepareHostDisk opens (type Disk) or opens-or-creates (type DiskOrCreate, sparse, capacity bytes, with
// KubeVirt's toleration) the hostDisk at p (its path in the pod, or on this machine for a local run).
// capacity may be nil for type Disk; when given for an existing disk it must not exceed it. field names the
// volume's hostDisk, e.g. "spec.volumes[1].hostDisk"; hostPath is the spec's path (for messages).
func PrepareHostDisk(field, p, hostPath string, typ HostDiskType, capacity *resource.Quantity, o PersistentOptions) (*PersistentDisk, error) {
	if hostPath == "" {
		return nil, fieldErr(field+".path", "empty: set the disk image path on the node")
	}
	var warnings []string
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
			n := capacity.Value()
			if capacity.Sign() <= 0 || n%512 != 0 {
				return nil, fieldErr(field+".capacity", "%s is not a positive multiple of 512 bytes: use a size such as 1Gi", capacity.String())
			}
			if _, warnings, err = createDiskImage(p, n, LessSpaceToleration, MinimumReserveBytes); err != nil {
				return nil, fieldErr(field+".capacity", "%w", err)
			}
		}
	default:
		return nil, fieldErr(field+".type", "%q is not supported: use Disk or DiskOrCreate", typ)
	}
	d, err := openPersistent(field+".path", p, o, warnings)
	if err != nil {
		return nil, err
	}
	if capacity != nil && capacity.Value() > d.Backend.Size() {
		d.Backend.Close()
		return nil, fieldErr(field+".capacity", "%s (%d bytes) is larger than the existing disk %s (%d bytes): grow the disk or lower the capacity",
			capacity.String(), capacity.Value(), hostPath, d.Backend.Size())
	}
	return d, nil
}

// createDiskImage creates the sparse file p of size bytes, or of the space free in its directory (minus
// reserve) when that is short of size by at most tolerance percent. It returns the size created.
func createDiskImage(p string, size int64, tolerance int, reserve uint64) (int64, []string, error) {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return 0, nil, err
	}
	var warnings []string
	free, err := freeBytes(filepath.Dir(p))
	if err != nil {
		return 0, nil, err
	}
	avail := free - int64(reserve)
	if size > avail {
		tolerated := size * int64(100-tolerance) / 100
		if tolerated > avail {
			return 0, nil, fmt.Errorf("not enough space for %s: %d bytes requested, %d available (%d free, %d reserved), also after a %d%% toleration: give the volume more space",
				p, size, max(avail, 0), free, reserve, tolerance)
		}
		warnings = append(warnings, fmt.Sprintf("ToleratedSmallPV: PV size too small: expected %d B, found %d B. Using it anyway, it is within %d %% toleration", size, avail, tolerance))
		size = avail &^ 511
	}
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o660)
	if err != nil {
		return 0, nil, err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(p)
		return 0, nil, fmt.Errorf("size %s to %d bytes: %w", p, size, err)
	}
	// The new (empty) image and its directory entry are durable before the guest relies on either.
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return 0, nil, fmt.Errorf("create %s: %w", p, err)
	}
	if d, err := os.Open(filepath.Dir(p)); err == nil {
		d.Sync()
		d.Close()
	}
	return size, warnings, nil
}

// freeBytes is the space an unprivileged writer has in dir (a variable for tests).
var freeBytes = func(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// openPersistent opens p in o's cache mode. The default is none where O_DIRECT works, else writethrough
// (KubeVirt's SetDriverCacheMode); an explicit none on storage without O_DIRECT is an error.
func openPersistent(field, p string, o PersistentOptions, warnings []string) (*PersistentDisk, error) {
	mode := o.Cache
	direct := mode == CacheNone || mode == CacheDefault
	f, err := blk.OpenFile(p, blk.FileOptions{ReadOnly: o.ReadOnly, Direct: direct})
	if err != nil && direct && errors.Is(err, unix.EINVAL) {
		if mode == CacheNone {
			return nil, fieldErr(field, "cache mode none needs O_DIRECT, which the filesystem holding %s does not support: use cache: writethrough or writeback", p)
		}
		direct = false
		f, err = blk.OpenFile(p, blk.FileOptions{ReadOnly: o.ReadOnly})
	}
	if err != nil {
		return nil, fieldErr(field, "open %s: %w", p, err)
	}
	if mode == CacheDefault {
		mode = CacheWriteThrough
		if direct {
			mode = CacheNone
		}
	}
	d := &PersistentDisk{Path: p, Cache: mode, Warnings: warnings}
	if direct {
		d.BlockSize = directBlockSize(p)
	}
	if mode == CacheWriteThrough && !o.ReadOnly {
		d.Backend = writeThrough{f}
	} else {
		d.Backend = f
	}
	return d, nil
}

// directBlockSize is the logical block size O_DIRECT I/O on p must be aligned to: the device's logical
// sector size, or the file's direct-I/O offset alignment (statx), 0 (the guest default of 512) when unknown
// or not larger.
func directBlockSize(p string) uint32 {
	var n uint32
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, p, 0, unix.STATX_TYPE|unix.STATX_DIOALIGN, &stx); err == nil && stx.Mask&unix.STATX_DIOALIGN != 0 {
		n = stx.Dio_offset_align
	}
	if n == 0 {
		if f, err := os.Open(p); err == nil {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeDevice != 0 {
				if sz, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil && sz > 0 {
					n = uint32(sz)
				}
			}
			f.Close()
		}
	}
	if n <= 512 || n&(n-1) != 0 || n > 4096 {
		return 0
	}
	return n
}

// rawFile is what a persistent disk's file offers (devices/virtio/blk.File): the backend, vectored I/O,
// discard and write-zeroes.
type rawFile interface {
	Backend
	ReadVAt(bufs [][]byte, off int64) (int, error)
	WriteVAt(bufs [][]byte, off int64) (int, error)
	PunchHole(off, n int64) error
	WriteZeroes(off, n int64) error
}

// writeThrough makes every write durable before it completes (cache: writethrough): the guest sees a disk
// without a volatile cache. Reads go to the file as they are.
type writeThrough struct{ rawFile }

func (w writeThrough) WriteAt(p []byte, off int64) (int, error) {
	n, err := w.rawFile.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	return n, w.rawFile.Sync()
}

func (w writeThrough) WriteVAt(bufs [][]byte, off int64) (int, error) {
	n, err := w.rawFile.WriteVAt(bufs, off)
	if err != nil {
		return n, err
	}
	return n, w.rawFile.Sync()
}

func (w writeThrough) PunchHole(off, n int64) error {
	if err := w.rawFile.PunchHole(off, n); err != nil {
		return err
	}
	return w.rawFile.Sync()
}

func (w writeThrough) WriteZeroes(off, n int64) error {
	if err := w.rawFile.WriteZeroes(off, n); err != nil {
		return err
	}
	return w.rawFile.Sync()
}
