package network

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"

	"github.com/kvirt/kvirt/devices/virtio/virtionet"
)

// The simulated pod: a "node" namespace (10.10.0.1, the gateway) joined by a veth to the "pod" namespace
// (eth0, 10.10.0.5/24), and a "guest" namespace standing in for the VM, joined to the pod's bridge by a veth
// in place of the tap.
type topo struct {
	node, pod, guest ns.NetNS
	podMAC           net.HardwareAddr
}

var (
	nodeIP = net.ParseIP("10.10.0.1").To4()
	podIP  = net.ParseIP("10.10.0.5").To4()
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespace tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)")
	}
	tp := &topo{podMAC: net.HardwareAddr{0x0a, 0x58, 0x0a, 0x0a, 0, 5}}
	for _, p := range []*ns.NetNS{&tp.node, &tp.pod, &tp.guest} {
		n, err := ns.TempNetNS()
		must(t, err)
		*p = n
		t.Cleanup(func() { n.Close() })
	}
	must(t, tp.pod.Do(func(ns.NetNS) error {
		lo, _ := netlink.LinkByName("lo")
		netlink.LinkSetUp(lo)
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1400, HardwareAddr: tp.podMAC},
			PeerName: "node0", PeerNamespace: netlink.NsFd(int(tp.node.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth: %w", err)
		}
		l, _ := netlink.LinkByName("eth0")
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: podIP, Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: nodeIP})
	}))
	must(t, tp.node.Do(func(ns.NetNS) error {
		lo, _ := netlink.LinkByName("lo")
		netlink.LinkSetUp(lo)
		l, err := netlink.LinkByName("node0")
		if err != nil {
			return err
		}
		netlink.LinkSetMTU(l, 1400)
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP, Mask: net.CIDRMask(24, 32)}}); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	}))
	return tp
}

// plugGuest connects the guest namespace to the pod's bridge with a veth whose guest end has the guest MAC,
// then runs a real DHCP client there and configures the lease it gets.
func (tp *topo) plugGuest(t *testing.T, pn *PodNetwork) *dhcpv4.DHCPv4 {
	t.Helper()
	must(t, tp.pod.Do(func(ns.NetNS) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vm0", MTU: pn.MTU}, PeerName: "eth0",
			PeerNamespace: netlink.NsFd(int(tp.guest.Fd()))}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		l, _ := netlink.LinkByName("vm0")
		br, _ := netlink.LinkByName(BridgeName)
		if err := netlink.LinkSetMaster(l, br); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	}))
	var client *nclient4.Client
	must(t, tp.guest.Do(func(ns.NetNS) error {
		lo, _ := netlink.LinkByName("lo")
		netlink.LinkSetUp(lo)
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetHardwareAddr(l, pn.GuestMAC); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		client, err = nclient4.New("eth0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(5))
		return err
	}))
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lease, err := client.Request(ctx)
	if err != nil {
		t.Fatalf("DHCP in the guest namespace: %v", err)
	}
	ack := lease.ACK
	must(t, tp.guest.Do(func(ns.NetNS) error {
		l, _ := netlink.LinkByName("eth0")
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: ack.YourIPAddr, Mask: ack.SubnetMask()}}); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: ack.Router()[0]})
	}))
	return ack
}

// listen starts a TCP server in n that answers each connection with reply followed by the peer's address.
func listen(t *testing.T, n ns.NetNS, addr, reply string) {
	t.Helper()
	var l net.Listener
	must(t, n.Do(func(ns.NetNS) error {
		var err error
		l, err = net.Listen("tcp4", addr)
		return err
	}))
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s from %s", reply, c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
}

// dial connects from n to addr and returns what the server said.
func dial(n ns.NetNS, addr string) (string, error) {
	var c net.Conn
	err := n.Do(func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, 5*time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func resolvConf(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "resolv.conf")
	must(t, os.WriteFile(p, []byte("search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"), 0o644))
	return p
}

func TestBridgeBinding(t *testing.T) {
	tp := newTopo(t)
	pn, err := Setup(tp.pod, Config{Binding: Bridge, Hostname: "testvmi", ResolvConf: resolvConf(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer pn.Close()
	if !bytes.Equal(pn.GuestMAC, tp.podMAC) {
		t.Fatalf("guest MAC %s, want the pod's %s", pn.GuestMAC, tp.podMAC)
	}
	// KubeVirt's layout: eth0-nic and tap0 in k6t-eth0, a dummy eth0 holding the pod MAC and IP.
	must(t, tp.pod.Do(func(ns.NetNS) error {
		br, err := netlink.LinkByName(BridgeName)
		if err != nil {
			return err
		}
		for _, n := range []string{"eth0-nic", DefaultTap} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if l.Attrs().MasterIndex != br.Attrs().Index {
				return fmt.Errorf("%s is not in %s", n, BridgeName)
			}
			if bytes.Equal(l.Attrs().HardwareAddr, tp.podMAC) {
				return fmt.Errorf("%s still has the guest's MAC", n)
			}
		}
		if !pn.HasDummy {
			t.Log("kernel without the dummy driver: dummy eth0 not checked")
			return nil
		}
		d, err := netlink.LinkByName("eth0")
		if err != nil || d.Type() != "dummy" || !bytes.Equal(d.Attrs().HardwareAddr, tp.podMAC) {
			return fmt.Errorf("dummy eth0: %v %v", d, err)
		}
		addrs, _ := netlink.AddrList(d, netlink.FAMILY_V4)
		if len(addrs) != 1 || !addrs[0].IP.Equal(podIP) {
			return fmt.Errorf("dummy eth0 addresses %v", addrs)
		}
		return nil
	}))
	// The VMM attaches to the tap by name.
	must(t, tp.pod.Do(func(ns.NetNS) error {
		tap, err := virtionet.OpenTap(pn.Tap)
		if err != nil {
			return err
		}
		return tap.Close()
	}))
	ack := tp.plugGuest(t, pn)
	if !ack.YourIPAddr.Equal(podIP) || ack.SubnetMask().String() != net.CIDRMask(24, 32).String() ||
		len(ack.Router()) != 1 || !ack.Router()[0].Equal(nodeIP) {
		t.Fatalf("lease %s/%s via %v, want %s/24 via %s", ack.YourIPAddr, ack.SubnetMask(), ack.Router(), podIP, nodeIP)
	}
	if dns := ack.DNS(); len(dns) != 1 || !dns[0].Equal(net.ParseIP("10.96.0.10")) {
		t.Errorf("DNS %v", dns)
	}
	if s := ack.DomainSearch(); s == nil || strings.Join(s.Labels, " ") != "default.svc.cluster.local svc.cluster.local" {
		t.Errorf("search %v", s)
	}
	if ack.HostName() != "testvmi" {
		t.Errorf("hostname %q", ack.HostName())
	}
	if mtu := ack.GetOneOption(dhcpv4.OptionInterfaceMTU); !bytes.Equal(mtu, []byte{1400 >> 8, 1400 & 0xff}) {
		t.Errorf("MTU option %v, want 1400", mtu)
	}
	if n, ip := pn.DHCP().Acks(); n != 1 || !ip.Equal(podIP) {
		t.Errorf("server acks %d %v", n, ip)
	}
	// The guest reaches the node with the pod IP, and the node reaches the guest at the pod IP.
	listen(t, tp.node, "10.10.0.1:8080", "node")
	if got, err := dial(tp.guest, "10.10.0.1:8080"); err != nil || got != "node from 10.10.0.5" {
		t.Fatalf("guest → node: %q, %v", got, err)
	}
	listen(t, tp.guest, ":22", "guest")
	if got, err := dial(tp.node, "10.10.0.5:22"); err != nil || got != "guest from 10.10.0.1" {
		t.Fatalf("node → guest: %q, %v", got, err)
	}
}

func TestMasqueradeBinding(t *testing.T) {
	tp := newTopo(t)
	pn, err := Setup(tp.pod, Config{Binding: Masquerade, ReservedPorts: []int{8443}, ResolvConf: resolvConf(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer pn.Close()
	ack := tp.plugGuest(t, pn)
	if ack.YourIPAddr.String() != MasqueradeGuestIP || ack.Router()[0].String() != MasqueradeGatewayIP {
		t.Fatalf("lease %s via %v", ack.YourIPAddr, ack.Router())
	}
	// Outbound: masqueraded behind the pod IP.
	listen(t, tp.node, "10.10.0.1:8080", "node")
	if got, err := dial(tp.guest, "10.10.0.1:8080"); err != nil || got != "node from 10.10.0.5" {
		t.Fatalf("guest → node: %q, %v", got, err)
	}
	// Inbound on every port, except the launcher's reserved port.
	listen(t, tp.guest, ":22", "guest")
	listen(t, tp.guest, ":8443", "guest")
	listen(t, tp.pod, "10.10.0.5:8443", "launcher")
	if got, err := dial(tp.node, "10.10.0.5:22"); err != nil || got != "guest from 10.10.0.1" {
		t.Fatalf("node → pod:22: %q, %v", got, err)
	}
	if got, err := dial(tp.node, "10.10.0.5:8443"); err != nil || got != "launcher from 10.10.0.1" {
		t.Fatalf("node → pod:8443 (reserved): %q, %v", got, err)
	}
	// kubectl port-forward connects to 127.0.0.1 inside the pod.
	if got, err := dial(tp.pod, "127.0.0.1:22"); err != nil || !strings.HasPrefix(got, "guest from ") {
		t.Fatalf("pod loopback → guest: %q, %v", got, err)
	}
}

func TestMasqueradeListedPorts(t *testing.T) {
	tp := newTopo(t)
	pn, err := Setup(tp.pod, Config{Binding: Masquerade, Ports: []Port{{Name: "http", Port: 80}}, ResolvConf: resolvConf(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer pn.Close()
	tp.plugGuest(t, pn)
	listen(t, tp.guest, ":80", "web")
	listen(t, tp.guest, ":22", "ssh")
	if got, err := dial(tp.node, "10.10.0.5:80"); err != nil || got != "web from 10.10.0.1" {
		t.Fatalf("listed port 80: %q, %v", got, err)
	}
	if got, err := dial(tp.node, "10.10.0.5:22"); err == nil {
		t.Fatalf("unlisted port 22 reached %q", got)
	}
}

func TestSetupErrors(t *testing.T) {
	tp := newTopo(t)
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Binding: "slirp"}, `binding "slirp" is not supported`},
		{Config{Binding: Bridge, PodInterface: "eth9"}, "pod interface eth9"},
		{Config{Binding: Masquerade, Ports: []Port{{Port: 0}}}, "ports[0].port 0"},
		{Config{Binding: Masquerade, Ports: []Port{{Port: 1, Protocol: "SCTP"}}}, `ports[0].protocol "SCTP"`},
		{Config{Binding: Masquerade, ReservedPorts: []int{8186}, Ports: []Port{{Port: 80}, {Port: 8186, Protocol: "tcp"}}},
			"ports[1].port 8186: TCP port 8186 is reserved for virt-launcher's control API"},
	} {
		if _, err := Setup(tp.pod, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
