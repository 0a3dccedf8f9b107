package volumes

import (
	"io"

	"github.com/kvirt/kvirt/devices/virtio/blk"
)

// Backend is a prepared disk: what the virtio-blk device reads, writes and flushes, its capacity in bytes,
// and Close. Raw disks (PVC, hostDisk, emptyDisk, cloud-init) are a *blk.File; a containerDisk is an Overlay
// whose base is a read-only *blk.File or a QCOW2 over one. Both also implement blk.Discarder and
// blk.VectorIO, so the device offers DISCARD and hands each request's buffers over in one call.
// Implementations are safe for concurrent use.
type Backend interface {
	blk.Backend
	Size() int64
	io.Closer
}
