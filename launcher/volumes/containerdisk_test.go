package volumes

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log"
	"math/rand"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// diskImage builds an image whose layers hold files (path → content); each map is one layer.
func diskImage(t *testing.T, layers ...map[string][]byte) v1.Image {
	t.Helper()
	img := empty.Image
	for _, files := range layers {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for p, b := range files {
			if err := tw.WriteHeader(&tar.Header{Name: p, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
				t.Fatal(err)
			}
			tw.Write(b)
		}
		tw.Close()
		data := buf.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func rawDisk(size int) []byte {
	d := make([]byte, size)
	rand.New(rand.NewSource(9)).Read(d[:size/4]) // a zero tail, extracted sparsely
	return d
}

func checkDisk(t *testing.T, cd *ContainerDisk, want []byte) {
	t.Helper()
	b := cd.Backend
	if b.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", b.Size(), len(want))
	}
	got := make([]byte, len(want))
	if _, err := b.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("disk content differs (%v)", err)
	}
	sum, err := os.ReadFile(cd.BasePath)
	if err != nil {
		t.Fatal(err)
	}
	before := sha256.Sum256(sum)
	// Guest writes land in the overlay: visible to reads, never in the base.
	if _, err := b.WriteAt([]byte("guest was here"), 4097); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 14)
	if _, err := b.ReadAt(p, 4097); err != nil || string(p) != "guest was here" {
		t.Fatalf("read back %q, %v", p, err)
	}
	after, _ := os.ReadFile(cd.BasePath)
	if sha256.Sum256(after) != before {
		t.Fatal("the extracted base was modified")
	}
	if st, _ := os.Stat(cd.BasePath); st.Mode().Perm() != 0o444 {
		t.Fatalf("base mode %v, want 0444", st.Mode().Perm())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestContainerDiskSources(t *testing.T) {
	disk := rawDisk(1 << 20)
	img := diskImage(t, map[string][]byte{"etc/hostname": []byte("x")}, map[string][]byte{"disk/disk.img": disk})
	dir := t.TempDir()
	ctx := context.Background()

	archive := filepath.Join(dir, "image.tar")
	tag, _ := name.NewTag("kvirt.test/disk:v1")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	lp, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	digest, _ := img.Digest()

	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/disks/raw:latest"
	r, _ := name.ParseReference(ref, name.Insecure)
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct{ name, ref string }{
		{"archive", ArchivePrefix + archive},
		{"archive-path", archive},
		{"layout", OCILayoutPrefix + filepath.Join(dir, "layout")},
		{"layout-digest", OCILayoutPrefix + filepath.Join(dir, "layout") + "@" + digest.String()},
		{"layout-path", filepath.Join(dir, "layout")},
		{"registry", ref},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cd, err := PrepareContainerDisk(ctx, "spec.volumes[0].containerDisk.image", tc.ref, t.TempDir(), ContainerDiskOptions{Insecure: true})
			if err != nil {
				t.Fatal(err)
			}
			if cd.Format != "raw" {
				t.Fatalf("format %s", cd.Format)
			}
			checkDisk(t, cd, disk)
		})
	}
}

func TestContainerDiskPath(t *testing.T) {
	disk := rawDisk(64 << 10)
	img := diskImage(t, map[string][]byte{"disk/a.img": {1}, "images/b.img": disk})
	archive := filepath.Join(t.TempDir(), "image.tar")
	tag, _ := name.NewTag("kvirt.test/disk:path")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	cd, err := PrepareContainerDisk(context.Background(), "f", archive, t.TempDir(), ContainerDiskOptions{Path: "images/b.img"})
	if err != nil {
		t.Fatal(err)
	}
	checkDisk(t, cd, disk)
}

func TestContainerDiskQCOW2(t *testing.T) {
	kind := func(i int) int { return i % 4 }
	data := testData(64, 4096, kind)
	q := makeQCOW2(t, data, 12, 3, kind)
	img := diskImage(t, map[string][]byte{"./disk/fedora.qcow2": q})
	archive := filepath.Join(t.TempDir(), "image.tar")
	tag, _ := name.NewTag("kvirt.test/disk:qcow2")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	cd, err := PrepareContainerDisk(context.Background(), "f", archive, t.TempDir(), ContainerDiskOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cd.Format != "qcow2" {
		t.Fatalf("format %s, want qcow2", cd.Format)
	}
	checkDisk(t, cd, data)
}

func TestContainerDiskErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(n string, img v1.Image) string {
		p := filepath.Join(dir, n)
		tag, _ := name.NewTag("kvirt.test/x:y")
		if err := tarball.WriteToFile(p, tag, img); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kind := func(i int) int { return kData }
	corrupt := makeQCOW2(t, testData(4, 512, kind), 9, 3, kind)
	corrupt[23] = 99
	const field = "spec.volumes[1].containerDisk.image"
	twoDisks := write("two.tar", diskImage(t, map[string][]byte{"disk/a.img": {1}, "disk/b.img": {2}}))
	for _, tc := range []struct{ name, ref, path, want string }{
		{"empty ref", "", "", "empty image reference"},
		{"missing path", twoDisks, "/disk/c.img", "no regular file /disk/c.img"},
		{"no disk", write("nodisk.tar", diskImage(t, map[string][]byte{"etc/x": []byte("x")})), "", "no disk file under /disk/"},
		{"two disks", twoDisks, "", "more than one file under /disk/"},
		{"corrupt qcow2", write("bad.tar", diskImage(t, map[string][]byte{"disk/d.qcow2": corrupt})), "", "cluster_bits 99"},
		{"missing archive", ArchivePrefix + filepath.Join(dir, "nope.tar"), "", "no such file"},
		{"missing layout", OCILayoutPrefix + filepath.Join(dir, "nope"), "", "OCI layout"},
		{"bad reference", "UPPER/Case::bad", "", "neither a local OCI layout"},
		{"unreachable registry", "127.0.0.1:1/disk:latest", "", "pull 127.0.0.1:1/disk:latest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := PrepareContainerDisk(context.Background(), field, tc.ref, t.TempDir(), ContainerDiskOptions{Insecure: true, Path: tc.path})
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != field || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a %s error containing %q", err, field, tc.want)
			}
		})
	}
}

func TestExtractFiles(t *testing.T) {
	img := diskImage(t, map[string][]byte{"boot/vmlinux": []byte("kernel"), "boot/initrd.cpio": []byte("initrd")})
	archive := filepath.Join(t.TempDir(), "kernel.tar")
	tag, _ := name.NewTag("kvirt.test/kernel:1")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	got, err := ExtractFiles(context.Background(), "spec.domain.firmware.kernelBoot.container.image", archive, []string{"/boot/vmlinux", "boot/initrd.cpio"}, dir, ContainerDiskOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"/boot/vmlinux": "kernel", "boot/initrd.cpio": "initrd"} {
		b, err := os.ReadFile(got[p])
		if err != nil || string(b) != want {
			t.Errorf("%s → %s: %q %v", p, got[p], b, err)
		}
	}
	_, err = ExtractFiles(context.Background(), "spec.domain.firmware.kernelBoot.container.image", archive, []string{"/boot/bzImage"}, dir, ContainerDiskOptions{})
	if err == nil || !strings.Contains(err.Error(), "spec.domain.firmware.kernelBoot.container.image: ") || !strings.Contains(err.Error(), "no regular file /boot/bzImage") {
		t.Fatalf("missing kernel: %v", err)
	}
}
