// Command oci-image builds a single-layer container image from host files without a Docker engine and
// writes it as a tarball for `ctr -n k8s.io images import` (or `cluster up -image`):
//
//	oci-image -ref kvirt.io/virt-controller:dev -o build/images/virt-controller.tar \
//	    -entrypoint /usr/bin/virt-controller -file /usr/bin/virt-controller=build/bin/virt-controller
//
// -file IMAGE_PATH=HOST_PATH may repeat; -env KEY=VALUE too. Binaries should be static (CGO_ENABLED=0):
// the image has nothing else.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/kvirt/kvirt/images/oci"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	ref := flag.String("ref", "", "image reference, e.g. kvirt.io/virt-launcher:dev")
	out := flag.String("o", "", "output tarball")
	entrypoint := flag.String("entrypoint", "", "entrypoint, space-separated words")
	user := flag.String("user", "", "user[:group] the container runs as")
	var files, env list
	flag.Var(&files, "file", "IMAGE_PATH=HOST_PATH (repeatable)")
	flag.Var(&env, "env", "KEY=VALUE (repeatable)")
	flag.Parse()
	if *ref == "" || *out == "" || len(files) == 0 {
		fmt.Fprintln(os.Stderr, "oci-image: -ref, -o and at least one -file are required (see -h)")
		os.Exit(2)
	}
	img := oci.Image{Ref: *ref, Env: env, User: *user, Entrypoint: strings.Fields(*entrypoint)}
	for _, f := range files {
		dst, src, ok := strings.Cut(f, "=")
		if !ok || dst == "" || src == "" {
			fmt.Fprintf(os.Stderr, "oci-image: -file %q: want IMAGE_PATH=HOST_PATH\n", f)
			os.Exit(2)
		}
		img.Files = append(img.Files, oci.File{Path: dst, Source: src})
	}
	if err := oci.WriteTarball(*out, img); err != nil {
		fmt.Fprintf(os.Stderr, "oci-image: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("oci-image: wrote %s (%s)\n", *out, *ref)
}
