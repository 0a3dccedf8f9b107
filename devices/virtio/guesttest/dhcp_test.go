package guesttest

import (
	"errors"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// dhcpServer answers DISCOVER/REQUEST on iface with one fixed lease (yiaddr, mask, router = the server).
// Its socket must be created inside the tap's network namespace (call newDHCPServer there).
type dhcpServer struct {
	conn             *net.UDPConn
	serverIP, client net.IP
	mask             net.IPMask
	done             chan struct{}
}

func newDHCPServer(iface string, serverIP, client net.IP, mask net.IPMask) (*dhcpServer, error) {
	conn, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{Port: dhcpv4.ServerPort})
	if err != nil {
		return nil, err
	}
	return &dhcpServer{conn: conn, serverIP: serverIP, client: client, mask: mask, done: make(chan struct{})}, nil
}

// serve runs until Close; it reports the number of leases acknowledged through acks.
func (s *dhcpServer) serve(acks chan<- net.HardwareAddr) {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, _, err := s.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		req, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || req.OpCode != dhcpv4.OpcodeBootRequest {
			continue
		}
		var typ dhcpv4.MessageType
		switch req.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			typ = dhcpv4.MessageTypeOffer
		case dhcpv4.MessageTypeRequest:
			typ = dhcpv4.MessageTypeAck
		default:
			continue
		}
		resp, err := dhcpv4.NewReplyFromRequest(req,
			dhcpv4.WithMessageType(typ),
			dhcpv4.WithYourIP(s.client),
			dhcpv4.WithServerIP(s.serverIP),
			dhcpv4.WithNetmask(s.mask),
			dhcpv4.WithRouter(s.serverIP),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.serverIP)),
			dhcpv4.WithLeaseTime(3600),
		)
		if err != nil {
			continue
		}
		_, _ = s.conn.WriteTo(resp.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort})
		if typ == dhcpv4.MessageTypeAck && acks != nil {
			select {
			case acks <- req.ClientHWAddr:
			default:
			}
		}
	}
}

func (s *dhcpServer) Close() {
	s.conn.Close()
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
	}
}
