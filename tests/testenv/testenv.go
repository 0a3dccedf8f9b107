// Package testenv holds the helpers every test that needs this machine's resources shares: whether
// /dev/kvm may be used, and where the guest images built by `just images` are.
//
// A test that needs KVM or an image skips when it is missing, unless KVIRT_REQUIRE_KVM=1 (set by CI),
// in which case it fails with a message naming what to do.
package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Required reports whether missing KVM or images must fail tests instead of skipping them.
func Required() bool { return os.Getenv("KVIRT_REQUIRE_KVM") == "1" }

func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// RequireKVM skips (or, under KVIRT_REQUIRE_KVM=1, fails) the test unless /dev/kvm can be opened.
func RequireKVM(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		missing(t, "KVM not usable (%v): run on a host with /dev/kvm read-write", err)
		return
	}
	f.Close()
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
		missing(t, "guest image %s missing (%v): run `just images` first", name, err)
	}
	return p
}
