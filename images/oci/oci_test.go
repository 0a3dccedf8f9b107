package oci

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestWriteTarballRoundTrip(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "hello")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "img.tar")
	img := Image{
		Ref:        "kvirt.io/test:v1",
		Files:      []File{{Path: "/usr/bin/hello", Source: bin}, {Path: "/etc/motd", Data: []byte("hi\n")}, {Path: "/tmp", Dir: true, Mode: 0o1777}, {Path: "/usr", Dir: true}},
		Entrypoint: []string{"/usr/bin/hello"},
	}
	if err := WriteTarball(out, img); err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag("kvirt.io/test:v1")
	got, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	cf, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/usr/bin/hello" {
		t.Fatalf("config = %+v", cf)
	}
	layers, err := got.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	entries := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[h.Name] = h
	}
	if h := entries["tmp/"]; h == nil || h.Typeflag != tar.TypeDir || h.Mode != 0o1777 {
		t.Errorf("tmp/ entry = %+v", h)
	}
	for _, want := range []string{"usr/", "usr/bin/", "usr/bin/hello", "etc/", "etc/motd"} {
		if entries[want] == nil {
			t.Errorf("layer lacks %s (has %v)", want, entries)
		}
	}
	if h := entries["usr/bin/hello"]; h != nil && h.Mode != 0o755 {
		t.Errorf("hello mode %o", h.Mode)
	}

	// The same files give the same image digest (reproducible).
	a, _ := Build(img)
	b, _ := Build(img)
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Errorf("digests differ: %s %s", da, db)
	}
}

func TestBuildRejectsBadInput(t *testing.T) {
	for _, img := range []Image{
		{Ref: ""},
		{Ref: "Bad Ref!"},
		{Ref: "kvirt.io/x:1", Files: []File{{Path: "relative", Data: nil}}},
		{Ref: "kvirt.io/x:1", Files: []File{{Path: "/a/../b"}}},
		{Ref: "kvirt.io/x:1", Files: []File{{Path: "/a"}, {Path: "/a"}}},
		{Ref: "kvirt.io/x:1", Files: []File{{Path: "/a", Source: "/nonexistent/file"}}},
	} {
		if _, err := Build(img); err == nil {
			t.Errorf("Build(%+v) accepted bad input", img)
		}
	}
}
