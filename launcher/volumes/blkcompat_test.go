package volumes

import "github.com/kvirt/kvirt/devices/virtio/blk"

// The backends plug straight into virtio-blk, including its optional discard support.
var (
	_ blk.Backend   = Backend(nil)
	_ blk.Discarder = (*FileBackend)(nil)
	_ blk.Discarder = (*Overlay)(nil)
	_ blk.Discarder = containerDiskBackend{}
)
