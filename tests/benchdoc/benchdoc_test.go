package benchdoc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUpdateKeepsOtherSectionsInOrder(t *testing.T) {
	doc := Update("", "controller", "C1")
	doc = Update(doc, "vmm", "V1")
	doc = Update(doc, "custom", "X")
	doc = Update(doc, "controller", "C2\n")
	if strings.Contains(doc, "C1") || !strings.Contains(doc, "C2") || !strings.Contains(doc, "V1") || !strings.Contains(doc, "X") {
		t.Fatalf("doc:\n%s", doc)
	}
	v, c, x := strings.Index(doc, "V1"), strings.Index(doc, "C2"), strings.Index(doc, "\nX\n")
	if !(v < c && c < x) {
		t.Fatalf("sections out of order (vmm %d, controller %d, custom %d):\n%s", v, c, x, doc)
	}
	if again := Update(doc, "controller", "C2"); again != doc {
		t.Fatalf("rewriting the same section changed the document:\n%s\n---\n%s", doc, again)
	}
}

func TestUpdateReplacesUnsectionedDocument(t *testing.T) {
	doc := Update("# old VMM-only table\n| a | b |\n", "vmm", "V")
	if strings.Contains(doc, "old VMM-only") || !strings.HasPrefix(doc, "# kvirt benchmarks") {
		t.Fatalf("doc:\n%s", doc)
	}
}

func TestWriteSection(t *testing.T) {
	p := filepath.Join(t.TempDir(), "docs", "b.md")
	if err := WriteSection(p, "virtio", "body"); err != nil {
		t.Fatal(err)
	}
	if err := WriteSection(p, "bad name", "x"); err == nil {
		t.Fatal("a section name with a space was accepted")
	}
	b, err := os.ReadFile(p)
	if err != nil || !strings.Contains(string(b), "<!-- bench:virtio -->\nbody\n<!-- /bench:virtio -->") {
		t.Fatalf("%v\n%s", err, b)
	}
}
