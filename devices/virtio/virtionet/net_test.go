package virtionet

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvirt/kvirt/devices/virtio/mmio"
	"github.com/kvirt/kvirt/devices/virtio/queue"
	"github.com/kvirt/kvirt/devices/virtio/virtiotest"
)

// pairBackend is one end of a SOCK_SEQPACKET socketpair: message boundaries like a tap, and the same
// runtime-poller semantics (deadlines, close).
type pairBackend struct {
	f        *os.File
	offloads chan int
}

func (p *pairBackend) Read(b []byte) (int, error)        { return p.f.Read(b) }
func (p *pairBackend) SetReadDeadline(t time.Time) error { return p.f.SetReadDeadline(t) }
func (p *pairBackend) Close() error                      { return p.f.Close() }
func (p *pairBackend) SetOffload(flags int) error        { p.offloads <- flags; return nil }
func (p *pairBackend) WriteV(bufs [][]byte) (int, error) { return p.f.Write(bytes.Join(bufs, nil)) }

func socketpair(t *testing.T) (*pairBackend, *os.File) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	host := os.NewFile(uintptr(fds[1]), "host")
	t.Cleanup(func() { host.Close() })
	return &pairBackend{f: os.NewFile(uintptr(fds[0]), "dev"), offloads: make(chan int, 8)}, host
}

var testMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}

type nic struct {
	t   *testing.T
	d   *virtiotest.Driver
	tr  *mmio.Transport
	dev *Device
	rx  *virtiotest.VQ
	tx  *virtiotest.VQ
	// posted receive buffers by head
	rxBufs map[uint16][]virtiotest.Buf
	pend   []virtiotest.Used // reaped, not consumed
}

// used returns k receive completions in order.
func (n *nic) used(k int, timeout time.Duration) []virtiotest.Used {
	n.t.Helper()
	if len(n.pend) < k {
		more, err := n.rx.Wait(k-len(n.pend), timeout)
		if err != nil {
			n.t.Fatal(err)
		}
		n.pend = append(n.pend, more...)
	}
	us := n.pend[:k]
	n.pend = n.pend[k:]
	return us
}

func newNIC(t *testing.T, be Backend, features uint64) *nic {
	t.Helper()
	dev, err := New(Config{Backend: be, MAC: testMAC, OwnBackend: true, Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	d, tr := virtiotest.Attach(t, dev, features, 64<<20)
	return &nic{t: t, d: d, tr: tr, dev: dev, rx: d.Queues[0], tx: d.Queues[1], rxBufs: map[uint16][]virtiotest.Buf{}}
}

// postRx posts n receive buffers of size bytes (each one chain of one descriptor).
func (n *nic) postRx(count int, size uint32) {
	for i := 0; i < count; i++ {
		b := []virtiotest.Buf{{Addr: n.d.Mem.Alloc(uint64(size), 64), Len: size, Write: true}}
		h, err := n.rx.Add(b)
		if err != nil {
			n.t.Fatal(err)
		}
		n.rxBufs[h] = b
	}
	n.rx.Kick()
}

// recv waits for one frame and returns its vnet header and payload, merging buffers per num_buffers.
func (n *nic) recv(timeout time.Duration) (hdr, frame []byte) {
	n.t.Helper()
	us := n.used(1, timeout)
	var all []byte
	first := n.rxBufs[us[0].Head][0]
	all = append(all, n.d.Mem.Bytes(first.Addr, uint64(us[0].Len))...)
	nb := int(binary.LittleEndian.Uint16(all[10:]))
	if nb > 1 {
		for _, u := range n.used(nb-1, timeout) {
			b := n.rxBufs[u.Head][0]
			all = append(all, n.d.Mem.Bytes(b.Addr, uint64(u.Len))...)
		}
	}
	return all[:VnetHdrLen], all[VnetHdrLen:]
}

// send transmits one frame (header zeroed unless hdr given), split into pieces of at most split bytes.
func (n *nic) send(hdr, frame []byte, split int) {
	n.t.Helper()
	if hdr == nil {
		hdr = make([]byte, VnetHdrLen)
	}
	data := append(append([]byte{}, hdr...), frame...)
	var bufs []virtiotest.Buf
	for len(data) > 0 {
		k := min(split, len(data))
		bufs = append(bufs, virtiotest.Buf{Addr: n.d.Mem.Put(data[:k]), Len: uint32(k)})
		data = data[k:]
	}
	if _, err := n.tx.Add(bufs); err != nil {
		n.t.Fatal(err)
	}
	n.tx.Kick()
	if _, err := n.tx.Wait(1, 10*time.Second); err != nil {
		n.t.Fatal(err)
	}
}

const baseFeatures = 1<<queue.FeatureVersion1 | 1<<queue.FeatureEventIdx | 1<<queue.FeatureIndirectDesc | 1<<FeatureMAC | 1<<FeatureStatus

func TestConfigAndOffloads(t *testing.T) {
	be, _ := socketpair(t)
	n := newNIC(t, be, baseFeatures|1<<FeatureGuestCsum|1<<FeatureGuestTSO4|1<<FeatureCsum)
	if mac := net.HardwareAddr(n.d.ReadConfig(0, 6)); mac.String() != testMAC.String() {
		t.Fatalf("config MAC %s", mac)
	}
	if st := binary.LittleEndian.Uint16(n.d.ReadConfig(6, 2)); st != StatusLinkUp {
		t.Fatalf("status %d", st)
	}
	select {
	case o := <-be.offloads:
		if o != unix.TUN_F_CSUM|unix.TUN_F_TSO4 {
			t.Fatalf("offloads %#x", o)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no TUNSETOFFLOAD at activation")
	}
	n.dev.SetLink(false)
	if st := binary.LittleEndian.Uint16(n.d.ReadConfig(6, 2)); st != 0 {
		t.Fatalf("status after link down %d", st)
	}
	if n.d.Regs.(*mmio.Transport) == nil {
		t.Fatal("no transport")
	}
}

func TestTxRx(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
		bufSize  uint32
	}{
		{"mergeable", baseFeatures | 1<<FeatureMrgRxbuf, 512},
		{"big buffers", baseFeatures, 65562},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be, host := socketpair(t)
			n := newNIC(t, be, tc.features)
			// TX: frames arrive on the host with header, split across descriptors.
			frame := make([]byte, 1514)
			for i := range frame {
				frame[i] = byte(i)
			}
			hdr := []byte{HdrFNeedsCsum, 0, 0, 0, 0, 0, 34, 0, 16, 0, 0, 0}
			n.send(hdr, frame, 100)
			got := make([]byte, 70000)
			host.SetReadDeadline(time.Now().Add(5 * time.Second))
			k, err := host.Read(got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[:k], append(append([]byte{}, hdr...), frame...)) {
				t.Fatalf("host got %d bytes, differs", k)
			}
			// RX: a 3000-byte frame spans 6 buffers of 512 with MRG_RXBUF.
			n.postRx(16, tc.bufSize)
			in := make([]byte, VnetHdrLen+3000)
			for i := VnetHdrLen; i < len(in); i++ {
				in[i] = byte(i * 3)
			}
			in[0] = HdrFDataValid
			if _, err := host.Write(in); err != nil {
				t.Fatal(err)
			}
			h, f := n.recv(10 * time.Second)
			if h[0] != HdrFDataValid || !bytes.Equal(f, in[VnetHdrLen:]) {
				t.Fatalf("received header % x, frame of %d bytes (equal=%v)", h, len(f), bytes.Equal(f, in[VnetHdrLen:]))
			}
			if tc.features&(1<<FeatureMrgRxbuf) == 0 && binary.LittleEndian.Uint16(h[10:]) != 1 {
				t.Fatalf("num_buffers %d without MRG_RXBUF", binary.LittleEndian.Uint16(h[10:]))
			}
			// Frames wait for buffers: send before posting, then post.
			if _, err := host.Write(in[:VnetHdrLen+60]); err != nil {
				t.Fatal(err)
			}
			_, f = n.recv(10 * time.Second)
			if len(f) != 60 {
				t.Fatalf("second frame %d bytes", len(f))
			}
			if n.dev.Stats.RxFrames.Load() != 2 || n.dev.Stats.TxFrames.Load() != 1 {
				t.Fatalf("stats rx %d tx %d", n.dev.Stats.RxFrames.Load(), n.dev.Stats.TxFrames.Load())
			}
		})
	}
}

// A reset while RX is blocked reading the backend returns promptly, and the device works again afterwards.
func TestResetWhileBlocked(t *testing.T) {
	be, host := socketpair(t)
	n := newNIC(t, be, baseFeatures|1<<FeatureMrgRxbuf)
	done := make(chan struct{})
	go func() {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], 0)
		n.tr.Write(mmio.RegStatus, b[:])
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("reset hung with RX blocked")
	}
	if err := n.d.Init(baseFeatures|1<<FeatureMrgRxbuf, 0); err != nil {
		t.Fatal(err)
	}
	n.rx, n.tx = n.d.Queues[0], n.d.Queues[1]
	n.postRx(4, 2048)
	if _, err := host.Write(make([]byte, VnetHdrLen+100)); err != nil {
		t.Fatal(err)
	}
	if _, f := n.recv(10 * time.Second); len(f) != 100 {
		t.Fatalf("frame %d bytes after reset", len(f))
	}
}

// Too-short TX frames are dropped, not fatal.
func TestTxRunt(t *testing.T) {
	be, _ := socketpair(t)
	n := newNIC(t, be, baseFeatures)
	n.send(make([]byte, VnetHdrLen), []byte{1, 2, 3}, 100)
	if n.dev.Stats.TxDropped.Load() != 1 || n.tr.NeedsReset() {
		t.Fatalf("dropped %d needsReset %v", n.dev.Stats.TxDropped.Load(), n.tr.NeedsReset())
	}
}
