package launcher

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvirt/kvirt/images"
	"github.com/kvirt/kvirt/launcher/containerdisk"
	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/launcher/spec"
	"github.com/kvirt/kvirt/tests/testenv"
)

// In a launcher pod the kernel-boot init container copied firmware.kernelBoot.container's kernel into the
// disks emptyDir: the launcher boots that copy and never fetches the image (here a registry that does not
// exist, with a pull secret it could not read).
func TestKernelBootFromPodCopy(t *testing.T) {
	testenv.RequireKVM(t)
	kernel := testenv.Image(t, images.TestGuest)
	vmi, err := LoadManifest([]byte(`
kind: VirtualMachineInstance
metadata: {name: kb, namespace: default, uid: 0e5c1f4a-2b3d-4c5e-8f60-718293a4b5c6}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    firmware:
      kernelBoot:
        kernelArgs: testguest=poweroff
        container: {image: registry.invalid/kernels/testguest:1, kernelPath: /boot/testguest, imagePullSecret: regcred}
    devices: {autoattachPodInterface: false}
`))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	disks := filepath.Join(dir, "container-disks")
	root := filepath.Join(dir, "image")
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	b, err := os.ReadFile(kernel)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "boot", "testguest"), b, 0o644)
	if err := containerdisk.CopyKernelBoot(context.Background(), root, "/boot/testguest", "", filepath.Join(disks, containerdisk.KernelBootDir), nil); err != nil {
		t.Fatal(err)
	}
	console := &testenv.SyncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := Run(ctx, Options{VMI: vmi, Dirs: spec.Dirs{Work: filepath.Join(dir, "work"), ContainerDisks: disks},
		Network: NetworkMode{Kind: "none"}, Console: console, Log: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	if o.Phase != control.Succeeded || !strings.Contains(console.String(), "kvirt-testguest: poweroff") {
		t.Fatalf("outcome %+v; console:\n%s", o, console.String())
	}

	// Without the pod's copy the launcher would have to pull, and refuses the secret it cannot read.
	o = Run(context.Background(), Options{VMI: vmi, Dirs: spec.Dirs{Work: filepath.Join(dir, "work2")}, Network: NetworkMode{Kind: "none"}})
	if o.ExitCode != 2 || !strings.Contains(o.Message, "spec.domain.firmware.kernelBoot.container.image") || !strings.Contains(o.Message, "imagePullSecret") {
		t.Fatalf("outcome without the pod copy %+v", o)
	}
}
