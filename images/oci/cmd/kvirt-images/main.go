// Command kvirt-images builds kvirt's container images without a Docker engine into one tarball for
// `ctr images import` (`just kvirt-images`, then `just cluster-load` or `just cluster-up TARBALL`):
//
//	kvirt.io/virt-launcher:TAG      /usr/bin/virt-launcher and the guest artifacts of `just images`
//	                                (vmlinux, initramfs.cpio, testguest) in /usr/share/kvirt/images
//	kvirt.io/virt-controller:TAG    /usr/bin/virt-controller
//	kvirt.io/kvm-device-plugin:TAG  /usr/bin/kvm-device-plugin
//
// Binaries are built static (CGO_ENABLED=0) from this repository. Run from the repository root.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/kvirt/kvirt/images"
	"github.com/kvirt/kvirt/images/oci"
)

// launcherImagesDir must match launcher.DefaultImagesDir.
const launcherImagesDir = "/usr/share/kvirt/images"

func main() {
	out := flag.String("o", "build/oci/kvirt-images.tar", "output tarball")
	tag := flag.String("tag", "dev", "tag of every image")
	guest := flag.String("images-dir", "build/images", "guest artifacts built by `just images`")
	flag.Parse()
	if err := run(*out, *tag, *guest); err != nil {
		fmt.Fprintf(os.Stderr, "kvirt-images: %v\n", err)
		os.Exit(1)
	}
}

func run(out, tag, guest string) error {
	bin := filepath.Join(filepath.Dir(out), "bin")
	cmds := []string{"virt-launcher", "virt-controller", "kvm-device-plugin"}
	for _, c := range cmds {
		fmt.Printf("[kvirt-images] go build ./cmd/%s\n", c)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(bin, c), "./cmd/"+c)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build ./cmd/%s (run from the repository root): %w", c, err)
		}
	}
	launcher := []oci.File{
		{Path: "/usr/bin/virt-launcher", Source: filepath.Join(bin, "virt-launcher")},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
	}
	for _, a := range []string{images.Vmlinux, images.Initramfs, images.TestGuest} {
		src := filepath.Join(guest, a)
		if _, err := os.Stat(src); err != nil {
			return fmt.Errorf("guest artifact %s missing: run `just images` first", src)
		}
		launcher = append(launcher, oci.File{Path: launcherImagesDir + "/" + a, Source: src, Mode: 0o644})
	}
	imgs := []oci.Image{
		{Ref: "kvirt.io/virt-launcher:" + tag, Files: launcher, Entrypoint: []string{"/usr/bin/virt-launcher"}},
		{Ref: "kvirt.io/virt-controller:" + tag, Files: []oci.File{
			{Path: "/usr/bin/virt-controller", Source: filepath.Join(bin, "virt-controller")},
			{Path: "/tmp", Dir: true, Mode: 0o1777},
		}, Entrypoint: []string{"/usr/bin/virt-controller"}},
		{Ref: "kvirt.io/kvm-device-plugin:" + tag, Files: []oci.File{
			{Path: "/usr/bin/kvm-device-plugin", Source: filepath.Join(bin, "kvm-device-plugin")},
		}, Entrypoint: []string{"/usr/bin/kvm-device-plugin"}},
	}
	if err := oci.WriteTarball(out, imgs...); err != nil {
		return err
	}
	for _, img := range imgs {
		fmt.Printf("[kvirt-images] %s\n", img.Ref)
	}
	fmt.Printf("[kvirt-images] wrote %s\n", out)
	return nil
}
