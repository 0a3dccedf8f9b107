package virtionet

import (
	"fmt"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// VnetHdrLen is the virtio-net header length with VIRTIO_F_VERSION_1 (num_buffers always present); the tap
// is configured (TUNSETVNETHDRSZ) to use the same header, so frames pass between guest and tap unchanged.
const VnetHdrLen = 12

// Tap is a tap interface opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR. Reads and writes go through the Go
// runtime poller, so a blocked reader can be interrupted (SetReadDeadline) or released by Close.
type Tap struct {
	f    *os.File
	name string
}

// OpenTap attaches to the tap called name in the calling thread's network namespace, creating it (not
// persistent: it disappears when closed) if it does not exist, and sets the link up through netlink.
// It needs CAP_NET_ADMIN (or a tap owned by the caller).
func OpenTap(name string) (*Tap, error) {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("virtio-net: tap name %q must be 1..%d bytes", name, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("virtio-net: open /dev/net/tun: %w (is the tun module loaded and the device passed to the pod?)", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("virtio-net: tap name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("virtio-net: TUNSETIFF %s: %w (a tap of that name in use by another process, or missing CAP_NET_ADMIN)", name, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, VnetHdrLen); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("virtio-net: TUNSETVNETHDRSZ %s: %w", name, err)
	}
	// No receive offloads until the guest negotiates them.
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("virtio-net: TUNSETOFFLOAD %s: %w", name, err)
	}
	t := &Tap{f: os.NewFile(uintptr(fd), "tap:"+name), name: ifr.Name()}
	link, err := netlink.LinkByName(t.name)
	if err == nil {
		err = netlink.LinkSetUp(link)
	}
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("virtio-net: set tap %s up: %w", t.name, err)
	}
	return t, nil
}

// Name is the interface name.
func (t *Tap) Name() string { return t.name }

// SetOffload sets the TUN_F_* offloads the tap may hand us (what the guest accepts on receive).
func (t *Tap) SetOffload(flags int) error {
	sc, err := t.f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := sc.Control(func(fd uintptr) { ierr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, flags) }); err != nil {
		return err
	}
	if ierr != nil {
		return fmt.Errorf("virtio-net: TUNSETOFFLOAD %#x on %s: %w", flags, t.name, ierr)
	}
	return nil
}

// Read reads one frame (vnet header + Ethernet frame), blocking until one arrives, the deadline passes or the
// tap is closed.
func (t *Tap) Read(b []byte) (int, error) { return t.f.Read(b) }

// SetReadDeadline interrupts a blocked Read (time.Now()) or clears the deadline (zero time).
func (t *Tap) SetReadDeadline(d time.Time) error { return t.f.SetReadDeadline(d) }

// WriteV writes one frame given as several buffers (vnet header first) with a single writev.
func (t *Tap) WriteV(bufs [][]byte) (int, error) {
	sc, err := t.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var werr error
	err = sc.Write(func(fd uintptr) bool {
		n, werr = unix.Writev(int(fd), bufs)
		return true // never wait: a full tap queue (EAGAIN) drops the frame, as a NIC would
	})
	if err != nil {
		return 0, err
	}
	return n, werr
}

// Write writes one frame.
func (t *Tap) Write(b []byte) (int, error) { return t.WriteV([][]byte{b}) }

// Close releases the tap (a non-persistent tap disappears).
func (t *Tap) Close() error { return t.f.Close() }
