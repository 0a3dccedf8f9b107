// Command benchdoc writes one section of docs/benchmarks.md from standard input:
//
//	go run ./tests/benchdoc/cmd -doc docs/benchmarks.md -section controller < results.md
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/kvirt/kvirt/tests/benchdoc"
)

func main() {
	doc := flag.String("doc", "docs/benchmarks.md", "the Markdown document")
	name := flag.String("section", "", "section name (vmm, virtio, controller, cluster, ...)")
	flag.Parse()
	if *name == "" {
		fmt.Fprintln(os.Stderr, "benchdoc: -section is required (vmm, virtio, controller or cluster)")
		os.Exit(2)
	}
	body, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchdoc:", err)
		os.Exit(1)
	}
	if err := benchdoc.WriteSection(*doc, *name, string(body)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("wrote section %q of %s\n", *name, *doc)
}
