package launcher

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"sigs.k8s.io/yaml"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/spec"
)

// Review finding F3: the ports kept from the guest were hard-coded to control.DefaultPort, so a control API
// on another port (virt-controller --launcher-control-port) was DNATed to the guest, who then received the
// controller's bearer token. The reserved port is now the listener's own: listing it in a masquerade
// interface's ports is refused before anything is plumbed, as 8186 was.
func TestControlPortIsReservedFromTheListener(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the launcher is given a fresh network namespace")
	}
	podNS, err := ns.TempNetNS()
	if err != nil {
		t.Fatal(err)
	}
	defer podNS.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0") // a free port other than 8186 for the control API
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var vmi v1.VirtualMachineInstance
	if err := yaml.UnmarshalStrict([]byte(fmt.Sprintf(`
metadata: {name: rp, namespace: default, uid: 3b9f1c5e-8a44-4c1e-9a57-0d2b6f1e7a12}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices:
      interfaces: [{name: default, masquerade: {}, ports: [{port: 80}, {port: %d}]}]
  networks: [{name: default, pod: {}}]
`, port)), &vmi); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	o := Run(context.Background(), Options{VMI: &vmi, Dirs: spec.Dirs{Work: filepath.Join(dir, "work"), Root: dir},
		Network: NetworkMode{Kind: "netns", NS: podNS}, ControlAddr: fmt.Sprintf("127.0.0.1:%d", port), Token: "t"})
	want := fmt.Sprintf("ports[1].port %d: TCP port %d is reserved for virt-launcher's control API", port, port)
	if o.Reason != "LauncherFailed" || !strings.Contains(o.Message, want) {
		t.Fatalf("outcome %+v, want LauncherFailed with %q", o, want)
	}
}
