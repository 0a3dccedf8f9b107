package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// bridgeMAC is the pod bridge's own, fixed, locally administered MAC. A Linux bridge without one takes
// the lowest MAC of its ports, so it changed whenever a pod's veth came or went: pods kept the old MAC for
// 10.244.0.1 in their neighbour tables and could not reach the host (service proxy, kubelet probe
// replies) until it went stale; e2e saw the leading virt-controller cut off for over 10 s and lose
// its Lease.
var bridgeMAC = net.HardwareAddr{0x02, 0x6b, 0x76, 0x69, 0x72, 0x01}

// ensureBridge creates the pod bridge with BridgeAddress/24 before the first pod, so the host has a
// route to the pods. The CNI bridge plugin (isGateway false) adopts the existing bridge and neither
// adds a pod default route nor touches net.ipv4.ip_forward.
func ensureBridge() error {
	br, err := fixedMACBridge(BridgeName, bridgeMAC)
	if err != nil {
		return err
	}
	addr, err := netlink.ParseAddr(BridgeAddress + "/24")
	if err != nil {
		return err
	}
	if err := netlink.AddrReplace(br, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", addr, BridgeName, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("bridge %s up: %w", BridgeName, err)
	}
	// The service range is local to this machine (the service proxy listens on ClusterIPs); the route
	// names the bridge, so it goes when the bridge does.
	_, svc, err := net.ParseCIDR(ServiceCIDR)
	if err != nil {
		return err
	}
	route := &netlink.Route{LinkIndex: br.Attrs().Index, Dst: svc, Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: netlink.SCOPE_HOST}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("local route %s on %s: %w", ServiceCIDR, BridgeName, err)
	}
	return nil
}

// fixedMACBridge returns the bridge name, created if missing, with its MAC set to mac (so that ports
// joining or leaving never change it).
func fixedMACBridge(name string, mac net.HardwareAddr) (netlink.Link, error) {
	br, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if !errors.As(err, &notFound) {
			return nil, fmt.Errorf("bridge %s: %w", name, err)
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.HardwareAddr = name, mac
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if br, err = netlink.LinkByName(name); err != nil {
			return nil, fmt.Errorf("bridge %s: %w", name, err)
		}
	}
	if br.Attrs().HardwareAddr.String() != mac.String() {
		// A bridge from before the fixed MAC (or one that followed its ports).
		if err := netlink.LinkSetHardwareAddr(br, mac); err != nil {
			return nil, fmt.Errorf("set MAC %s on bridge %s: %w", mac, name, err)
		}
	}
	return br, nil
}

// ping sends ICMP echo requests to ip until one is answered or ctx ends.
func ping(ctx context.Context, ip string) error {
	c, err := icmp.ListenPacket("ip4:icmp", BridgeAddress)
	if err != nil {
		return fmt.Errorf("ping %s: %w", ip, err)
	}
	defer c.Close()
	dst := &net.IPAddr{IP: net.ParseIP(ip)}
	id := os.Getpid() & 0xffff
	buf := make([]byte, 1500)
	for seq := 1; ; seq++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("kvirt")}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(b, dst); err != nil {
			return fmt.Errorf("ping %s: %w", ip, err)
		}
		deadline := time.Now().Add(500 * time.Millisecond)
		_ = c.SetReadDeadline(deadline)
		for time.Now().Before(deadline) {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			reply, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || reply.Type != ipv4.ICMPTypeEchoReply || from.String() != ip {
				continue
			}
			if e, ok := reply.Body.(*icmp.Echo); ok && e.ID == id {
				return nil
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("ping %s: no answer: %w", ip, ctx.Err())
		}
	}
}
