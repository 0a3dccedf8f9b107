package network

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func testLease() *Lease {
	return &Lease{
		MAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, IP: net.IPNet{IP: net.IPv4(10, 1, 2, 3).To4(), Mask: net.CIDRMask(32, 32)},
		Gateway: net.IPv4(169, 254, 1, 1).To4(), ServerIP: net.IPv4(169, 254, 75, 10).To4(), MTU: 1450,
	}
}

func TestLeaseReply(t *testing.T) {
	l := testLease()
	disc, _ := dhcpv4.NewDiscovery(l.MAC)
	offer, err := l.Reply(disc)
	if err != nil || offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.Equal(l.IP.IP) {
		t.Fatalf("offer %v, %v", offer, err)
	}
	// A /32 address with an off-link gateway needs classless static routes.
	if r := offer.ClasslessStaticRoute(); len(r) != 2 || !r[1].Router.Equal(l.Gateway) {
		t.Fatalf("classless routes %v", r)
	}
	req, _ := dhcpv4.NewRequestFromOffer(offer)
	if ack, _ := l.Reply(req); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("ack %v", ack)
	}
	wrong, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 9, 9, 9))))
	if nak, _ := l.Reply(wrong); nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("request for another address: %v", nak)
	}
	other, _ := dhcpv4.NewDiscovery(net.HardwareAddr{2, 0, 0, 0, 0, 1})
	if r, _ := l.Reply(other); r != nil {
		t.Fatal("answered another MAC")
	}
}

func FuzzLeaseReply(f *testing.F) {
	l := testLease()
	disc, _ := dhcpv4.NewDiscovery(l.MAC)
	f.Add(disc.ToBytes())
	offer, _ := l.Reply(disc)
	req, _ := dhcpv4.NewRequestFromOffer(offer)
	f.Add(req.ToBytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		if r, err := l.Reply(m); err == nil && r != nil {
			r.ToBytes()
		}
	})
}
