package virtionet

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNewNetns runs f on a locked thread inside a fresh network namespace and returns the namespace handle
// (closed at test end; the namespace goes away with its last user).
func inNewNetns(t *testing.T, f func() error) netns.NsHandle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create a network namespace and a tap")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no /dev/net/tun: %v", err)
	}
	type res struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		// The thread ends in the new namespace; never unlocked, so the runtime discards it on exit.
		ns, err := netns.New()
		if err != nil {
			ch <- res{err: err}
			return
		}
		ch <- res{ns, f()}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("in new netns: %v", r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	return r.ns
}

func csum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func ipv4(src, dst net.IP, proto byte, payload []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	h[8] = 64
	h[9] = proto
	copy(h[12:], src.To4())
	copy(h[16:], dst.To4())
	binary.BigEndian.PutUint16(h[10:], csum(h))
	return append(h, payload...)
}

func eth(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	f := append(append(append([]byte{}, dst...), src...), byte(typ>>8), byte(typ))
	return append(f, payload...)
}

// TestTapNetns drives the device with a fake guest against a real tap in a network namespace: ARP, ICMP
// echo both ways through the host kernel, and a UDP datagram from a host socket to the guest.
func TestTapNetns(t *testing.T) {
	hostIP, guestIP := net.IPv4(10, 200, 0, 1), net.IPv4(10, 200, 0, 2)
	var tap *Tap
	var udpFD int
	ns := inNewNetns(t, func() error {
		var err error
		if tap, err = OpenTap("kvtap0"); err != nil {
			return err
		}
		link, err := netlink.LinkByName("kvtap0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: hostIP, Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		// A UDP socket bound in this namespace for host→guest traffic.
		udpFD, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	defer unix.Close(udpFD)
	n := newNIC(t, tap, baseFeatures|1<<FeatureMrgRxbuf|1<<FeatureGuestCsum|1<<FeatureCsum)
	n.postRx(64, 2048)

	// The host's MAC, learned from its ARP reply.
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	arp := make([]byte, 28)
	binary.BigEndian.PutUint16(arp[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(arp[2:], 0x0800) // IPv4
	arp[4], arp[5] = 6, 4
	binary.BigEndian.PutUint16(arp[6:], 1) // request
	copy(arp[8:], testMAC)
	copy(arp[14:], guestIP.To4())
	copy(arp[24:], hostIP.To4())
	n.send(nil, eth(bcast, testMAC, 0x0806, arp), 2048)
	var hostMAC net.HardwareAddr
	var gotEcho, gotUDP, gotEchoReq bool
	deadline := time.Now().Add(20 * time.Second)
	sentPing, sentUDP := false, false
	for !(hostMAC != nil && gotEcho && gotUDP && gotEchoReq) {
		if time.Now().After(deadline) {
			t.Fatalf("timeout: hostMAC=%v echoReply=%v udp=%v echoRequestFromHost=%v", hostMAC, gotEcho, gotUDP, gotEchoReq)
		}
		if hostMAC != nil && !sentPing {
			sentPing = true
			icmp := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}
			icmp = append(icmp, []byte("kvirt ping payload")...)
			binary.BigEndian.PutUint16(icmp[2:], csum(icmp))
			n.send(nil, eth(hostMAC, testMAC, 0x0800, ipv4(guestIP, hostIP, 1, icmp)), 20)
		}
		if hostMAC != nil && !sentUDP {
			sentUDP = true
			// The host already resolved us (it answered our ARP and cached our address).
			sa := &unix.SockaddrInet4{Port: 9999}
			copy(sa.Addr[:], guestIP.To4())
			if err := unix.Sendto(udpFD, []byte("hello guest"), 0, sa); err != nil {
				t.Fatalf("sendto: %v", err)
			}
			// And a ping from the host side: a raw ICMP socket in the namespace.
			inNs(t, ns, func() {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
				if err != nil {
					t.Errorf("raw socket: %v", err)
					return
				}
				defer unix.Close(fd)
				icmp := []byte{8, 0, 0, 0, 0x55, 0x66, 0, 1}
				binary.BigEndian.PutUint16(icmp[2:], csum(icmp))
				if err := unix.Sendto(fd, icmp, 0, sa); err != nil {
					t.Errorf("ping sendto: %v", err)
				}
			})
		}
		hdr, f := n.recv(time.Until(deadline))
		n.postRx(1, 2048)
		if len(f) < 14 {
			continue
		}
		typ := binary.BigEndian.Uint16(f[12:])
		switch {
		case typ == 0x0806 && len(f) >= 42 && binary.BigEndian.Uint16(f[20:]) == 2:
			hostMAC = net.HardwareAddr(append([]byte{}, f[22:28]...))
		case typ == 0x0806 && len(f) >= 42 && binary.BigEndian.Uint16(f[20:]) == 1:
			// The host asks for us: answer.
			rep := append([]byte{}, f[14:42]...)
			binary.BigEndian.PutUint16(rep[6:], 2)
			copy(rep[18:28], rep[8:18])
			copy(rep[8:], testMAC)
			copy(rep[14:], guestIP.To4())
			n.send(nil, eth(net.HardwareAddr(f[6:12]), testMAC, 0x0806, rep), 2048)
		case typ == 0x0800 && len(f) >= 34 && f[23] == 1 && f[34] == 0:
			if !bytes.Contains(f, []byte("kvirt ping payload")) {
				t.Fatal("echo reply without our payload")
			}
			gotEcho = true
		case typ == 0x0800 && len(f) >= 34 && f[23] == 1 && f[34] == 8:
			gotEchoReq = true
		case typ == 0x0800 && len(f) >= 42 && f[23] == 17:
			if !bytes.HasSuffix(f, []byte("hello guest")) {
				t.Fatalf("udp payload % x", f[42:])
			}
			// With GUEST_CSUM the host may leave the checksum to the (virtual) NIC: NEEDS_CSUM then.
			t.Logf("udp vnet header flags %#x", hdr[0])
			gotUDP = true
		}
	}
	if n.tr.NeedsReset() {
		t.Fatal("device needs reset")
	}
}

// inNs runs f on a thread switched into ns.
func inNs(t *testing.T, ns netns.NsHandle, f func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			t.Errorf("setns: %v", err)
			return
		}
		f()
		// Thread stays locked: discarded at goroutine exit, never reused in the wrong namespace.
	}()
	<-done
}
