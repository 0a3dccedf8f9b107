package volumes

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/kvirt/kvirt/devices/virtio/blk"
	"github.com/kvirt/kvirt/devices/virtio/queue"
)

// blkDisk is a prepared backend behind a virtio-blk device: the path a launcher disk takes in the VMM.
type blkDisk struct {
	t   *testing.T
	dev *blk.Device
}

func attachBlk(t *testing.T, b Backend) *blkDisk {
	t.Helper()
	dev, err := blk.New(blk.Config{Backend: b, Size: b.Size(), Name: "vda"})
	if err != nil {
		t.Fatal(err)
	}
	return &blkDisk{t: t, dev: dev}
}

// do serves one request as the device's workers do, its data in the guest buffers data (device-writable
// for IN), and returns the status.
func (x *blkDisk) do(typ uint32, sector uint64, data [][]byte) byte {
	hdr := make([]byte, 16)
	binary.LittleEndian.PutUint32(hdr, typ)
	binary.LittleEndian.PutUint64(hdr[8:], sector)
	c := &queue.Chain{Readable: [][]byte{hdr}, Writable: [][]byte{{0xff}}}
	if typ == blk.TypeIn {
		c.Writable = append(data, c.Writable...)
	} else {
		c.Readable = append(c.Readable, data...)
	}
	_, st := x.dev.Handle(c)
	return st
}

// An emptyDisk and a containerDisk overlay serve a guest's scattered writes and reads (the vectored path),
// FLUSH and DISCARD through the virtio-blk device's request handler, and the containerDisk's base stays
// untouched.
func TestLauncherDisksThroughVirtioBlk(t *testing.T) {
	dir := t.TempDir()
	empty, err := PrepareEmptyDisk("spec.volumes[0].emptyDisk", dir, "scratch", resource.MustParse("1Mi"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { empty.Close() })
	base := make([]byte, 1<<20)
	rand.New(rand.NewSource(3)).Read(base)
	basePath := filepath.Join(dir, "disk.base")
	if err := os.WriteFile(basePath, base, 0o444); err != nil {
		t.Fatal(err)
	}
	cd, err := OpenContainerDisk("spec.volumes[1].containerDisk", basePath, filepath.Join(dir, "cd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cd.Backend.Close() })

	for name, tc := range map[string]struct {
		b    Backend
		orig []byte
	}{"emptyDisk": {empty, make([]byte, 1<<20)}, "containerDisk": {cd.Backend, base}} {
		t.Run(name, func(t *testing.T) {
			x := attachBlk(t, tc.b)
			model := bytes.Clone(tc.orig)
			// Three buffers, the first ending inside a 4 KiB block: partial blocks at both ends for the overlay.
			w := [][]byte{bytes.Repeat([]byte{1}, 1536), bytes.Repeat([]byte{2}, 8192), bytes.Repeat([]byte{3}, 512)}
			if st := x.do(blk.TypeOut, 3, w); st != blk.StatusOK {
				t.Fatalf("write status %d", st)
			}
			copy(model[3*512:], bytes.Join(w, nil))
			if st := x.do(blk.TypeFlush, 0, nil); st != blk.StatusOK {
				t.Fatalf("flush status %d", st)
			}
			seg := make([]byte, 16)
			binary.LittleEndian.PutUint64(seg, 64)
			binary.LittleEndian.PutUint32(seg[8:], 24) // 12 KiB from 32 KiB
			if st := x.do(blk.TypeDiscard, 0, [][]byte{seg}); st != blk.StatusOK {
				t.Fatalf("discard status %d", st)
			}
			clear(model[64*512 : 88*512])
			r := [][]byte{make([]byte, 4096), make([]byte, 512), make([]byte, 64<<10-4608)}
			if st := x.do(blk.TypeIn, 0, r); st != blk.StatusOK {
				t.Fatalf("read status %d", st)
			}
			if !bytes.Equal(bytes.Join(r, nil), model[:64<<10]) {
				t.Fatal("read back differs from what was written and discarded")
			}
		})
	}
	if now, _ := os.ReadFile(basePath); !bytes.Equal(now, base) {
		t.Fatal("the containerDisk's base was written")
	}
}
