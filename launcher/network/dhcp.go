package network

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/rfc1035label"
)

// Lease is what the DHCP server hands the one guest it serves.
type Lease struct {
	MAC      net.HardwareAddr // only requests from this MAC are answered
	IP       net.IPNet        // guest address and prefix
	Gateway  net.IP           // default router (nil: none)
	ServerIP net.IP           // the server's own address on the bridge (server identifier)
	DNS      []net.IP
	Search   []string
	Hostname string
	MTU      int
}

// infiniteLease is the lease time: the guest keeps its address for the life of the pod (as KubeVirt).
const infiniteLease = time.Duration(0xffffffff) * time.Second

// Reply computes the server's answer to a request: an OFFER for a DISCOVER, an ACK for a REQUEST of the
// leased address (a NAK otherwise), nil for anything else or for another client's MAC.
func (l *Lease) Reply(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	if req == nil || req.OpCode != dhcpv4.OpcodeBootRequest || !bytes.Equal(req.ClientHWAddr, l.MAC) {
		return nil, nil
	}
	var typ dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		want := req.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = req.ClientIPAddr
		}
		typ = dhcpv4.MessageTypeAck
		if want != nil && !want.IsUnspecified() && !want.Equal(l.IP.IP) {
			typ = dhcpv4.MessageTypeNak
		}
	default:
		return nil, nil
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithServerIP(l.ServerIP),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(l.ServerIP)),
	}
	if typ != dhcpv4.MessageTypeNak {
		mods = append(mods,
			dhcpv4.WithYourIP(l.IP.IP),
			dhcpv4.WithOption(dhcpv4.OptSubnetMask(l.IP.Mask)),
			dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(infiniteLease)),
		)
		if l.Gateway != nil {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(l.Gateway)))
			if !l.IP.Contains(l.Gateway) {
				// The gateway is off-link (e.g. a /32 pod address): a route to it first, then the default.
				mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(
					&dhcpv4.Route{Dest: &net.IPNet{IP: l.Gateway.To4(), Mask: net.CIDRMask(32, 32)}, Router: net.IPv4zero},
					&dhcpv4.Route{Dest: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, Router: l.Gateway},
				)))
			}
		}
		if len(l.DNS) > 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(l.DNS...)))
		}
		if len(l.Search) > 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: l.Search})))
		}
		if l.Hostname != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(l.Hostname)))
		}
		if l.MTU > 0 {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, []byte{byte(l.MTU >> 8), byte(l.MTU)})))
		}
	}
	return dhcpv4.NewReplyFromRequest(req, mods...)
}

// DHCPServer answers the guest's DHCP requests on one interface (the bridge) only.
type DHCPServer struct {
	srv  *server4.Server
	done chan struct{}
	err  error

	mu     sync.Mutex
	served int
	lastIP net.IP
}

// StartDHCP listens on UDP port 67 bound to iface (SO_BINDTODEVICE) in the calling thread's network namespace
// and serves lease until Close.
func StartDHCP(iface string, lease Lease, log *slog.Logger) (*DHCPServer, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if lease.IP.IP.To4() == nil || lease.ServerIP.To4() == nil || len(lease.MAC) != 6 {
		return nil, fmt.Errorf("dhcp: lease needs an IPv4 address, a server address and a MAC (got %v, %v, %v)", lease.IP, lease.ServerIP, lease.MAC)
	}
	d := &DHCPServer{done: make(chan struct{})}
	handler := func(conn net.PacketConn, peer net.Addr, req *dhcpv4.DHCPv4) {
		resp, err := lease.Reply(req)
		if err != nil || resp == nil {
			log.Debug("dhcp: request not answered", "type", req.MessageType(), "mac", req.ClientHWAddr.String(), "err", err)
			return
		}
		_, err = conn.WriteTo(resp.ToBytes(), peer)
		log.Info("dhcp: answered", "request", req.MessageType(), "reply", resp.MessageType(), "mac", req.ClientHWAddr.String(), "ip", resp.YourIPAddr.String(), "to", peer.String(), "err", err)
		if err == nil && resp.MessageType() == dhcpv4.MessageTypeAck {
			d.mu.Lock()
			d.served++
			d.lastIP = resp.YourIPAddr
			d.mu.Unlock()
		}
	}
	srv, err := server4.NewServer(iface, &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, handler)
	if err != nil {
		return nil, fmt.Errorf("dhcp: listen on %s: %w", iface, err)
	}
	d.srv = srv
	go func() {
		defer close(d.done)
		err := srv.Serve()
		if !errors.Is(err, net.ErrClosed) {
			d.err = err
		}
	}()
	return d, nil
}

// Acks returns how many ACKs were sent and the last address acknowledged.
func (d *DHCPServer) Acks() (int, net.IP) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.served, d.lastIP
}

// Close stops the server and waits for its loop to end.
func (d *DHCPServer) Close() error {
	d.srv.Close()
	<-d.done
	return d.err
}
