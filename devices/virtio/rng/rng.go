// Package rng is virtio-rng (virtio entropy device, type 4): one request queue whose device-writable
// buffers are filled from the host kernel's getrandom(2).
package rng

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/kvirt/kvirt/devices/virtio/mmio"
	"github.com/kvirt/kvirt/devices/virtio/queue"
)

// DeviceID is the virtio entropy device type.
const DeviceID = 4

// QueueSize is the request queue's maximum size.
const QueueSize = 64

// maxPerRequest bounds how much entropy one request gets (the driver asks again for more).
const maxPerRequest = 64 << 10

// Device is a virtio-rng device model.
type Device struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a virtio-rng device.
func New() *Device { return &Device{} }

func (*Device) DeviceID() uint32 { return DeviceID }

// Features: indirect descriptors and event index.
func (*Device) Features() uint64 {
	return 1<<queue.FeatureIndirectDesc | 1<<queue.FeatureEventIdx
}

func (*Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

func (*Device) ConfigSize() int         { return 0 }
func (*Device) ReadConfig(int, []byte)  {}
func (*Device) WriteConfig(int, []byte) {}

// Activate starts the request worker.
func (d *Device) Activate(env *mmio.Env) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.done = cancel, make(chan struct{})
	go func() {
		defer close(d.done)
		env.Serve(ctx, 0, func(c *queue.Chain) error {
			n, err := fill(c.Writable)
			if err != nil {
				return err
			}
			return env.Complete(0, c.Head, uint32(n))
		})
	}()
	return nil
}

func fill(bufs [][]byte) (int, error) {
	total := 0
	for _, b := range bufs {
		if total+len(b) > maxPerRequest {
			b = b[:maxPerRequest-total]
		}
		for len(b) > 0 {
			n, err := unix.Getrandom(b, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return total, fmt.Errorf("virtio-rng: getrandom: %w", err)
			}
			b = b[n:]
			total += n
		}
		if total >= maxPerRequest {
			break
		}
	}
	return total, nil
}

// Reset stops the worker.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cancel != nil {
		d.cancel()
		<-d.done
		d.cancel, d.done = nil, nil
	}
}
