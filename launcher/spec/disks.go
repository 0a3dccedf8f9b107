package spec

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/kvirt/kvirt/launcher/containerdisk"
	"github.com/kvirt/kvirt/launcher/volumes"
)

// Dirs says where disks live.
type Dirs struct {
	// Work is the launcher's scratch directory (containerDisk extraction and overlays, emptyDisks, cidata);
	// in the pod an emptyDir such as /var/run/kvirt/disks.
	Work string
	// Root prefixes KubeVirt's in-pod paths of PVCs and hostDisks, and kvirt's of accessCredentials Secrets
	// (volumes.AccessCredentialsDir) (empty in the pod; a directory in tests or for `virt-launcher run --root`).
	Root string
	// Local: the launcher runs outside a pod (`virt-launcher run` without --root): a hostDisk's path is the
	// path on this machine, and a claim's disk is the path PVCs names for it.
	Local bool
	// PVCs maps claim names to a local raw image file, block device, or directory holding disk.img
	// (`virt-launcher run --pvc NAME=PATH`).
	PVCs map[string]string
	// ContainerDisk tunes image pulls.
	ContainerDisk volumes.ContainerDiskOptions
	// ContainerDisks is where the launcher pod's init containers copied the containerDisk volumes the kubelet
	// pulled (containerdisk.DisksDir in the pod; empty locally). A volume found there is used as it is; any
	// other containerDisk is fetched by the launcher (registry, oci: layout, docker-archive:).
	ContainerDisks string
}

// PreparedDisk is a disk ready for virtio-blk.
type PreparedDisk struct {
	Disk
	Backend  volumes.Backend
	ReadOnly bool // the device must be presented read-only (VIRTIO_BLK_F_RO)
	// BlockSize is the logical block size to advertise (O_DIRECT's alignment); 0 is virtio-blk's 512.
	BlockSize uint32
	// Path and Cache describe a persistent disk (for the log); Warnings are for the user.
	Path     string
	Cache    volumes.Cache
	Warnings []string
}

// PrepareDisks prepares every disk of m in order. On error, the disks prepared so far are closed; the error
// names the volume's field.
func PrepareDisks(ctx context.Context, m *Machine, dirs Dirs) ([]PreparedDisk, error) {
	var out []PreparedDisk
	fail := func(err error) ([]PreparedDisk, error) {
		CloseDisks(out)
		return nil, err
	}
	if err := unusedPVCs(m, dirs); err != nil {
		return nil, err
	}
	for _, d := range m.Disks {
		var b volumes.Backend
		var pd *volumes.PersistentDisk
		var err error
		work := filepath.Join(dirs.Work, d.Name)
		switch d.Kind {
		case ContainerDisk:
			opts := dirs.ContainerDisk
			opts.Path, opts.PullSecret = d.ImagePath, d.ImagePullSecret
			var cd *volumes.ContainerDisk
			if local, ok := containerdisk.LocalDisk(dirs.ContainerDisks, d.Name); ok {
				cd, err = volumes.OpenContainerDisk(d.VolumeField+".containerDisk", local, work)
			} else {
				cd, err = volumes.PrepareContainerDisk(ctx, d.VolumeField+".containerDisk.image", d.Image, work, opts)
			}
			if err == nil {
				b = cd.Backend
			}
		case CloudInitNoCloud:
			nc := *d.NoCloud
			for _, s := range m.SSHKeySecrets {
				var keys []string
				if keys, err = volumes.ReadSSHPublicKeys(s.Field, dirs.Root, s.Name); err != nil {
					break
				}
				nc.PublicKeys = append(nc.PublicKeys, keys...)
			}
			if err == nil {
				b, err = volumes.PrepareCloudInit(d.VolumeField+".cloudInitNoCloud", work, d.Name, nc)
			}
		case EmptyDisk:
			b, err = volumes.PrepareEmptyDisk(d.VolumeField+".emptyDisk", work, d.Name, *d.Capacity)
		case PVC:
			field := d.VolumeField + ".persistentVolumeClaim"
			var loc volumes.PVCLocation
			if loc, err = dirs.pvcLocation(field, d); err == nil {
				pd, err = volumes.PreparePVC(field, loc, d.Claim, volumes.PersistentOptions{ReadOnly: d.ReadOnly, Cache: d.Cache})
			}
		case HostDisk:
			p := volumes.HostDiskPath(dirs.Root, d.Name, d.HostPath)
			if dirs.Local {
				p = d.HostPath
			}
			pd, err = volumes.PrepareHostDisk(d.VolumeField+".hostDisk", p, d.HostPath, d.HostDiskType, d.Capacity, volumes.PersistentOptions{ReadOnly: d.ReadOnly, Cache: d.Cache})
		default:
			err = fmt.Errorf("%s: volume kind %q not supported", d.VolumeField, d.Kind)
		}
		if err != nil {
			return fail(err)
		}
		p := PreparedDisk{Disk: d, Backend: b, ReadOnly: d.ReadOnly}
		if pd != nil {
			p.Backend, p.BlockSize, p.Path, p.Cache, p.Warnings = pd.Backend, pd.BlockSize, pd.Path, pd.Cache, pd.Warnings
		}
		out = append(out, p)
	}
	return out, nil
}

// pvcLocation is where a claim's disk is: KubeVirt's pod layout (under Root), or for a local run the path
// named with --pvc.
func (dirs Dirs) pvcLocation(field string, d Disk) (volumes.PVCLocation, error) {
	if !dirs.Local {
		return volumes.PodPVCLocation(dirs.Root, d.Name), nil
	}
	p, ok := dirs.PVCs[d.ClaimName]
	if !ok {
		return volumes.PVCLocation{}, &volumes.FieldError{Field: field, Err: fmt.Errorf(
			"claim %q has no disk on this machine: name one with --pvc %s=PATH (a raw image file, a block device, or a directory holding disk.img)", d.ClaimName, d.ClaimName)}
	}
	loc, err := volumes.LocalPVCLocation(p)
	if err != nil {
		return volumes.PVCLocation{}, &volumes.FieldError{Field: field, Err: fmt.Errorf("--pvc %s=%s: %w", d.ClaimName, p, err)}
	}
	return loc, nil
}

// unusedPVCs refuses a --pvc naming no claim of the VMI (most likely a typo).
func unusedPVCs(m *Machine, dirs Dirs) error {
	for name := range dirs.PVCs {
		used := false
		for _, d := range m.Disks {
			used = used || d.Kind == PVC && d.ClaimName == name
		}
		if !used {
			return fmt.Errorf("--pvc %s: the VMI has no persistentVolumeClaim volume with claimName %s", name, name)
		}
	}
	return nil
}

// CloseDisks closes every backend.
func CloseDisks(disks []PreparedDisk) error {
	var errs []error
	for _, d := range disks {
		errs = append(errs, d.Backend.Close())
	}
	return errors.Join(errs...)
}
