// Package oci builds container images without a Docker engine: files (usually static binaries) laid
// into a scratch image, written as a `docker save`-style tarball that `ctr images import` loads.
package oci

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// File is one regular file of the image.
type File struct {
	// Path inside the image, absolute ("/usr/bin/virt-launcher").
	Path string
	// Source is a host file to copy; Data is used when Source is empty.
	Source string
	Data   []byte
	// Mode defaults to 0755 for Source files and 0644 for Data (0755 for a Dir).
	Mode int64
	// Dir makes an empty directory (e.g. /tmp with Mode 01777) instead of a file.
	Dir bool
}

// Image describes a single-layer image on top of nothing.
type Image struct {
	// Ref is the name containerd will know it by, e.g. "kvirt.io/virt-launcher:dev".
	Ref        string
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	// User, e.g. "107:107"; empty runs as root.
	User string
}

// epoch makes layers reproducible: the same files give the same digest.
var epoch = time.Unix(0, 0).UTC()

// Build returns the image.
func Build(img Image) (v1.Image, error) {
	if img.Ref == "" {
		return nil, fmt.Errorf("oci: image without a reference")
	}
	if _, err := name.ParseReference(img.Ref); err != nil {
		return nil, fmt.Errorf("oci: image reference %q: %w", img.Ref, err)
	}
	files := append([]File(nil), img.Files...)
	for i, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return nil, fmt.Errorf("oci: %s: file path %q must be absolute and clean", img.Ref, f.Path)
		}
		if f.Source != "" && !f.Dir {
			if _, err := os.Stat(f.Source); err != nil {
				return nil, fmt.Errorf("oci: %s: %w", img.Ref, err)
			}
		}
		for _, g := range files[:i] {
			if g.Path == f.Path {
				return nil, fmt.Errorf("oci: %s: %s listed twice", img.Ref, f.Path)
			}
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeLayer(pw, files)) }()
		return pr, nil
	})
	if err != nil {
		return nil, fmt.Errorf("oci: %s: layer: %w", img.Ref, err)
	}
	out, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("oci: %s: %w", img.Ref, err)
	}
	cf, err := out.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("oci: %s: %w", img.Ref, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = img.Entrypoint
	cf.Config.Cmd = img.Cmd
	cf.Config.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, img.Env...)
	cf.Config.WorkingDir = img.WorkingDir
	cf.Config.User = img.User
	out, err = mutate.ConfigFile(out, cf)
	if err != nil {
		return nil, fmt.Errorf("oci: %s: %w", img.Ref, err)
	}
	return out, nil
}

// WriteTarball builds the images and writes them into one tarball at path.
func WriteTarball(path string, imgs ...Image) error {
	refs := map[name.Reference]v1.Image{}
	for _, img := range imgs {
		built, err := Build(img)
		if err != nil {
			return err
		}
		ref, _ := name.ParseReference(img.Ref)
		refs[ref] = built
	}
	if err := tarball.MultiRefWriteToFile(path, refs); err != nil {
		return fmt.Errorf("oci: write %s: %w", path, err)
	}
	return nil
}

// writeLayer writes the files (sorted by path) with their parent directories as a tar stream.
func writeLayer(w io.Writer, files []File) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	explicit := map[string]bool{}
	for _, f := range files {
		if f.Dir {
			explicit[f.Path] = true
		}
	}
	for _, f := range files {
		var parents []string
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if dirs[d] || explicit[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: epoch}); err != nil {
				return err
			}
		}
		if err := writeFile(tw, f); err != nil {
			return err
		}
	}
	return tw.Close()
}

func writeFile(tw *tar.Writer, f File) error {
	if f.Dir {
		mode := f.Mode
		if mode == 0 {
			mode = 0o755
		}
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(f.Path, "/") + "/", Mode: mode, ModTime: epoch})
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.Path, "/"), Mode: f.Mode, ModTime: epoch}
	if f.Source == "" {
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
		}
		hdr.Size = int64(len(f.Data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(f.Data)
		return err
	}
	src, err := os.Open(f.Source)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	if hdr.Mode == 0 {
		hdr.Mode = 0o755
	}
	hdr.Size = st.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := io.CopyN(tw, src, st.Size()); err != nil {
		return fmt.Errorf("%s: %w", f.Source, err)
	}
	return nil
}
