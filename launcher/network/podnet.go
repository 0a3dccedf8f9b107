package network

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Binding is how the guest NIC is connected to the pod network (spec.domain.devices.interfaces[].bridge or
// .masquerade).
type Binding string

const (
	Bridge     Binding = "bridge"
	Masquerade Binding = "masquerade"
)

// KubeVirt's names and addresses.
const (
	DefaultPodInterface = "eth0"
	DefaultTap          = "tap0"
	BridgeName          = "k6t-eth0"
	bridgeFakeIP        = "169.254.75.10/32"
	MasqueradeGatewayIP = "10.0.2.1"
	MasqueradeGuestIP   = "10.0.2.2"
	masqueradePrefix    = 24
)

// MasqueradeBridgeMAC is the bridge MAC of the masquerade binding.
var MasqueradeBridgeMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0}

// Port is one entry of spec.domain.devices.interfaces[].ports.
type Port struct {
	Name     string
	Protocol string // "TCP" (default) or "UDP"
	Port     int32
}

// Config describes one VMI interface on the pod network.
type Config struct {
	Binding      Binding
	PodInterface string           // default eth0
	Tap          string           // default tap0
	MAC          net.HardwareAddr // the guest MAC (spec macAddress); default: the pod interface's MAC
	Ports        []Port           // masquerade: forward only these (empty: all ports)
	// ReservedPorts are TCP ports served by the launcher itself on the pod IP (the control API); they are not
	// forwarded to the guest when all ports are.
	ReservedPorts []int
	Hostname      string // DHCP host name (the VMI name)
	Log           *slog.Logger
	ResolvConf    string // default /etc/resolv.conf
}

// PodNetwork is the plumbed interface: what the VMM needs (Tap, GuestMAC, MTU) and the DHCP server.
type PodNetwork struct {
	Tap      string
	GuestMAC net.HardwareAddr
	MTU      int
	Lease    Lease
	PodIP    net.IPNet
	// HasDummy: the bridge binding's dummy eth0 holding the pod IP exists (false when the kernel lacks
	// the dummy driver).
	HasDummy bool

	dhcp *DHCPServer
}

// Close stops the DHCP server. The links and rules die with the pod's network namespace.
func (p *PodNetwork) Close() error {
	if p.dhcp == nil {
		return nil
	}
	return p.dhcp.Close()
}

// DHCP returns the running DHCP server.
func (p *PodNetwork) DHCP() *DHCPServer { return p.dhcp }

// Setup plumbs podNS (the launcher pod's network namespace; in the pod, ns.GetCurrentNS()) for cfg and starts
// the DHCP server on the bridge. Errors say which step failed. When podNS is the current namespace it needs
// CAP_NET_ADMIN (and NET_RAW for DHCP) only, no setns (see Do).
func Setup(podNS ns.NetNS, cfg Config) (*PodNetwork, error) {
	if cfg.PodInterface == "" {
		cfg.PodInterface = DefaultPodInterface
	}
	if cfg.Tap == "" {
		cfg.Tap = DefaultTap
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = "/etc/resolv.conf"
	}
	for i, p := range cfg.Ports {
		if p.Port < 1 || p.Port > 65535 {
			return nil, fmt.Errorf("ports[%d].port %d: must be 1-65535", i, p.Port)
		}
		pr := strings.ToUpper(p.Protocol)
		if pr != "" && pr != "TCP" && pr != "UDP" {
			return nil, fmt.Errorf("ports[%d].protocol %q: only TCP and UDP are supported", i, p.Protocol)
		}
		// A reserved port is the launcher's own (the control API, whose token must never reach the guest).
		if pr != "UDP" && slices.Contains(cfg.ReservedPorts, int(p.Port)) {
			return nil, fmt.Errorf("ports[%d].port %d: TCP port %d is reserved for virt-launcher's control API and cannot be forwarded to the guest; pick another port", i, p.Port, p.Port)
		}
	}
	dns, search := readResolvConf(cfg.ResolvConf)
	var pn *PodNetwork
	err := Do(podNS, func() error {
		var err error
		switch cfg.Binding {
		case Bridge:
			pn, err = setupBridge(cfg)
		case Masquerade:
			pn, err = setupMasquerade(podNS, cfg)
		default:
			return fmt.Errorf("binding %q is not supported: use bridge or masquerade", cfg.Binding)
		}
		if err != nil {
			return err
		}
		pn.Lease.DNS, pn.Lease.Search, pn.Lease.Hostname = dns, search, cfg.Hostname
		pn.dhcp, err = StartDHCP(BridgeName, pn.Lease, cfg.Log)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pod network (%s binding on %s): %w", cfg.Binding, cfg.PodInterface, err)
	}
	return pn, nil
}

// podIface reads the pod interface: link, first IPv4 address, default IPv4 gateway.
func podIface(name string) (netlink.Link, *netlink.Addr, net.IP, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("pod interface %s: %w", name, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("addresses of %s: %w", name, err)
	}
	if len(addrs) == 0 {
		return nil, nil, nil, fmt.Errorf("pod interface %s has no IPv4 address (IPv6-only pods are not supported yet)", name)
	}
	routes, err := netlink.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("routes of %s: %w", name, err)
	}
	var gw net.IP
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) && r.Gw != nil {
			gw = r.Gw
		}
	}
	return link, &addrs[0], gw, nil
}

func isZeroMask(m net.IPMask) bool { ones, _ := m.Size(); return ones == 0 }

func setupBridge(cfg Config) (*PodNetwork, error) {
	link, addr, gw, err := podIface(cfg.PodInterface)
	if err != nil {
		return nil, err
	}
	attrs := link.Attrs()
	mtu := attrs.MTU
	origMAC := attrs.HardwareAddr
	guestMAC := cfg.MAC
	if guestMAC == nil {
		guestMAC = origMAC
	}
	// Take the address off the pod interface, give it a random MAC and the name eth0-nic.
	if err := netlink.AddrDel(link, addr); err != nil {
		return nil, fmt.Errorf("remove %s from %s: %w", addr.IPNet, cfg.PodInterface, err)
	}
	if err := netlink.LinkSetDown(link); err != nil {
		return nil, fmt.Errorf("set %s down: %w", cfg.PodInterface, err)
	}
	nicName := cfg.PodInterface + "-nic"
	if err := netlink.LinkSetName(link, nicName); err != nil {
		return nil, fmt.Errorf("rename %s to %s: %w", cfg.PodInterface, nicName, err)
	}
	if err := netlink.LinkSetHardwareAddr(link, randomMAC()); err != nil {
		return nil, fmt.Errorf("new MAC for %s: %w", nicName, err)
	}
	br, err := makeBridge(mtu, nil)
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetMaster(link, br); err != nil {
		return nil, fmt.Errorf("enslave %s to %s: %w", nicName, BridgeName, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", nicName, err)
	}
	if err := makeTap(cfg.Tap, mtu, br); err != nil {
		return nil, err
	}
	fake, _ := netlink.ParseAddr(bridgeFakeIP)
	if err := netlink.AddrAdd(br, fake); err != nil {
		return nil, fmt.Errorf("address %s on %s: %w", bridgeFakeIP, BridgeName, err)
	}
	// A dummy eth0 keeps the original MAC and address so the pod still reports its IP.
	// Kernels without the dummy driver (CONFIG_DUMMY) skip this: Kubernetes takes the pod IP from the CNI
	// result, not from the interface, so only tools inside the pod notice.
	dummy := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: cfg.PodInterface, HardwareAddr: origMAC, MTU: mtu}}
	hasDummy := true
	if err := netlink.LinkAdd(dummy); errors.Is(err, unix.EOPNOTSUPP) {
		hasDummy = false
	} else if err != nil {
		return nil, fmt.Errorf("dummy %s: %w", cfg.PodInterface, err)
	} else if err := netlink.AddrAdd(dummy, &netlink.Addr{IPNet: addr.IPNet}); err != nil {
		return nil, fmt.Errorf("address %s on dummy %s: %w", addr.IPNet, cfg.PodInterface, err)
	}
	serverIP, _, _ := net.ParseCIDR(bridgeFakeIP)
	return &PodNetwork{
		Tap: cfg.Tap, GuestMAC: guestMAC, MTU: mtu, PodIP: *addr.IPNet, HasDummy: hasDummy,
		Lease: Lease{MAC: guestMAC, IP: *addr.IPNet, Gateway: gw, ServerIP: serverIP, MTU: mtu},
	}, nil
}

func setupMasquerade(podNS ns.NetNS, cfg Config) (*PodNetwork, error) {
	link, addr, _, err := podIface(cfg.PodInterface)
	if err != nil {
		return nil, err
	}
	mtu := link.Attrs().MTU
	guestMAC := cfg.MAC
	if guestMAC == nil {
		guestMAC = link.Attrs().HardwareAddr
	}
	br, err := makeBridge(mtu, MasqueradeBridgeMAC)
	if err != nil {
		return nil, err
	}
	gwAddr, _ := netlink.ParseAddr(fmt.Sprintf("%s/%d", MasqueradeGatewayIP, masqueradePrefix))
	if err := netlink.AddrAdd(br, gwAddr); err != nil {
		return nil, fmt.Errorf("address %s on %s: %w", gwAddr.IPNet, BridgeName, err)
	}
	if err := makeTap(cfg.Tap, mtu, br); err != nil {
		return nil, err
	}
	if err := ensureSysctl("net.ipv4.ip_forward", "net.ipv4.ip_forward"); err != nil {
		return nil, err
	}
	guest := net.ParseIP(MasqueradeGuestIP).To4()
	if err := natRules(podNS, cfg, guest); err != nil {
		return nil, err
	}
	return &PodNetwork{
		Tap: cfg.Tap, GuestMAC: guestMAC, MTU: mtu, PodIP: *addr.IPNet,
		Lease: Lease{
			MAC: guestMAC, IP: net.IPNet{IP: guest, Mask: net.CIDRMask(masqueradePrefix, 32)},
			Gateway: net.ParseIP(MasqueradeGatewayIP).To4(), ServerIP: net.ParseIP(MasqueradeGatewayIP).To4(), MTU: mtu,
		},
	}, nil
}

func makeBridge(mtu int, mac net.HardwareAddr) (netlink.Link, error) {
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU, la.HardwareAddr = BridgeName, mtu, mac
	br := &netlink.Bridge{LinkAttrs: la}
	if err := netlink.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("create bridge %s: %w", BridgeName, err)
	}
	l, err := netlink.LinkByName(BridgeName)
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set %s up: %w", BridgeName, err)
	}
	return l, nil
}

// makeTap creates a persistent tap device (no packet info, vnet header allowed) enslaved to br.
func makeTap(name string, mtu int, br netlink.Link) error {
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = name, mtu
	tap := &netlink.Tuntap{LinkAttrs: la, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR}
	if err := netlink.LinkAdd(tap); err != nil {
		return fmt.Errorf("create tap %s: %w (the pod needs /dev/net/tun: request devices.kubevirt.io/tun)", name, err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("enslave %s to %s: %w", name, BridgeName, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// randomMAC returns a locally administered unicast MAC.
func randomMAC() net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	rand.Read(m)
	m[0] = m[0]&0xfe | 0x02
	return m
}

// readResolvConf returns the IPv4 name servers and search domains of a resolv.conf; a missing file gives none.
func readResolvConf(path string) (dns []net.IP, search []string) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if ip := net.ParseIP(fields[1]).To4(); ip != nil {
				dns = append(dns, ip)
			}
		case "search":
			search = fields[1:]
		}
	}
	return dns, search
}
