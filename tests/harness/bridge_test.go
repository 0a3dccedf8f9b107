package harness

import (
	"net"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The pod bridge keeps its own MAC while pods' veths join and leave; a bridge without a set MAC follows
// its lowest port (the control case, which shows the check can fail).
func TestBridgeMACFixedWhilePortsChange(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create a network namespace")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends in the new namespace and is discarded
		ns, err := netns.New()
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		errc <- nil
		fixed, err := fixedMACBridge("brfixed", bridgeMAC)
		if err != nil {
			t.Error(err)
			errc <- nil
			return
		}
		la := netlink.NewLinkAttrs()
		la.Name = "brfollow"
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
			t.Error(err)
			errc <- nil
			return
		}
		follow, _ := netlink.LinkByName("brfollow")
		low := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01} // lower than bridgeMAC
		for i, br := range []netlink.Link{fixed, follow} {
			va := netlink.NewLinkAttrs()
			va.Name, va.HardwareAddr, va.MasterIndex = "vp"+string(rune('0'+i)), low, br.Attrs().Index
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: va, PeerName: "vq" + string(rune('0'+i))}); err != nil {
				t.Error(err)
				errc <- nil
				return
			}
		}
		mac := func(name string) string {
			l, err := netlink.LinkByName(name)
			if err != nil {
				t.Error(err)
				return ""
			}
			return l.Attrs().HardwareAddr.String()
		}
		if got := mac("brfollow"); got != low.String() {
			t.Errorf("control: a bridge without a set MAC has %s, want its port's %s (the kernel no longer follows ports?)", got, low)
		}
		if got := mac("brfixed"); got != bridgeMAC.String() {
			t.Errorf("pod bridge MAC %s after a port joined, want %s", got, bridgeMAC)
		}
		if err := netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vp0"}}); err != nil {
			t.Error(err)
		}
		if got := mac("brfixed"); got != bridgeMAC.String() {
			t.Errorf("pod bridge MAC %s after the port left, want %s", got, bridgeMAC)
		}
		// An existing bridge that followed its ports is given the fixed MAC.
		if _, err := fixedMACBridge("brfollow", bridgeMAC); err != nil {
			t.Error(err)
		} else if got := mac("brfollow"); got != bridgeMAC.String() {
			t.Errorf("existing bridge MAC %s, want %s", got, bridgeMAC)
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	<-errc
}
