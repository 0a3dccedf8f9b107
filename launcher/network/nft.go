package network

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// NATTable is the nftables table (family ip) holding the masquerade binding's rules.
const NATTable = "kvirt_nat"

func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

func port16(p int) []byte {
	b := make([]byte, 2)
	binary.BigEndian.PutUint16(b, uint16(p))
	return b
}

func cmpMeta(key expr.MetaKey, op expr.CmpOp, data []byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: data}}
}

func cmpIP(offset uint32, ip net.IP) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ip.To4()},
	}
}

func cmpDport(op expr.CmpOp, p int) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: op, Register: 1, Data: port16(p)},
	}
}

func nat(typ expr.NATType, ip net.IP) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: ip.To4()},
		&expr.NAT{Type: typ, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
	}
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// inboundMatches returns one match list per forwarding rule: the listed ports, or every TCP port but the
// reserved ones plus every UDP port.
func inboundMatches(cfg Config) [][]expr.Any {
	tcp := cmpMeta(expr.MetaKeyL4PROTO, expr.CmpOpEq, []byte{unix.IPPROTO_TCP})
	udp := cmpMeta(expr.MetaKeyL4PROTO, expr.CmpOpEq, []byte{unix.IPPROTO_UDP})
	var out [][]expr.Any
	if len(cfg.Ports) == 0 {
		all := tcp
		for _, r := range cfg.ReservedPorts {
			all = concat(all, cmpDport(expr.CmpOpNeq, r))
		}
		return [][]expr.Any{all, udp}
	}
	for _, p := range cfg.Ports {
		proto := tcp
		if strings.EqualFold(p.Protocol, "UDP") {
			proto = udp
		}
		out = append(out, concat(proto, cmpDport(expr.CmpOpEq, int(p.Port))))
	}
	return out
}

// natRules installs the masquerade binding's table in podNS:
//
//	prerouting:  iifname <pod if> <ports> dnat to 10.0.2.2          (inbound to the guest)
//	output:      ip daddr 127.0.0.1 <ports> dnat to 10.0.2.2        (kubectl port-forward enters on loopback)
//	postrouting: ip saddr 10.0.2.2 oifname != k6t-eth0 masquerade   (guest to the outside)
//	             ip saddr 127.0.0.1 oifname k6t-eth0 snat to 10.0.2.1
func natRules(podNS ns.NetNS, cfg Config, guest net.IP) error {
	// Called inside Do: when podNS is the thread's namespace already, no setns (no CAP_SYS_ADMIN in a pod).
	var opts []nftables.ConnOption
	if same, err := isCurrentThreadNS(podNS); err != nil || !same {
		opts = append(opts, nftables.WithNetNSFd(int(podNS.Fd())))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: NATTable})
	chain := func(name string, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeNAT, Hooknum: hook, Priority: prio})
	}
	pre := chain("prerouting", nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
	out := chain("output", nftables.ChainHookOutput, nftables.ChainPriorityNATDest)
	post := chain("postrouting", nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	loopback := net.IPv4(127, 0, 0, 1)
	for _, m := range inboundMatches(cfg) {
		c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: concat(
			cmpMeta(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifname(cfg.PodInterface)), m, nat(expr.NATTypeDestNAT, guest))})
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: concat(
			cmpIP(16, loopback), m, nat(expr.NATTypeDestNAT, guest))})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: concat(
		cmpIP(12, guest), cmpMeta(expr.MetaKeyOIFNAME, expr.CmpOpNeq, ifname(BridgeName)), []expr.Any{&expr.Masq{}})})
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: concat(
		cmpIP(12, loopback), cmpMeta(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifname(BridgeName)),
		nat(expr.NATTypeSourceNAT, net.ParseIP(MasqueradeGatewayIP)))})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: install table %s: %w (the pod needs CAP_NET_ADMIN)", NATTable, err)
	}
	// Loopback-sourced packets may leave through the bridge only with route_localnet; in a pod the bridge
	// inherits it from net.ipv4.conf.default.route_localnet, which the pod requests (PodSysctls).
	return ensureSysctl("net.ipv4.conf."+BridgeName+".route_localnet", "net.ipv4.conf.default.route_localnet")
}
