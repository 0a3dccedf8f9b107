// Package network plumbs the launcher pod's network namespace for one VMI interface, the way KubeVirt does
// (BEHAVIOUR.md §7), and serves DHCP to the guest.
//
// Bridge binding: the pod interface (eth0) loses its addresses, gets a random MAC and is renamed eth0-nic; it is
// enslaved to the bridge k6t-eth0 together with the tap device tap0. A dummy interface named eth0 keeps the
// original MAC and addresses so the pod still reports its IP. The bridge gets the fake address 169.254.75.10/32
// and the launcher's DHCP server answers on it, handing the guest the original MAC's lease: the pod IP, the
// default gateway, DNS from the pod's resolv.conf, the MTU.
//
// Masquerade binding: eth0 is left as it is. The bridge k6t-eth0 (MAC 02:00:00:00:00:00, 10.0.2.1/24) holds
// tap0; the guest gets 10.0.2.2/24 with gateway 10.0.2.1 by DHCP. nftables (table ip "kvirt_nat") masquerades
// traffic from the guest leaving through the pod interface, and DNATs inbound TCP/UDP arriving on the pod
// interface to the guest: every port, or only the listed ports. Ports the launcher itself serves (the control
// API) are listed in Config.ReservedPorts and are never forwarded when all ports are.
//
// The tap device is created persistent so the VMM attaches to it by name (devices/virtio/net.OpenTap).
package network
