package bootdisktest

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

// CpioTree unpacks a newc cpio archive (kvirt's initramfs) into a file tree for an ext4 root filesystem:
// regular files, directories and symlinks (device nodes are left to devtmpfs).
func CpioTree(t testing.TB, path string) map[string]File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(f))
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	tree := map[string]File{}
	for _, r := range recs {
		name := strings.TrimPrefix(filepath.Clean("/"+r.Name), "/")
		if name == "" || name == "TRAILER!!!" {
			continue
		}
		switch r.Mode & cpio.S_IFMT {
		case cpio.S_IFDIR:
			tree[name+"/"] = File{}
		case cpio.S_IFLNK, cpio.S_IFREG:
			b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if err != nil {
				t.Fatal(err)
			}
			if r.Mode&cpio.S_IFMT == cpio.S_IFLNK {
				tree[name] = File{Link: string(b)}
			} else {
				tree[name] = File{Data: string(b), Mode: os.FileMode(r.Mode & 0o777)}
			}
		}
	}
	return tree
}
