// Command cluster brings kvirt's single-node test cluster up and down (`just cluster-up`,
// `just cluster-down`) and reports what a cluster left behind (`cluster leftovers`).
//
//	cluster up [-dir build/cluster] [-image x.tar ...]
//	cluster down [-dir build/cluster]
//	cluster load [-dir build/cluster] IMAGE.tar...   (import into the running cluster's containerd)
//	cluster leftovers [-dir build/cluster]
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kvirt/kvirt/tests/harness"
)

type images []string

func (i *images) String() string     { return strings.Join(*i, ",") }
func (i *images) Set(v string) error { *i = append(*i, v); return nil }

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", "", "cluster directory (default build/cluster in the repository)")
	var imgs images
	if os.Args[1] == "up" {
		fs.Var(&imgs, "image", "image tarball to import into containerd (repeatable)")
	}
	_ = fs.Parse(os.Args[2:])
	opts := harness.NodeOptions{Dir: *dir, Images: imgs}
	switch os.Args[1] {
	case "up":
		if err := harness.Up(opts); err != nil {
			fmt.Fprintf(os.Stderr, "[cluster-up] FAILED: %v\n[cluster-up] component logs are in build/cluster/run/; `just cluster-down` cleans up\n", err)
			os.Exit(1)
		}
	case "down":
		if err := harness.Down(opts); err != nil {
			fmt.Fprintf(os.Stderr, "[cluster-down] FAILED: %v\n", err)
			os.Exit(1)
		}
	case "load":
		d := *dir
		if d == "" {
			d = "build/cluster"
		}
		sock := filepath.Join(d, "containerd", "containerd.sock")
		if _, err := os.Stat(sock); err != nil {
			fmt.Fprintf(os.Stderr, "[cluster-load] no containerd socket at %s: run `just cluster-up` first\n", sock)
			os.Exit(1)
		}
		for _, img := range fs.Args() {
			if err := harness.ImportImage(sock, img); err != nil {
				fmt.Fprintf(os.Stderr, "[cluster-load] FAILED: %v\n", err)
				os.Exit(1)
			}
			fmt.Printf("[cluster-load] imported %s\n", img)
		}
	case "leftovers":
		d := *dir
		if d == "" {
			d = "build/cluster"
		}
		left := harness.Leftovers(d)
		for _, l := range left {
			fmt.Println(l)
		}
		if len(left) > 0 {
			os.Exit(1)
		}
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: cluster up|down|load|leftovers [-dir DIR] [-image TARBALL ...] [TARBALL...]")
	os.Exit(2)
}
