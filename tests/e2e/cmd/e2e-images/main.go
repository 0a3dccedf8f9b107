// Command e2e-images builds the images the end-to-end suite loads into the cluster, without Docker
// (images/oci), into one tarball for `just cluster-load`:
//
//	kvirt.io/virt-launcher:e2e  /usr/bin/virt-launcher, kvirt's guest artifacts in /usr/share/kvirt/images,
//	                            and in /usr/share/kvirt/e2e two image archives the suite's VMIs name with
//	                            local references (the cluster has no registry the launcher could pull from):
//	                              testguest-kernel.tar  /boot/testguest (firmware.kernelBoot.container)
//	                              demo-disk.tar         the demo containerDisk (below)
//	                              linux-kernel.tar      /boot/vmlinux and /boot/initramfs.cpio, kvirt's
//	                                                    Linux guest, for VMs that set kernelArgs
//	                                                    (kvirt.test= actions of kvirt-init)
//	kvirt.io/demo-disk:dev      /disk/disk.img, an 8 MiB ext4 disk holding /hello (examples/vm.yaml)
//	kvirt.io/testguest-kernel:e2e  /boot/testguest (kernelBoot pulled by the kubelet)
//
// The controller and device-plugin images come from images/oci/cmd/kvirt-images. The output is rebuilt
// only when its inputs (the launcher binary and guest artifacts) change: their SHA-256 is kept next to it.
// Run from the repository root.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/kvirt/kvirt/images"
	"github.com/kvirt/kvirt/images/oci"
)

const (
	// Tag of the launcher image the e2e overlay (tests/e2e/deploy) gives the controller.
	LauncherRef = "kvirt.io/virt-launcher:e2e"
	// DemoDiskRef is the demo containerDisk of examples/vm.yaml.
	DemoDiskRef = "kvirt.io/demo-disk:dev"
	// KernelRef holds the test guest at /boot/testguest (firmware.kernelBoot.container), in the node's
	// containerd and, as an archive, in the launcher image.
	KernelRef = "kvirt.io/testguest-kernel:e2e"
	e2eDir    = "/usr/share/kvirt/e2e"
	imagesDir = "/usr/share/kvirt/images" // launcher.DefaultImagesDir
)

func main() {
	out := flag.String("o", "build/e2e/e2e-images.tar", "output tarball")
	guest := flag.String("images-dir", "build/images", "guest artifacts built by `just images`")
	flag.Parse()
	if err := run(*out, *guest); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-images: %v\n", err)
		os.Exit(1)
	}
}

func run(out, guest string) error {
	work := filepath.Join(filepath.Dir(out), "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	bin := filepath.Join(work, "virt-launcher")
	fmt.Println("[e2e-images] go build ./cmd/virt-launcher (static)")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd/virt-launcher")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build ./cmd/virt-launcher (run from the repository root): %w", err)
	}
	inputs := []string{bin}
	for _, a := range []string{images.Vmlinux, images.Initramfs, images.TestGuest} {
		src := filepath.Join(guest, a)
		if _, err := os.Stat(src); err != nil {
			return fmt.Errorf("guest artifact %s missing: run `just images` first", src)
		}
		inputs = append(inputs, src)
	}
	sum, err := hashFiles(inputs)
	sum = recipeVersion + "-" + sum
	if err != nil {
		return err
	}
	stamp := out + ".sha256"
	if old, err := os.ReadFile(stamp); err == nil && string(old) == sum {
		if _, err := os.Stat(out); err == nil {
			fmt.Printf("[e2e-images] %s is up to date (inputs %s)\n", out, sum[:12])
			return nil
		}
	}

	disk := filepath.Join(work, "disk.img")
	root := filepath.Join(work, "disk-root")
	os.RemoveAll(root)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "hello"), []byte("from-the-demo-disk\n"), 0o644); err != nil {
		return err
	}
	os.Remove(disk)
	if b, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", root, disk, "8M").CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 (apt-get install e2fsprogs): %v\n%s", err, b)
	}
	demo := oci.Image{Ref: DemoDiskRef, Files: []oci.File{{Path: "/disk/disk.img", Source: disk, Mode: 0o444}}}
	demoTar := filepath.Join(work, "demo-disk.tar")
	if err := oci.WriteTarball(demoTar, demo); err != nil {
		return err
	}
	kernelTar := filepath.Join(work, "testguest-kernel.tar")
	kernelImg := oci.Image{Ref: KernelRef, Files: []oci.File{
		{Path: "/boot/testguest", Source: filepath.Join(guest, images.TestGuest), Mode: 0o644},
	}}
	if err := oci.WriteTarball(kernelTar, kernelImg); err != nil {
		return err
	}
	linuxTar := filepath.Join(work, "linux-kernel.tar")
	if err := oci.WriteTarball(linuxTar, oci.Image{Ref: "kvirt.io/linux-kernel:e2e", Files: []oci.File{
		{Path: "/boot/" + images.Vmlinux, Source: filepath.Join(guest, images.Vmlinux), Mode: 0o644},
		{Path: "/boot/" + images.Initramfs, Source: filepath.Join(guest, images.Initramfs), Mode: 0o644},
	}}); err != nil {
		return err
	}
	files := []oci.File{
		{Path: "/usr/bin/virt-launcher", Source: bin},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
		{Path: e2eDir + "/demo-disk.tar", Source: demoTar, Mode: 0o644},
		{Path: e2eDir + "/testguest-kernel.tar", Source: kernelTar, Mode: 0o644},
		{Path: e2eDir + "/linux-kernel.tar", Source: linuxTar, Mode: 0o644},
	}
	for _, a := range []string{images.Vmlinux, images.Initramfs, images.TestGuest} {
		files = append(files, oci.File{Path: imagesDir + "/" + a, Source: filepath.Join(guest, a), Mode: 0o644})
	}
	launcher := oci.Image{Ref: LauncherRef, Files: files, Entrypoint: []string{"/usr/bin/virt-launcher"}}
	if err := oci.WriteTarball(out, launcher, demo, kernelImg); err != nil { // kernelImg: kubelet-pulled kernelBoot (containerdisk_test.go)
		return err
	}
	if err := os.WriteFile(stamp, []byte(sum), 0o644); err != nil {
		return err
	}
	fmt.Printf("[e2e-images] %s and %s written to %s\n", LauncherRef, DemoDiskRef, out)
	return nil
}

// recipeVersion changes whenever the images' layout changes, so an old tarball is rebuilt.
const recipeVersion = "2"

func hashFiles(paths []string) (string, error) {
	h := sha256.New()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00", filepath.Base(p))
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
