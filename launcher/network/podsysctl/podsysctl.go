// Package podsysctl names the sysctls a launcher pod of a masquerade VMI requests. It is a leaf package so
// virt-controller, which renders the pod, does not link the launcher's networking (nftables, DHCP, netlink).
package podsysctl

// Required are the sysctls the launcher pod of a masquerade VMI requests (pod securityContext.sysctls;
// virt-controller sets them): /proc/sys is read-only in a container, so the launcher cannot set them
// itself. The node's kubelet must allow them (allowedUnsafeSysctls), as the harness's cluster does.
// net.ipv4.conf.default.route_localnet is inherited by the bridge the launcher creates (its
// net.ipv4.conf.k6t-eth0.route_localnet), which kubectl port-forward to the guest needs.
var Required = map[string]string{
	"net.ipv4.ip_forward":                  "1",
	"net.ipv4.conf.default.route_localnet": "1",
}
