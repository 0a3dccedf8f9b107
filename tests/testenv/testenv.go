// Package testenv holds the helpers every test that needs this machine's resources shares: whether
// /dev/kvm may be used, and where the guest images built by `just images` are.
//
// A test that needs KVM skips when the host has no usable /dev/kvm, with a reason that starts with
// SkipNeedsKVM so CI can list exactly what did not run; under KVIRT_REQUIRE_KVM=1 (set by CI when its
// probe found KVM usable) it fails instead, so a broken VMM on a KVM host never hides as a skip. A missing
// guest image skips the same way, and fails under KVIRT_REQUIRE_KVM=1 or KVIRT_REQUIRE_IMAGES=1.
package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// SkipNeedsKVM starts the message of every test skipped for want of a usable /dev/kvm.
const SkipNeedsKVM = "needs KVM:"

// Required reports whether missing KVM must fail tests instead of skipping them (KVIRT_REQUIRE_KVM=1).
func Required() bool { return os.Getenv("KVIRT_REQUIRE_KVM") == "1" }

// imagesRequired reports whether a missing guest image must fail tests instead of skipping them.
func imagesRequired() bool { return Required() || os.Getenv("KVIRT_REQUIRE_IMAGES") == "1" }

// RequireKVM skips (or, under KVIRT_REQUIRE_KVM=1, fails) the test unless the host's KVM is usable:
// /dev/kvm opens read-write, speaks API version 12 and creates a VM.
func RequireKVM(t testing.TB) {
	t.Helper()
	err := ProbeKVM()
	if err == nil {
		return
	}
	if Required() {
		t.Fatalf("KVM not usable (%v) although KVIRT_REQUIRE_KVM=1: run on a host with /dev/kvm read-write, or unset it", err)
	}
	t.Skipf("%s %v", SkipNeedsKVM, err)
}

// RepoRoot returns the directory holding the module's go.mod, found by walking up from the working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/kvirt/kvirt\n") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("repository root (go.mod of github.com/kvirt/kvirt) not found above the working directory")
		}
		dir = parent
	}
}

// ImagesDir is where `just images` puts guest artifacts: $KVIRT_IMAGES_DIR, else build/images in the repository.
func ImagesDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("KVIRT_IMAGES_DIR"); d != "" {
		return d
	}
	return filepath.Join(RepoRoot(t), "build", "images")
}

// Image returns the path of a guest artifact (vmlinux, bzImage, initramfs.cpio, testguest), skipping or
// failing the test when it has not been built.
func Image(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(ImagesDir(t), name)
	if _, err := os.Stat(p); err != nil {
		if imagesRequired() {
			t.Fatalf("guest image %s missing (%v): run `just images` first", name, err)
		}
		t.Skipf("guest image %s missing (%v): run `just images` first", name, err)
	}
	return p
}
