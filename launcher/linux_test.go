package launcher

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/vishvananda/netlink"

	"github.com/kvirt/kvirt/images"
	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/launcher/grace"
	"github.com/kvirt/kvirt/launcher/spec"
	"github.com/kvirt/kvirt/tests/testenv"
	"github.com/kvirt/kvirt/vmm"
)

// These tests boot kvirt's own guest kernel and initramfs (kvirt-init runs the kvirt.test actions and prints
// "kvirt-guest: ..." lines) through Run, as `virt-launcher run -f` does.

// KVIRT_TEST_NOACPI=1 boots these guests without ACPI (devices declared on the command line), to check the
// launcher's disks and network while the VMM's ACPI tables do not load: the run ends when kvirt-init says it
// powers off (it cannot without ACPI), and the outcome is then a hard stop.
var testNoACPI = os.Getenv("KVIRT_TEST_NOACPI") == "1"

func runLinux(t *testing.T, manifest, actions string, netMode NetworkMode, extra ...string) (grace.Outcome, string, string) {
	t.Helper()
	testenv.RequireKVM(t)
	testenv.Image(t, images.Vmlinux)
	testenv.Image(t, images.Initramfs)
	vmi, err := LoadManifest([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	if testing.Short() {
		t.Skip("boots a Linux guest (minutes on PVM hosts); skipped with -short")
	}
	dir := t.TempDir()
	console := &testenv.SyncBuffer{}
	cmdline := vmm.DefaultCmdline + ` kvirt.test="` + actions + `" ` + strings.Join(extra, " ")
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	// Without ACPI the guest can neither see virtio-mmio devices (declared in the DSDT) nor power off: stop
	// at once with a clear message instead of waiting for the deadline.
	noACPI := newMarkerWatcher("ACPI: Unable to load the System Description Tables", cancel)
	var outs io.Writer = io.MultiWriter(console, noACPI)
	if testNoACPI {
		outs = io.MultiWriter(console, newMarkerWatcher("kvirt-guest: poweroff", cancel))
	}
	work := filepath.Join(dir, "work")
	o := Run(ctx, Options{
		VMI: vmi, Dirs: spec.Dirs{Work: work, Root: dir}, ImagesDir: testenv.ImagesDir(t), NoACPI: testNoACPI,
		Append: cmdline, Network: netMode, Console: outs, TerminationLog: filepath.Join(dir, "termination-log"),
		Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
	if testNoACPI {
		return grace.Outcome{Phase: control.Succeeded}, console.String(), work
	}
	if noACPI.seen {
		t.Fatalf("the guest kernel rejected the VMM's ACPI tables, so it sees no virtio disk or NIC and cannot power off (vmm/acpi; vmm's TestLinuxPowerOff shows the same); console:\n%s", console.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("guest did not power off within 6 minutes; console:\n%s", console.String())
	}
	return o, console.String(), work
}

func ext4Image(t *testing.T, files map[string]string) []byte {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed (apt-get install e2fsprogs)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "root")
	os.Mkdir(src, 0o755)
	for n, c := range files {
		os.WriteFile(filepath.Join(src, n), []byte(c), 0o644)
	}
	img := filepath.Join(dir, "disk.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", src, img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// containerDiskArchive writes a `docker save`-style archive holding disk at /disk/disk.img.
func containerDiskArchive(t *testing.T, disk []byte) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "disk/disk.img", Mode: 0o644, Size: int64(len(disk)), Typeflag: tar.TypeReg})
	tw.Write(disk)
	tw.Close()
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "disk.tar")
	tag, _ := name.NewTag("kvirt.test/ext4:1")
	if err := tarball.WriteToFile(p, tag, img); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLinuxGuestVolumes(t *testing.T) {
	archive := containerDiskArchive(t, ext4Image(t, map[string]string{"hello": "from-the-image\n"}))
	manifest := fmt.Sprintf(`
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: linuxvmi, namespace: default, uid: 7c0b5a3e-1d2f-4e6a-8b9c-0a1b2c3d4e5f}
spec:
  domain:
    resources: {requests: {memory: 128Mi}}
    firmware: {uuid: 5d307ca9-b3ef-428c-8861-06e72d69f223}
    devices:
      autoattachPodInterface: false
      disks: [{name: root}, {name: cidata}, {name: scratch}]
  volumes:
  - {name: root, containerDisk: {image: "docker-archive:%s"}}
  - {name: cidata, cloudInitNoCloud: {userData: "#cloud-config\n"}}
  - {name: scratch, emptyDisk: {capacity: 16Mi}}
`, archive)
	o, console, work := runLinux(t, manifest,
		"uuid,disk,poweroff",
		NetworkMode{Kind: "none"}, "kvirt.disk=/dev/vda", "kvirt.write=guest-wrote")
	for _, want := range []string{
		"kvirt-guest: uuid=5d307ca9-b3ef-428c-8861-06e72d69f223",
		"kvirt-guest: read=from-the-image",
		"kvirt-guest: disk ok",
	} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if o.Phase != control.Succeeded || o.ExitCode != 0 {
		t.Errorf("outcome %+v", o)
	}
	checkOverlay(t, work, "guest-wrote")
	if t.Failed() {
		t.Logf("console:\n%s", console)
	}
}

// checkOverlay verifies the guest's write reached the containerDisk overlay and not the extracted base.
func checkOverlay(t *testing.T, work, text string) {
	t.Helper()
	base, err := os.ReadFile(filepath.Join(work, "root", "disk.base"))
	if err != nil {
		t.Fatal(err)
	}
	ov, err := os.ReadFile(filepath.Join(work, "root", "disk.overlay"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(base, []byte(text)) {
		t.Errorf("the guest's write %q reached the image's base file", text)
	}
	if !bytes.Contains(ov, []byte(text)) {
		t.Errorf("the guest's write %q is not in the overlay", text)
	}
}

// The simulated pod network (as launcher/network's tests): node namespace 10.10.0.1 ←veth→ pod namespace
// eth0 10.10.0.5/24, default route via the node.
func podNamespaces(t *testing.T) (node, pod ns.NetNS) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces")
	}
	mk := func() ns.NetNS {
		n, err := ns.TempNetNS()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		return n
	}
	node, pod = mk(), mk()
	nodeIP, podIP := net.IPv4(10, 10, 0, 1).To4(), net.IPv4(10, 10, 0, 5).To4()
	err := pod.Do(func(ns.NetNS) error {
		lo, _ := netlink.LinkByName("lo")
		netlink.LinkSetUp(lo)
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1500},
			PeerName: "node0", PeerNamespace: netlink.NsFd(int(node.Fd()))}); err != nil {
			return err
		}
		l, _ := netlink.LinkByName("eth0")
		netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: podIP, Mask: net.CIDRMask(24, 32)}})
		netlink.LinkSetUp(l)
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: nodeIP})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = node.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("node0")
		if err != nil {
			return err
		}
		netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP, Mask: net.CIDRMask(24, 32)}})
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatal(err)
	}
	return node, pod
}

func netManifest(binding string) string {
	return fmt.Sprintf(`
kind: VirtualMachineInstance
metadata: {name: netvmi, namespace: default, uid: 9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d}
spec:
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      rng: {} # u-root's dhclient needs getrandom(); the PVM policy hides RDRAND
      interfaces: [{name: default, %s: {}}]
  networks: [{name: default, pod: {}}]
`, binding)
}

// Masquerade with a real guest: DHCP gives it 10.0.2.2 behind 10.0.2.1; it reaches the node outside the pod
// namespace (ICMP, masqueraded); an inbound connection to the pod IP is forwarded to a listener in the guest
// (source address kept); SIGTERM then powers it off gracefully.
func TestLinuxGuestMasquerade(t *testing.T) {
	node, pod := podNamespaces(t)
	testenv.RequireKVM(t)
	testenv.Image(t, images.Vmlinux)
	testenv.Image(t, images.Initramfs)
	if testing.Short() {
		t.Skip("boots a Linux guest (minutes on PVM hosts); skipped with -short")
	}
	vmi, err := LoadManifest([]byte(netManifest("masquerade")))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	console := &testenv.SyncBuffer{}
	sigs := make(chan os.Signal, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	out := make(chan grace.Outcome, 1)
	go func() {
		out <- Run(ctx, Options{
			VMI: vmi, Dirs: spec.Dirs{Work: filepath.Join(dir, "work"), Root: dir}, ImagesDir: testenv.ImagesDir(t),
			Append:  vmm.DefaultCmdline + ` kvirt.test="net,ping:10.10.0.1:2,listen:8080,wait"`,
			Network: NetworkMode{Kind: "netns", NS: pod}, Console: console, Signals: sigs,
			Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		})
	}()
	defer func() {
		cancel()
		<-out
		if t.Failed() {
			t.Logf("console:\n%s", console.String())
		}
	}()
	deadline := time.Now().Add(6 * time.Minute)
	for !strings.Contains(console.String(), "kvirt-guest: listening port=8080") {
		if c := console.String(); strings.Contains(c, "kvirt-guest: error") || time.Now().After(deadline) {
			t.Fatalf("the guest did not get to its listener (error, or not within 6 minutes)")
		}
		time.Sleep(200 * time.Millisecond)
	}
	c := console.String()
	for _, want := range []string{"kvirt-guest: ip=10.0.2.2/24 gw=10.0.2.1", "kvirt-guest: ping ok", "kvirt-guest: ping host=10.10.0.1 n=2"} {
		if !strings.Contains(c, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	var got string
	err = node.Do(func(ns.NetNS) error {
		conn, err := net.DialTimeout("tcp4", "10.10.0.5:8080", 30*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		b, err := io.ReadAll(conn)
		got = string(b)
		return err
	})
	if err != nil || !strings.HasPrefix(got, "kvirt-guest ") || !strings.HasSuffix(got, " from 10.10.0.1") {
		t.Errorf("node → pod IP:8080 → guest: %q, %v; want the guest's reply naming the node's address", got, err)
	}
	sigs <- syscall.SIGTERM
	select {
	case o := <-out:
		out <- o
		if o.Phase != control.Succeeded || o.ExitCode != 0 {
			t.Errorf("outcome after SIGTERM %+v, want Succeeded (graceful poweroff)", o)
		}
	case <-time.After(2 * time.Minute):
		t.Errorf("the guest did not power off within 2 minutes of SIGTERM")
	}
}

func TestLinuxGuestBridge(t *testing.T) {
	_, pod := podNamespaces(t)
	o, console, _ := runLinux(t, netManifest("bridge"), "net,poweroff", NetworkMode{Kind: "netns", NS: pod})
	for _, want := range []string{"kvirt-guest: ip=10.10.0.5/24 gw=10.10.0.1", "kvirt-guest: ping ok"} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if o.Phase != control.Succeeded {
		t.Errorf("outcome %+v", o)
	}
	if t.Failed() {
		t.Logf("console:\n%s", console)
	}
}
