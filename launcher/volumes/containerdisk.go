package volumes

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/kvirt/kvirt/devices/virtio/blk"
)

// Prefixes of ContainerDisk image references that name local images instead of a registry.
const (
	// OCILayoutPrefix names an OCI image layout directory: "oci:/path/to/layout" (the first manifest of its
	// index), or "oci:/path/to/layout@sha256:..." for one manifest.
	OCILayoutPrefix = "oci:"
	// ArchivePrefix names a `docker save` / go-containerregistry tarball: "docker-archive:/path/image.tar".
	ArchivePrefix = "docker-archive:"
)

// ContainerDiskOptions tune how a containerDisk image is fetched.
type ContainerDiskOptions struct {
	// RemoteOptions are passed to go-containerregistry's remote.Image (auth, transport, platform).
	RemoteOptions []remote.Option
	// Insecure allows plain-HTTP registries (name.Insecure), e.g. a registry on 127.0.0.1 in tests.
	Insecure bool
	// Path is the disk file inside the image (containerDisk.path); empty: the single file under /disk/.
	Path string
	// PullSecret is containerDisk.imagePullSecret. The launcher has no API credentials to read it: a registry
	// pull with a secret is an error here; in a cluster the kubelet pulls such images (launcher/containerdisk).
	PullSecret string
}

// ContainerDisk is a containerDisk volume ready for the VMM.
type ContainerDisk struct {
	// BasePath is the extracted disk file (mode 0444; never written).
	BasePath string
	// Format is "raw" or "qcow2".
	Format string
	// Backend is the copy-on-write view the guest reads and writes.
	Backend Backend
}

// containerDiskBackend is the Overlay that owns its base: closing it closes both.
type containerDiskBackend struct {
	*Overlay
	base *blk.File
}

func (b containerDiskBackend) Close() error {
	return errors.Join(b.Overlay.Close(), b.base.Close())
}

// PrepareContainerDisk fetches the image named by ref, extracts the single disk file under /disk/ into workDir,
// and returns a copy-on-write backend over it (overlay file in workDir). field is the spec path of the volume's
// image field, used in errors (e.g. "spec.volumes[0].containerDisk.image").
//
// ref is a registry reference ("registry.example/disks/fedora:40"), "oci:<dir>[@digest]", or
// "docker-archive:<file>". A plain path to an existing directory or file is accepted as an OCI layout or an
// archive respectively.
func PrepareContainerDisk(ctx context.Context, field, ref, workDir string, opts ContainerDiskOptions) (*ContainerDisk, error) {
	if ref == "" {
		return nil, fieldErr(field, "empty image reference: set it to an image holding a disk under /disk/")
	}
	img, err := loadImage(ctx, ref, opts)
	if err != nil {
		return nil, fieldErr(field, "%w", err)
	}
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return nil, fieldErr(field, "create work directory: %w", err)
	}
	basePath := filepath.Join(workDir, "disk.base")
	if err := extractDisk(ctx, img, basePath, opts.Path); err != nil {
		return nil, fieldErr(field, "image %q: %w", ref, err)
	}
	return OpenContainerDisk(field, basePath, workDir)
}

// OpenContainerDisk puts a copy-on-write overlay (workDir/disk.overlay) over a containerDisk's disk file
// that is already local (extracted by PrepareContainerDisk, or copied by the launcher pod's init container,
// launcher/containerdisk). basePath is opened read-only; raw or qcow2 is detected from its content.
func OpenContainerDisk(field, basePath, workDir string) (*ContainerDisk, error) {
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return nil, fieldErr(field, "create work directory: %w", err)
	}
	base, err := blk.OpenFile(basePath, blk.FileOptions{ReadOnly: true})
	if err != nil {
		return nil, fieldErr(field, "%w", err)
	}
	var ro ReaderAtSize = base
	format := "raw"
	if IsQCOW2(base) {
		q, err := OpenQCOW2(base, base.Size())
		if err != nil {
			base.Close()
			return nil, fieldErr(field, "disk %s: %w", basePath, err)
		}
		ro, format = q, "qcow2"
	}
	ov, err := NewOverlay(ro, filepath.Join(workDir, "disk.overlay"))
	if err != nil {
		base.Close()
		return nil, fieldErr(field, "%w", err)
	}
	return &ContainerDisk{BasePath: basePath, Format: format, Backend: containerDiskBackend{Overlay: ov, base: base}}, nil
}

func loadImage(ctx context.Context, ref string, opts ContainerDiskOptions) (v1.Image, error) {
	switch {
	case strings.HasPrefix(ref, OCILayoutPrefix):
		return loadLayout(strings.TrimPrefix(ref, OCILayoutPrefix))
	case strings.HasPrefix(ref, ArchivePrefix):
		return loadArchive(strings.TrimPrefix(ref, ArchivePrefix))
	}
	if st, err := os.Stat(ref); err == nil {
		if st.IsDir() {
			return loadLayout(ref)
		}
		return loadArchive(ref)
	}
	if opts.PullSecret != "" {
		return nil, fmt.Errorf("imagePullSecret %q: the launcher cannot read pull secrets (it has no API credentials); in a cluster the kubelet pulls the image (the launcher pod's containerDisk init container), locally use an image that needs no secret or a local oci:/docker-archive: reference", opts.PullSecret)
	}
	var nopts []name.Option
	if opts.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, fmt.Errorf("%q is neither a local OCI layout/archive nor a valid image reference: %w", ref, err)
	}
	ropts := append([]remote.Option{remote.WithContext(ctx)}, opts.RemoteOptions...)
	img, err := remote.Image(r, ropts...)
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w (check the image name and that the registry is reachable from the pod)", r, err)
	}
	return img, nil
}

func loadLayout(spec string) (v1.Image, error) {
	dir, digest, _ := strings.Cut(spec, "@")
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w (expected a directory with index.json and blobs/)", dir, err)
	}
	if digest != "" {
		h, err := v1.NewHash(digest)
		if err != nil {
			return nil, fmt.Errorf("OCI layout %s: digest %q: %w", dir, digest, err)
		}
		return p.Image(h)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	for _, d := range m.Manifests {
		if d.MediaType.IsImage() {
			return idx.Image(d.Digest)
		}
	}
	return nil, fmt.Errorf("OCI layout %s holds no image manifest", dir)
}

func loadArchive(file string) (v1.Image, error) {
	if _, err := os.Stat(file); err != nil {
		return nil, fmt.Errorf("image archive: %w", err)
	}
	img, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		return nil, fmt.Errorf("image archive %s: %w (expected a `docker save` tarball holding one image)", file, err)
	}
	return img, nil
}

// extractDisk writes the file want (empty: the one regular file under /disk/) of the image's flattened
// filesystem to dst, sparsely, with mode 0444.
func extractDisk(ctx context.Context, img v1.Image, dst, want string) error {
	if want != "" {
		want = path.Clean("/" + want)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	var found []string
	tmp := dst + ".partial"
	defer os.Remove(tmp)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read image layers: %w", err)
		}
		p := path.Clean("/" + h.Name)
		if h.Typeflag != tar.TypeReg || (want == "" && path.Dir(p) != "/disk") || (want != "" && p != want) {
			continue
		}
		found = append(found, p)
		if len(found) > 1 {
			continue
		}
		if err := writeSparse(ctx, tmp, tr); err != nil {
			return fmt.Errorf("extract %s: %w", p, err)
		}
	}
	switch len(found) {
	case 0:
		if want != "" {
			return fmt.Errorf("no regular file %s in the image: check containerDisk.path", want)
		}
		return errors.New("no disk file under /disk/: build the image with the disk image at /disk/disk.img (raw or qcow2)")
	case 1:
	default:
		return fmt.Errorf("more than one file under /disk/ (%s): keep exactly one disk image there", strings.Join(found, ", "))
	}
	if err := os.Chmod(tmp, 0o444); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// writeSparse copies r to a new file, leaving holes where whole 64 KiB chunks are zero.
func writeSparse(ctx context.Context, dst string, r io.Reader) error {
	f, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	zero := make([]byte, len(buf))
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if !bytes.Equal(buf[:n], zero[:n]) {
				if _, werr := f.WriteAt(buf[:n], off); werr != nil {
					return werr
				}
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if err := f.Truncate(off); err != nil {
		return err
	}
	return f.Sync()
}

// ExtractFiles copies the regular files at paths (absolute paths inside the image named by ref, e.g. a
// kernelBoot container's kernelPath and initrdPath) into dstDir, named by their base names, and returns the
// local path of each. field names the spec field of the image for errors.
func ExtractFiles(ctx context.Context, field, ref string, paths []string, dstDir string, opts ContainerDiskOptions) (map[string]string, error) {
	if ref == "" {
		return nil, fieldErr(field, "empty image reference")
	}
	img, err := loadImage(ctx, ref, opts)
	if err != nil {
		return nil, fieldErr(field, "%w", err)
	}
	if err := os.MkdirAll(dstDir, 0o700); err != nil {
		return nil, fieldErr(field, "%w", err)
	}
	want := map[string]string{}
	for _, p := range paths {
		want[path.Clean("/"+p)] = p
	}
	out := map[string]string{}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for len(out) < len(want) {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fieldErr(field, "image %q: read layers: %w", ref, err)
		}
		p := path.Clean("/" + h.Name)
		orig, ok := want[p]
		if !ok || h.Typeflag != tar.TypeReg {
			continue
		}
		dst := filepath.Join(dstDir, path.Base(p))
		if err := writeSparse(ctx, dst, tr); err != nil {
			return nil, fieldErr(field, "image %q: extract %s: %w", ref, p, err)
		}
		out[orig] = dst
	}
	for p, orig := range want {
		if _, ok := out[orig]; !ok {
			return nil, fieldErr(field, "image %q has no regular file %s", ref, p)
		}
	}
	return out, nil
}
