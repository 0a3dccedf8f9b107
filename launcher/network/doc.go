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
// In a pod the launcher plumbs its own namespace: Setup and Do skip setns when the target is the current
// namespace, so CAP_NET_ADMIN and NET_RAW suffice (no CAP_SYS_ADMIN). /proc/sys is read-only in a container:
// the masquerade binding only reads net.ipv4.ip_forward and net.ipv4.conf.k6t-eth0.route_localnet when they
// are 1 already, which the launcher pod gets by requesting PodSysctls (pod securityContext.sysctls; the
// bridge inherits net.ipv4.conf.default.route_localnet). These are unsafe sysctls: every node running kvirt
// needs them allowed in its kubelet configuration,
//
//	allowedUnsafeSysctls: ["net.ipv4.ip_forward", "net.ipv4.conf.default.route_localnet"]
//
// (KubeVirt needs no such setting: its privileged virt-handler plumbs the pod from the node.) When a value is
// 0 and cannot be written, the error names the sysctl, the pod request and the kubelet setting.
//
// The tap device is created persistent so the VMM attaches to it by name (devices/virtio/virtionet.OpenTap).
package network
