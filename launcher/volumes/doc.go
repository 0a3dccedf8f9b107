// Package volumes turns the volumes of a VirtualMachineInstance into block backends the VMM's virtio-blk
// device can use: every raw disk is a devices/virtio/blk.File, the same backend kvirt-vmm's --disk uses,
// and a containerDisk is a copy-on-write Overlay over one. It owns the on-disk layout of every volume kind
// inside the launcher pod:
//
//   - containerDisk: an OCI image holding exactly one disk file under /disk/ (raw or qcow2), read from a
//     registry reference, a local OCI layout directory or a `docker save` tarball with go-containerregistry.
//     The disk is extracted (sparsely) into the work directory, made read-only, and never modified: the guest
//     writes to a copy-on-write Overlay (a sparse overlay file plus an in-memory allocation bitmap). The overlay
//     is chosen over a reflink/sparse copy because it works on every filesystem, costs space only for written
//     blocks, starts instantly for large images, and makes "the base is never written" true by construction
//     (the base is opened O_RDONLY). The overlay is ephemeral, like a containerDisk: it lives as long as the pod.
//     In a launcher pod the kubelet pulls containerDisk images instead (init containers copy each disk into
//     an emptyDir, launcher/containerdisk) and OpenContainerDisk puts the same overlay over that copy; the
//     launcher's own fetch remains for local runs and for oci:/docker-archive: references.
//   - qcow2 (version 2 and 3, zlib-compressed clusters, no encryption, no backing file, no external data file)
//     is read through a read-only QCOW2 backend; writes go to the overlay above it.
//   - emptyDisk: a sparse raw file of `capacity` in the work directory.
//   - cloudInitNoCloud: an ISO 9660 image (Rock Ridge names, volume label "cidata") holding user-data,
//     meta-data (instance-id = VMI UID, local-hostname = VMI name) and, when given, network-config.
//   - persistentVolumeClaim and hostDisk follow KubeVirt's pod layout (pkg/host-disk in kubevirt/kubevirt):
//     a filesystem-mode PVC is the file PVCDiskPath(volume) = /var/run/kubevirt-private/vmi-disks/<volume>/disk.img,
//     created sparse at the claim's size when missing (persistent.go: KubeVirt's size rule, reserve and
//     toleration), a block-mode PVC is the device /dev/<volume>, and a hostDisk with `path: /some/dir/name.img`
//     is mounted at /var/run/kubevirt-private/vmi-disks/<volume>/name.img (HostDiskPath). hostDisk type
//     DiskOrCreate creates a sparse file of `capacity` when it is missing. Both are opened with
//     devices/virtio/blk.File in the disk's cache mode (none = O_DIRECT, writethrough, writeback; see
//     persistent.go); a local run maps a claim to a file, device or directory of its own (PVCLocation).
//
// Every error names the field path of the volume (for example `spec.volumes[1].containerDisk.image: ...`) and
// what to do about it; see FieldError.
package volumes
