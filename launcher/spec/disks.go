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
	// (volumes.AccessCredentialsDir) (empty in the pod; a directory in tests or for `virt-launcher run`).
	Root string
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
}

// PrepareDisks prepares every disk of m in order. On error, the disks prepared so far are closed; the error
// names the volume's field.
func PrepareDisks(ctx context.Context, m *Machine, dirs Dirs) ([]PreparedDisk, error) {
	var out []PreparedDisk
	fail := func(err error) ([]PreparedDisk, error) {
		CloseDisks(out)
		return nil, err
	}
	for _, d := range m.Disks {
		var b volumes.Backend
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
			b, err = volumes.PreparePVC(d.VolumeField+".persistentVolumeClaim", dirs.Root, d.Name, d.ReadOnly)
		case HostDisk:
			b, err = volumes.PrepareHostDisk(d.VolumeField+".hostDisk", dirs.Root, d.Name, d.HostPath, d.HostDiskType, d.Capacity, d.ReadOnly)
		default:
			err = fmt.Errorf("%s: volume kind %q not supported", d.VolumeField, d.Kind)
		}
		if err != nil {
			return fail(err)
		}
		out = append(out, PreparedDisk{Disk: d, Backend: b, ReadOnly: d.ReadOnly})
	}
	return out, nil
}

// CloseDisks closes every backend.
func CloseDisks(disks []PreparedDisk) error {
	var errs []error
	for _, d := range disks {
		errs = append(errs, d.Backend.Close())
	}
	return errors.Join(errs...)
}
