package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// OSImagesDir is where `just os-images` puts the OS disk images (debian-12.raw, debian-12.qcow2, the
// debian-12-kvirt-kernel.* variant): $KVIRT_OS_IMAGES_DIR, else build/os-images in the repository.
func OSImagesDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("KVIRT_OS_IMAGES_DIR"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(t), "build", "os-images")
}

// OSImage returns the path of an OS disk image, skipping or failing the test (KVIRT_REQUIRE_KVM=1 or
// KVIRT_REQUIRE_IMAGES=1) when it has not been built.
func OSImage(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(OSImagesDir(t), name)
	if _, err := os.Stat(p); err != nil {
		if imagesRequired() {
			t.Fatalf("OS image %s missing (%v): run `just os-images` first", name, err)
		}
		t.Skipf("OS image %s missing (%v): run `just os-images` first", name, err)
	}
	return p
}

// OSBootMinutesPVM is how long a Debian 12 boot to its login prompt and cloud-init's end takes on a PVM
// host (measured, docs/boot.md); on hardware virtualization it takes seconds.
const OSBootMinutesPVM = 40

// RequireOSBoot skips a test that boots a distribution's userland (systemd, cloud-init, sshd) on a PVM
// host, where every guest kernel instruction is interpreted and such a boot takes tens of minutes, unless
// KVIRT_OS_BOOT=1 (`just os-test`, `just e2e-os`). On other hosts it runs, so CI there covers it.
func RequireOSBoot(t testing.TB) {
	t.Helper()
	if pvm() && os.Getenv("KVIRT_OS_BOOT") != "1" {
		t.Skipf("long suite on PVM hosts: boots Debian's userland (~%d min here, every guest kernel instruction interpreted): run `just os-test` or `just e2e-os`", OSBootMinutesPVM)
	}
}

// LongOnPVM skips a slow real-guest test on a PVM host unless KVIRT_LONG=1 (`just e2e-long`): there each
// guest restart costs minutes and CI cannot afford every variant; elsewhere it runs in `just test`.
func LongOnPVM(t testing.TB, why string) {
	t.Helper()
	if pvm() && os.Getenv("KVIRT_LONG") != "1" {
		t.Skipf("long suite on PVM hosts: %s: run `just e2e-long`", why)
	}
}

// pvm is vmm/kvm.PVM, which this package cannot import: vmm/kvm's own tests import testenv.
func pvm() bool {
	_, err := os.Stat("/sys/module/kvm_pvm")
	return err == nil
}
