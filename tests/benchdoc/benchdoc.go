// Package benchdoc keeps docs/benchmarks.md as one document with a section per benchmark suite (vmm, virtio,
// controller, cluster), each rewritten by its own `just bench-*` recipe without touching the others.
//
// A section is the text between "<!-- bench:NAME -->" and "<!-- /bench:NAME -->". Writing a section that is not
// there yet appends it, in the order of Order when the others are present.
package benchdoc

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Order is the order of the sections in the document.
var Order = []string{"vmm", "virtio", "controller", "cluster"}

const header = "# kvirt benchmarks\n\n" +
	"Each section is written by its own recipe (`just bench-vmm`, `just bench-virtio`, `just bench-controller`,\n" +
	"`just bench-cluster`; `just bench` runs the first three). Every figure stands beside the reference measured in the\n" +
	"same run on the same machine, as a ratio.\n"

func markers(name string) (string, string) {
	return "<!-- bench:" + name + " -->", "<!-- /bench:" + name + " -->"
}

// WriteSection replaces (or adds) section name of the Markdown document at path with body.
func WriteSection(path, name, body string) error {
	if name == "" || strings.ContainsAny(name, " \n>") {
		return fmt.Errorf("benchdoc: bad section name %q", name)
	}
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("benchdoc: %w", err)
	}
	out := Update(string(old), name, body)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("benchdoc: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(out), 0o644); err != nil {
		return fmt.Errorf("benchdoc: %w", err)
	}
	return os.Rename(tmp, path)
}

// Update returns doc with section name set to body. A document without sections (or empty) is replaced by the
// header and the section.
func Update(doc, name, body string) string {
	sections := map[string]string{}
	var extra []string
	for _, n := range append(append([]string{}, Order...), found(doc)...) {
		if _, seen := sections[n]; seen {
			continue
		}
		if s, ok := section(doc, n); ok {
			sections[n] = s
			if !contains(Order, n) {
				extra = append(extra, n)
			}
		}
	}
	if _, ok := sections[name]; !ok && !contains(Order, name) {
		extra = append(extra, name)
	}
	sections[name] = strings.TrimSpace(body)
	var b strings.Builder
	b.WriteString(header)
	for _, n := range append(append([]string{}, Order...), extra...) {
		s, ok := sections[n]
		if !ok {
			continue
		}
		open, closing := markers(n)
		fmt.Fprintf(&b, "\n%s\n%s\n%s\n", open, s, closing)
	}
	return b.String()
}

func section(doc, name string) (string, bool) {
	open, closing := markers(name)
	i := strings.Index(doc, open)
	if i < 0 {
		return "", false
	}
	rest := doc[i+len(open):]
	j := strings.Index(rest, closing)
	if j < 0 {
		return "", false
	}
	return strings.TrimSpace(rest[:j]), true
}

func found(doc string) []string {
	var names []string
	for _, part := range strings.Split(doc, "<!-- bench:")[1:] {
		if k := strings.Index(part, " -->"); k > 0 {
			names = append(names, part[:k])
		}
	}
	return names
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
