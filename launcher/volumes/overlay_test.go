package volumes

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kvirt/kvirt/devices/virtio/blk"
)

// writeBase writes a read-only base file of size bytes with a recognisable pattern and returns it opened,
// its content and its path.
func writeBase(t *testing.T, size int) (*blk.File, []byte, string) {
	t.Helper()
	data := make([]byte, size)
	rand.New(rand.NewSource(1)).Read(data)
	p := filepath.Join(t.TempDir(), "base.img")
	if err := os.WriteFile(p, data, 0o444); err != nil {
		t.Fatal(err)
	}
	f, err := blk.OpenFile(p, blk.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, data, p
}

// split cuts p into up to 5 buffers at random points, as a guest's scatter list.
func split(rng *rand.Rand, p []byte) [][]byte {
	var out [][]byte
	for k := rng.Intn(5); k > 0 && len(p) > 1; k-- {
		n := rng.Intn(len(p))
		out = append(out, p[:n])
		p = p[n:]
	}
	return append(out, p)
}

// readerOnly hides everything but ReadAt and Size, as a QCOW2 base (no vectored reads).
type readerOnly struct{ ReaderAtSize }

// The overlay against a model of the disk, through both the plain and the vectored calls (random scatter
// lists), over a base with vectored reads (raw) and one without (as qcow2).
func TestOverlayCopyOnWrite(t *testing.T) {
	for _, vectoredBase := range []bool{true, false} {
		t.Run(map[bool]string{true: "raw base", false: "base without vectored reads"}[vectoredBase], func(t *testing.T) {
			testOverlayCopyOnWrite(t, vectoredBase)
		})
	}
}

func testOverlayCopyOnWrite(t *testing.T, vectoredBase bool) {
	const size = 5*OverlayBlockSize + 1000 // last block partial
	f, orig, path := writeBase(t, size)
	var base ReaderAtSize = f
	if !vectoredBase {
		base = readerOnly{f}
	}
	sum := sha256.Sum256(orig)
	ov, err := NewOverlay(base, filepath.Join(t.TempDir(), "ov"))
	if err != nil {
		t.Fatal(err)
	}
	defer ov.Close()
	model := bytes.Clone(orig)
	rng := rand.New(rand.NewSource(2))
	for i := 0; i < 400; i++ {
		off := rng.Int63n(size)
		n := rng.Intn(3*OverlayBlockSize) + 1
		if off+int64(n) > size {
			n = int(size - off)
		}
		switch rng.Intn(4) {
		case 0:
			p := make([]byte, n)
			rng.Read(p)
			if w, err := ov.WriteAt(p, off); err != nil || w != n {
				t.Fatalf("WriteAt(%d,+%d) = %d, %v", off, n, w, err)
			}
			copy(model[off:], p)
		case 1:
			p := make([]byte, n)
			rng.Read(p)
			if w, err := ov.WriteVAt(split(rng, p), off); err != nil || w != n {
				t.Fatalf("WriteVAt(%d,+%d) = %d, %v", off, n, w, err)
			}
			copy(model[off:], p)
		case 2:
			got := make([]byte, n)
			if r, err := ov.ReadVAt(split(rng, got), off); err != nil || r != n || !bytes.Equal(got, model[off:off+int64(n)]) {
				t.Fatalf("step %d: ReadVAt(%d,+%d) = %d, %v; differs from the model: %v", i, off, n, r, err, !bytes.Equal(got, model[off:off+int64(n)]))
			}
		case 3:
			if err := ov.PunchHole(off, int64(n)); err != nil {
				t.Fatalf("PunchHole(%d,+%d): %v", off, n, err)
			}
			clear(model[off : off+int64(n)])
		}
		roff := rng.Int63n(size)
		rn := rng.Intn(4 * OverlayBlockSize)
		got := make([]byte, rn)
		r, err := ov.ReadAt(got, roff)
		want := model[roff:min(roff+int64(rn), size)]
		if r != len(want) || !bytes.Equal(got[:r], want) {
			t.Fatalf("step %d: ReadAt(%d,+%d) = %d bytes, %v; differs from the model", i, roff, rn, r, err)
		}
		if roff+int64(rn) > size && err != io.EOF {
			t.Fatalf("read past the end: err %v, want io.EOF", err)
		}
	}
	all := make([]byte, size)
	if _, err := ov.ReadAt(all, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(all, model) {
		t.Fatal("final content differs from the model")
	}
	now, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(now) != sum {
		t.Fatal("the base file was modified")
	}
	if ov.Allocated() == 0 {
		t.Fatal("no block in the overlay after writes")
	}
}

func TestOverlayUnwrittenReadsBaseAndBounds(t *testing.T) {
	base, orig, _ := writeBase(t, 3*OverlayBlockSize)
	ov, err := NewOverlay(base, filepath.Join(t.TempDir(), "ov"))
	if err != nil {
		t.Fatal(err)
	}
	defer ov.Close()
	if _, err := ov.WriteAt([]byte("hello"), OverlayBlockSize+10); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(orig))
	if _, err := ov.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(orig)
	copy(want[OverlayBlockSize+10:], "hello")
	if !bytes.Equal(got, want) {
		t.Fatal("read-modify-write of a partial block lost base bytes")
	}
	if ov.Allocated() != 1 {
		t.Fatalf("allocated %d blocks, want 1", ov.Allocated())
	}
	if _, err := ov.WriteAt([]byte("x"), int64(len(orig))); err == nil {
		t.Fatal("write past the end succeeded")
	}
	if _, err := ov.ReadAt(got[:1], -1); err == nil {
		t.Fatal("negative offset read succeeded")
	}
	if n, err := ov.ReadAt(got[:1], int64(len(orig))); n != 0 || err != io.EOF {
		t.Fatalf("read at the end = %d, %v; want 0, EOF", n, err)
	}
}

func TestOverlayConcurrent(t *testing.T) {
	base, _, _ := writeBase(t, 64*OverlayBlockSize)
	ov, err := NewOverlay(base, filepath.Join(t.TempDir(), "ov"))
	if err != nil {
		t.Fatal(err)
	}
	defer ov.Close()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			// Each goroutine owns every fourth block and checks its own writes.
			buf := make([]byte, OverlayBlockSize)
			for i := g; i < 64; i += 4 {
				for j := range buf {
					buf[j] = byte(i)
				}
				off := int64(i) * OverlayBlockSize
				if _, err := ov.WriteAt(buf[:100], off+7); err != nil {
					t.Error(err)
					return
				}
				got := make([]byte, 100)
				if _, err := ov.ReadAt(got, off+7); err != nil || !bytes.Equal(got, buf[:100]) {
					t.Errorf("block %d: read back %v", i, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}
