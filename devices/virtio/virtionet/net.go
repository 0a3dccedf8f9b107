// Package virtionet is virtio-net (virtio network device, type 1) over a tap interface.
//
// Frames pass between the guest and the tap with their 12-byte virtio-net header untouched (the tap is
// opened with IFF_VNET_HDR and TUNSETVNETHDRSZ 12), so checksum and segmentation offloads negotiated with
// the guest (CSUM/HOST_TSO4/HOST_TSO6/HOST_UFO/HOST_ECN from the guest; GUEST_CSUM/GUEST_TSO4/GUEST_TSO6/
// GUEST_UFO/GUEST_ECN towards it, enabled on the tap with TUNSETOFFLOAD) cost nothing here. Mergeable receive
// buffers (MRG_RXBUF) let one large frame span several guest buffers. The MAC comes from the config; the
// link status (STATUS) is up, changeable with SetLink.
//
// Queues: 0 receive, 1 transmit. Two worker goroutines per activation: TX pops chains on kicks and writes
// each frame with one writev straight from guest memory; RX blocks reading the tap, then fills guest
// buffers. Reset stops both (the RX read is interrupted with a deadline); the tap stays open until Close.
package virtionet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvirt/kvirt/devices/virtio/mmio"
	"github.com/kvirt/kvirt/devices/virtio/queue"
)

// DeviceID is the virtio network device type.
const DeviceID = 1

// Feature bits (virtio spec §5.1.3).
const (
	FeatureCsum      = 0
	FeatureGuestCsum = 1
	FeatureMTU       = 3
	FeatureMAC       = 5
	FeatureGuestTSO4 = 7
	FeatureGuestTSO6 = 8
	FeatureGuestECN  = 9
	FeatureGuestUFO  = 10
	FeatureHostTSO4  = 11
	FeatureHostTSO6  = 12
	FeatureHostECN   = 13
	FeatureHostUFO   = 14
	FeatureMrgRxbuf  = 15
	FeatureStatus    = 16
)

// Header flags and GSO types.
const (
	HdrFNeedsCsum = 1
	HdrFDataValid = 2
	GSONone       = 0
	GSOTCPv4      = 1
	GSOUDP        = 3
	GSOTCPv6      = 4
	GSOECN        = 0x80
)

// StatusLinkUp is the config status bit.
const StatusLinkUp = 1

const (
	rxQueue = 0
	txQueue = 1
	// QueueSize is the size of both queues.
	QueueSize = 256
	// maxFrame is the largest frame a tap hands us: 64 KiB GSO packet plus Ethernet header, plus the vnet header.
	maxFrame   = VnetHdrLen + 65535 + 14 + 4
	configSize = 8
)

// Backend is the host side of the link: a *Tap, or a fake in tests.
type Backend interface {
	Read(b []byte) (int, error)
	SetReadDeadline(t time.Time) error
	WriteV(bufs [][]byte) (int, error)
	SetOffload(flags int) error
	Close() error
}

// Config describes one NIC.
type Config struct {
	Backend Backend
	MAC     net.HardwareAddr // 6 bytes; zero means a random locally administered address
	// OwnBackend makes Close close the backend.
	OwnBackend bool
	Name       string // for log messages
}

// Stats are frame counters.
type Stats struct {
	RxFrames, RxBytes, RxDropped atomic.Uint64
	TxFrames, TxBytes, TxDropped atomic.Uint64
}

// Device is a virtio-net device model.
type Device struct {
	cfg    Config
	mac    [6]byte
	linkUp atomic.Bool
	Stats  Stats

	mu      sync.Mutex
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	running bool
	env     *mmio.Env
	closed  bool
	logged  atomic.Bool
}

// New builds a NIC.
func New(cfg Config) (*Device, error) {
	if cfg.Backend == nil {
		return nil, errors.New("virtio-net: no backend")
	}
	if cfg.Name == "" {
		cfg.Name = "virtio-net"
	}
	d := &Device{cfg: cfg}
	switch len(cfg.MAC) {
	case 0:
		if _, err := unix.Getrandom(d.mac[:], 0); err != nil {
			return nil, fmt.Errorf("virtio-net: random MAC: %w", err)
		}
		d.mac[0] = d.mac[0]&^1 | 2 // unicast, locally administered
	case 6:
		if cfg.MAC[0]&1 != 0 {
			return nil, fmt.Errorf("virtio-net: MAC %s is multicast", cfg.MAC)
		}
		copy(d.mac[:], cfg.MAC)
	default:
		return nil, fmt.Errorf("virtio-net: MAC %s is not 6 bytes", cfg.MAC)
	}
	d.linkUp.Store(true)
	return d, nil
}

// MAC is the guest's address.
func (d *Device) MAC() net.HardwareAddr { return append(net.HardwareAddr(nil), d.mac[:]...) }

func (*Device) DeviceID() uint32 { return DeviceID }

// Features offered to the driver.
func (*Device) Features() uint64 {
	var f uint64
	for _, b := range []int{FeatureCsum, FeatureGuestCsum, FeatureMAC, FeatureGuestTSO4, FeatureGuestTSO6,
		FeatureGuestECN, FeatureGuestUFO, FeatureHostTSO4, FeatureHostTSO6, FeatureHostECN, FeatureHostUFO,
		FeatureMrgRxbuf, FeatureStatus, queue.FeatureIndirectDesc, queue.FeatureEventIdx} {
		f |= 1 << b
	}
	return f
}

func (*Device) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize} }
func (*Device) ConfigSize() int         { return configSize }

// ReadConfig serves mac[6] and status.
func (d *Device) ReadConfig(off int, data []byte) {
	var c [configSize]byte
	copy(c[:], d.mac[:])
	if d.linkUp.Load() {
		binary.LittleEndian.PutUint16(c[6:], StatusLinkUp)
	}
	copy(data, c[off:])
}

// WriteConfig: the MAC is read-only in virtio 1.x (VIRTIO_NET_F_CTRL_MAC_ADDR is not offered).
func (*Device) WriteConfig(int, []byte) {}

// SetLink changes the reported link state and tells the guest.
func (d *Device) SetLink(up bool) {
	if d.linkUp.Swap(up) == up {
		return
	}
	d.mu.Lock()
	env := d.env
	d.mu.Unlock()
	if env != nil {
		env.ConfigChanged()
	}
}

func tunOffloads(f uint64) int {
	var o int
	if f&(1<<FeatureGuestCsum) != 0 {
		o |= unix.TUN_F_CSUM
		if f&(1<<FeatureGuestTSO4) != 0 {
			o |= unix.TUN_F_TSO4
		}
		if f&(1<<FeatureGuestTSO6) != 0 {
			o |= unix.TUN_F_TSO6
		}
		if f&(1<<FeatureGuestECN) != 0 && o&(unix.TUN_F_TSO4|unix.TUN_F_TSO6) != 0 {
			o |= unix.TUN_F_TSO_ECN
		}
		if f&(1<<FeatureGuestUFO) != 0 {
			o |= unix.TUN_F_UFO
		}
	}
	return o
}

// Activate configures the tap's offloads for the negotiated features and starts RX and TX.
func (d *Device) Activate(env *mmio.Env) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("virtio-net: device closed")
	}
	if err := d.cfg.Backend.SetOffload(tunOffloads(env.Features)); err != nil {
		// Older kernels refuse UFO; retry without it.
		if err2 := d.cfg.Backend.SetOffload(tunOffloads(env.Features) &^ unix.TUN_F_UFO); err2 != nil {
			return err
		}
	}
	if err := d.cfg.Backend.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("virtio-net: clear read deadline: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.running, d.env = cancel, true, env
	mrg := env.Features&(1<<FeatureMrgRxbuf) != 0
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		env.Serve(ctx, txQueue, func(c *queue.Chain) error { return d.transmit(env, c) })
	}()
	go func() {
		defer d.wg.Done()
		d.receiveLoop(ctx, env, mrg)
	}()
	return nil
}

func (d *Device) logOnce(format string, args ...any) {
	if !d.logged.Swap(true) {
		log.Printf("virtio-net %s: "+format, append([]any{d.cfg.Name}, args...)...)
	}
}

// transmit writes one guest frame to the backend; a bad or undeliverable frame is dropped, not fatal.
func (d *Device) transmit(env *mmio.Env, c *queue.Chain) error {
	n := c.ReadableLen()
	if n < VnetHdrLen+14 || n > maxFrame || len(c.Readable) > 1024 {
		d.Stats.TxDropped.Add(1)
		d.logOnce("tx frame of %d bytes in %d buffers dropped", n, len(c.Readable))
	} else if _, err := d.cfg.Backend.WriteV(c.Readable); err != nil {
		d.Stats.TxDropped.Add(1)
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EIO) {
			d.logOnce("tx: %v", err)
		}
	} else {
		d.Stats.TxFrames.Add(1)
		d.Stats.TxBytes.Add(uint64(n - VnetHdrLen))
	}
	return env.Complete(txQueue, c.Head, 0)
}

// receiveLoop moves frames from the backend to the guest until ctx ends.
func (d *Device) receiveLoop(ctx context.Context, env *mmio.Env, mrg bool) {
	q := env.Queues[rxQueue]
	if !env.Enabled[rxQueue] {
		return
	}
	kick := env.Kicks[rxQueue]
	frame := make([]byte, maxFrame)
	// nextChain pops a receive buffer, waiting for the guest to post one.
	nextChain := func() (*queue.Chain, bool) {
		for {
			c, err := q.Pop()
			if err != nil {
				env.Fail(fmt.Errorf("rx queue: %w", err))
				return nil, false
			}
			if c != nil {
				return c, true
			}
			more, err := q.EnableNotify()
			if err != nil {
				env.Fail(fmt.Errorf("rx queue: %w", err))
				return nil, false
			}
			if more {
				continue
			}
			select {
			case <-ctx.Done():
				return nil, false
			case <-kick:
			}
		}
	}
	for {
		n, err := d.cfg.Backend.Read(frame)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			d.logOnce("rx read: %v", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond): // tap gone down (EIO): retry slowly
			}
			continue
		}
		if n < VnetHdrLen {
			d.Stats.RxDropped.Add(1)
			continue
		}
		pkt := frame[:n]
		var used []queue.Used
		first := [][]byte(nil)
		off := 0
		for off < n {
			c, ok := nextChain()
			if !ok {
				return
			}
			if len(used) == 0 {
				first = c.Writable // holds the header
			}
			w := 0
			for _, b := range c.Writable {
				k := copy(b, pkt[off:])
				off += k
				w += k
				if off == n {
					break
				}
			}
			used = append(used, queue.Used{Head: c.Head, Written: uint32(w)})
			if !mrg {
				break
			}
			if w == 0 {
				// A zero-length receive buffer can make no progress; a well-behaved driver never posts one.
				env.Fail(fmt.Errorf("rx queue: receive buffer %d has no writable space", c.Head))
				return
			}
		}
		if off < n { // without MRG_RXBUF the buffer was too small: drop the frame
			d.Stats.RxDropped.Add(1)
			used[0].Written = 0
		} else {
			nb := uint16(1)
			if mrg {
				nb = uint16(len(used))
			}
			putNumBuffers(first, nb)
			d.Stats.RxFrames.Add(1)
			d.Stats.RxBytes.Add(uint64(n - VnetHdrLen))
		}
		need, err := q.PushBatch(used)
		if err != nil {
			env.Fail(fmt.Errorf("rx queue: %w", err))
			return
		}
		if need {
			if err := env.Interrupt(); err != nil {
				d.logOnce("rx interrupt: %v", err)
			}
		}
	}
}

// putNumBuffers writes the header's num_buffers (bytes 10..11) into the first chain's buffers.
func putNumBuffers(bufs [][]byte, v uint16) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	pos := 0
	for _, x := range bufs {
		for i := range x {
			if pos == 10 || pos == 11 {
				x[i] = b[pos-10]
			}
			pos++
			if pos == 12 {
				return
			}
		}
	}
}

// Reset stops RX and TX.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.running {
		return
	}
	d.cancel()
	_ = d.cfg.Backend.SetReadDeadline(time.Now()) // wake a blocked RX read
	d.wg.Wait()
	d.running = false
	d.env = nil
}

// Close stops the device and closes the backend if owned. Call after closing the transport.
func (d *Device) Close() error {
	d.Reset()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	if d.cfg.OwnBackend {
		return d.cfg.Backend.Close()
	}
	return nil
}
