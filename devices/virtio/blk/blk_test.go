package blk

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvirt/kvirt/devices/virtio/mmio"
	"github.com/kvirt/kvirt/devices/virtio/queue"
	"github.com/kvirt/kvirt/devices/virtio/virtiotest"
)

// memDisk is an in-memory backend that counts syncs.
type memDisk struct {
	mu    sync.Mutex
	b     []byte
	syncs int
	dirty bool
}

func (m *memDisk) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(p, m.b[off:]), nil
}
func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dirty = true
	return copy(m.b[off:], p), nil
}

// bytes and state snapshot the disk under its lock (the device writes from its workers).
func (m *memDisk) bytes(from, to int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.b[from:to]...)
}

func (m *memDisk) state() (syncs int, dirty bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.syncs, m.dirty
}

func (m *memDisk) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.syncs++
	m.dirty = false
	return nil
}

type rig struct {
	t   *testing.T
	d   *virtiotest.Driver
	tr  *mmio.Transport
	dev *Device
	q   *virtiotest.VQ
}

func newRig(t *testing.T, cfg Config, features uint64) *rig {
	t.Helper()
	dev, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d, tr := virtiotest.Attach(t, dev, features, 32<<20)
	return &rig{t: t, d: d, tr: tr, dev: dev, q: d.Queues[0]}
}

const allFeatures = ^uint64(0)

// do submits a request and returns the status and used length. data are the data buffers (for IN they are
// device-writable).
func (r *rig) do(typ uint32, sector uint64, data [][]byte) (byte, uint32) {
	r.t.Helper()
	hdr := make([]byte, 16)
	binary.LittleEndian.PutUint32(hdr, typ)
	binary.LittleEndian.PutUint64(hdr[8:], sector)
	bufs := []virtiotest.Buf{{Addr: r.d.Mem.Put(hdr), Len: 16}}
	var addrs []uint64
	for _, b := range data {
		a := r.d.Mem.Put(b)
		addrs = append(addrs, a)
		bufs = append(bufs, virtiotest.Buf{Addr: a, Len: uint32(len(b)), Write: typ == TypeIn || typ == TypeGetID})
	}
	st := r.d.Mem.Put([]byte{0xff})
	bufs = append(bufs, virtiotest.Buf{Addr: st, Len: 1, Write: true})
	if _, err := r.q.Add(bufs); err != nil {
		r.t.Fatal(err)
	}
	r.q.Kick()
	us, err := r.q.Wait(1, 10*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	for i, a := range addrs {
		copy(data[i], r.d.Mem.Bytes(a, uint64(len(data[i]))))
	}
	return r.d.Mem.Bytes(st, 1)[0], us[0].Len
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

func TestReadWrite(t *testing.T) {
	disk := &memDisk{b: make([]byte, 1<<20)}
	r := newRig(t, Config{Backend: disk, Size: 1 << 20, Serial: "disk-serial-1"}, allFeatures)
	if got := binary.LittleEndian.Uint64(r.d.ReadConfig(0, 8)); got != 2048 {
		t.Fatalf("capacity %d", got)
	}
	w := [][]byte{pattern(512, 1), pattern(1024, 2), pattern(512, 3)}
	if st, _ := r.do(TypeOut, 10, w); st != StatusOK {
		t.Fatalf("write status %d", st)
	}
	if !bytes.Equal(disk.bytes(10*512, 10*512+2048), bytes.Join(w, nil)) {
		t.Fatal("disk content differs from written data")
	}
	rd := [][]byte{make([]byte, 1536), make([]byte, 512)}
	st, n := r.do(TypeIn, 10, rd)
	if st != StatusOK || n != 2049 {
		t.Fatalf("read status %d len %d", st, n)
	}
	if !bytes.Equal(bytes.Join(rd, nil), bytes.Join(w, nil)) {
		t.Fatal("read back differs")
	}
	// FLUSH syncs the backend.
	before, _ := disk.state()
	if st, _ := r.do(TypeFlush, 0, nil); st != StatusOK {
		t.Fatalf("flush status %d", st)
	}
	if after, _ := disk.state(); after != before+1 {
		t.Fatalf("flush: syncs %d→%d", before, after)
	}
	// GET_ID.
	id := [][]byte{make([]byte, 20)}
	if st, n := r.do(TypeGetID, 0, id); st != StatusOK || n != 21 || string(bytes.TrimRight(id[0], "\x00")) != "disk-serial-1" {
		t.Fatalf("get id status %d len %d %q", st, n, id[0])
	}
	// Out of range, unaligned, unknown.
	if st, _ := r.do(TypeIn, 2047, [][]byte{make([]byte, 1024)}); st != StatusIOErr {
		t.Fatalf("read past end: status %d", st)
	}
	if st, _ := r.do(TypeIn, ^uint64(0)>>1, [][]byte{make([]byte, 512)}); st != StatusIOErr {
		t.Fatalf("huge sector: status %d", st)
	}
	if st, _ := r.do(TypeOut, 0, [][]byte{make([]byte, 100)}); st != StatusIOErr {
		t.Fatalf("unaligned write: status %d", st)
	}
	if st, _ := r.do(99, 0, nil); st != StatusUnsupp {
		t.Fatalf("unknown type: status %d", st)
	}
	// Close syncs.
	disk.WriteAt([]byte{1}, 0)
	r.tr.Close()
	if err := r.dev.Close(); err != nil {
		t.Fatal(err)
	}
	if _, dirty := disk.state(); dirty {
		t.Fatal("Close did not sync the backend")
	}
	if r.tr.NeedsReset() {
		t.Fatal("needs reset")
	}
}

// VIRTIO_RING_F_INDIRECT_DESC is not offered (see Features); a driver that posts an indirect chain anyway
// breaks the device (DEVICE_NEEDS_RESET) and the request is not served.
func TestIndirectNotOffered(t *testing.T) {
	disk := &memDisk{b: make([]byte, 64<<10)}
	r := newRig(t, Config{Backend: disk, Size: 64 << 10}, allFeatures)
	if r.d.Features&(1<<queue.FeatureIndirectDesc) != 0 {
		t.Fatal("VIRTIO_RING_F_INDIRECT_DESC negotiated")
	}
	hdr := make([]byte, 16)
	binary.LittleEndian.PutUint32(hdr, TypeOut)
	if _, err := r.q.AddIndirect([]virtiotest.Buf{
		{Addr: r.d.Mem.Put(hdr), Len: 16},
		{Addr: r.d.Mem.Put(pattern(512, 4)), Len: 512},
		{Addr: r.d.Mem.Put([]byte{0xff}), Len: 1, Write: true},
	}); err != nil {
		t.Fatal(err)
	}
	r.q.Kick()
	deadline := time.Now().Add(10 * time.Second)
	for !r.tr.NeedsReset() {
		if time.Now().After(deadline) {
			t.Fatal("an indirect chain without the feature did not break the device")
		}
		time.Sleep(time.Millisecond)
	}
	if !bytes.Equal(disk.bytes(0, 512), make([]byte, 512)) {
		t.Fatal("the refused request was written")
	}
}

func TestReadOnly(t *testing.T) {
	disk := &memDisk{b: pattern(64<<10, 9)}
	r := newRig(t, Config{Backend: disk, Size: 64 << 10, ReadOnly: true}, allFeatures)
	if r.d.Features&(1<<FeatureRO) == 0 {
		t.Fatal("VIRTIO_BLK_F_RO not negotiated")
	}
	if st, _ := r.do(TypeOut, 0, [][]byte{make([]byte, 512)}); st != StatusIOErr {
		t.Fatalf("write to read-only disk: status %d", st)
	}
	if !bytes.Equal(disk.bytes(0, 64<<10), pattern(64<<10, 9)) {
		t.Fatal("read-only disk modified")
	}
	rd := [][]byte{make([]byte, 512)}
	if st, _ := r.do(TypeIn, 0, rd); st != StatusOK || !bytes.Equal(rd[0], disk.bytes(0, 512)) {
		t.Fatal("read from read-only disk failed")
	}
}

// Many requests in flight at once all complete with correct data.
func TestConcurrent(t *testing.T) {
	disk := &memDisk{b: make([]byte, 4<<20)}
	r := newRig(t, Config{Backend: disk, Size: 4 << 20, Workers: 4}, allFeatures)
	const n = 64
	sts := make([]uint64, n)
	for i := 0; i < n; i++ {
		hdr := make([]byte, 16)
		binary.LittleEndian.PutUint32(hdr, TypeOut)
		binary.LittleEndian.PutUint64(hdr[8:], uint64(i*8))
		sts[i] = r.d.Mem.Put([]byte{0xff})
		if _, err := r.q.Add([]virtiotest.Buf{
			{Addr: r.d.Mem.Put(hdr), Len: 16},
			{Addr: r.d.Mem.Put(pattern(4096, byte(i))), Len: 4096},
			{Addr: sts[i], Len: 1, Write: true},
		}); err != nil {
			t.Fatal(err)
		}
	}
	r.q.Kick()
	if _, err := r.q.Wait(n, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if s := r.d.Mem.Bytes(sts[i], 1)[0]; s != StatusOK {
			t.Fatalf("request %d status %d", i, s)
		}
		if !bytes.Equal(disk.bytes(i*4096, (i+1)*4096), pattern(4096, byte(i))) {
			t.Fatalf("block %d wrong", i)
		}
	}
}

func allocated(t *testing.T, path string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// A raw file backend: written data lands in the file, DISCARD punches holes, WRITE_ZEROES zeroes, O_DIRECT works.
func TestFileBackend(t *testing.T) {
	for _, direct := range []bool{false, true} {
		name := "buffered"
		if direct {
			name = "direct"
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk.img")
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, 8<<20); err != nil {
				t.Fatal(err)
			}
			f, err := OpenFile(path, FileOptions{Direct: direct})
			if err != nil {
				t.Skipf("open (O_DIRECT unsupported here?): %v", err)
			}
			r := newRig(t, Config{Backend: f, Size: f.Size(), OwnBackend: true}, allFeatures)
			for _, bit := range []int{FeatureDiscard, FeatureWriteZeroes, FeatureFlush} {
				if r.d.Features&(1<<bit) == 0 {
					t.Fatalf("feature %d not negotiated", bit)
				}
			}
			data := pattern(1<<20, 5)
			var bufs [][]byte
			for i := 0; i < len(data); i += 64 << 10 {
				bufs = append(bufs, data[i:i+64<<10])
			}
			if st, _ := r.do(TypeOut, 2048, bufs); st != StatusOK {
				t.Fatalf("write status %d", st)
			}
			if st, _ := r.do(TypeFlush, 0, nil); st != StatusOK {
				t.Fatalf("flush status %d", st)
			}
			got, _ := os.ReadFile(path)
			if !bytes.Equal(got[1<<20:2<<20], data) {
				t.Fatal("file content differs")
			}
			full := allocated(t, path)
			if full < 1<<20 {
				t.Fatalf("only %d bytes allocated after a 1 MiB write", full)
			}
			seg := make([]byte, 16)
			binary.LittleEndian.PutUint64(seg, 2048)
			binary.LittleEndian.PutUint32(seg[8:], 1024) // first 512 KiB
			if st, _ := r.do(TypeDiscard, 0, [][]byte{seg}); st != StatusOK {
				t.Fatalf("discard status %d", st)
			}
			if a := allocated(t, path); a > full-(512<<10) {
				t.Fatalf("allocation %d → %d: discard did not punch a hole", full, a)
			}
			binary.LittleEndian.PutUint64(seg, 3072)
			binary.LittleEndian.PutUint32(seg[8:], 8)
			if st, _ := r.do(TypeWriteZeroes, 0, [][]byte{seg}); st != StatusOK {
				t.Fatalf("write zeroes status %d", st)
			}
			rd := [][]byte{make([]byte, 1<<20)}
			if st, _ := r.do(TypeIn, 2048, rd); st != StatusOK {
				t.Fatalf("read status %d", st)
			}
			want := append(make([]byte, 512<<10+4096), data[512<<10+4096:]...)
			if !bytes.Equal(rd[0], want) {
				t.Fatal("read after discard/zero differs")
			}
			// Bad discard segment: beyond the end, or with unknown flags.
			binary.LittleEndian.PutUint64(seg, 16383)
			binary.LittleEndian.PutUint32(seg[8:], 2)
			if st, _ := r.do(TypeDiscard, 0, [][]byte{seg}); st != StatusIOErr {
				t.Fatalf("discard past end: status %d", st)
			}
		})
	}
}

// FuzzRequest feeds arbitrary request chains to the parser and handler over an in-memory disk.
func FuzzRequest(f *testing.F) {
	hdr := func(typ uint32, sector uint64) []byte {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint32(b, typ)
		binary.LittleEndian.PutUint64(b[8:], sector)
		return b
	}
	seg := make([]byte, 16)
	binary.LittleEndian.PutUint64(seg, 1)
	binary.LittleEndian.PutUint32(seg[8:], 2)
	f.Add(hdr(TypeIn, 0), []byte{}, uint16(512), uint8(2))
	f.Add(hdr(TypeOut, 3), make([]byte, 1024), uint16(0), uint8(1))
	f.Add(hdr(TypeFlush, 0), []byte{}, uint16(0), uint8(1))
	f.Add(hdr(TypeGetID, 0), []byte{}, uint16(20), uint8(1))
	f.Add(hdr(TypeDiscard, 0), seg, uint16(0), uint8(1))
	f.Add(hdr(TypeWriteZeroes, 0), append(seg[:12:12], 1, 0, 0, 0), uint16(0), uint8(3))
	f.Add(hdr(TypeIn, 1<<60), []byte{}, uint16(4096), uint8(1))
	f.Fuzz(func(t *testing.T, h, payload []byte, inLen uint16, split uint8) {
		disk := &memDisk{b: make([]byte, 64<<10)}
		dev, err := New(Config{Backend: disk, Size: 64 << 10, Serial: "s"})
		if err != nil {
			t.Fatal(err)
		}
		rd := append(append([]byte{}, h...), payload...)
		// Split the readable bytes into up to `split` pieces to exercise headers spanning buffers.
		var readable [][]byte
		k := max(int(split%8), 1)
		step := max(len(rd)/k, 1)
		for len(rd) > 0 {
			n := min(step, len(rd))
			readable = append(readable, rd[:n])
			rd = rd[n:]
		}
		writable := [][]byte{make([]byte, int(inLen)%8192), {0xff}}
		c := &queue.Chain{Readable: readable, Writable: writable}
		n, st := dev.Handle(c)
		if st != StatusOK && st != StatusIOErr && st != StatusUnsupp {
			t.Fatalf("status %d", st)
		}
		if int(n) > len(writable[0])+1 {
			t.Fatalf("reported %d bytes written into %d", n, len(writable[0])+1)
		}
	})
}

// gateDisk blocks reads at offset 0 until release is closed, telling entered when one starts.
type gateDisk struct {
	memDisk
	entered chan struct{}
	release chan struct{}
}

func (g *gateDisk) ReadAt(p []byte, off int64) (int, error) {
	if off == 0 {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.memDisk.ReadAt(p, off)
}

// A lone read is served without a worker hand-off; requests the guest adds and kicks while it is still being
// served must all complete afterwards, each with its interrupt (no kick lost while the popper was busy).
func TestLoneReadThenBatch(t *testing.T) {
	disk := &gateDisk{memDisk: memDisk{b: make([]byte, 4<<20)}, entered: make(chan struct{}, 1), release: make(chan struct{})}
	copy(disk.b, pattern(4096, 42))
	r := newRig(t, Config{Backend: disk, Size: 4 << 20, Workers: 4}, allFeatures)
	add := func(typ uint32, sector uint64, data []byte) (dataAddr, status uint64) {
		hdr := make([]byte, 16)
		binary.LittleEndian.PutUint32(hdr, typ)
		binary.LittleEndian.PutUint64(hdr[8:], sector)
		dataAddr, status = r.d.Mem.Put(data), r.d.Mem.Put([]byte{0xff})
		if _, err := r.q.Add([]virtiotest.Buf{
			{Addr: r.d.Mem.Put(hdr), Len: 16},
			{Addr: dataAddr, Len: uint32(len(data)), Write: typ == TypeIn},
			{Addr: status, Len: 1, Write: true},
		}); err != nil {
			t.Fatal(err)
		}
		return dataAddr, status
	}
	readAddr, readSt := add(TypeIn, 0, make([]byte, 4096))
	r.q.Kick()
	select {
	case <-disk.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the lone read never reached the backend")
	}
	const n = 8
	var sts []uint64
	for i := 0; i < n; i++ {
		_, st := add(TypeOut, uint64(8+8*i), pattern(4096, byte(i)))
		sts = append(sts, st)
		r.q.Kick()
	}
	close(disk.release)
	if _, err := r.q.Wait(n+1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if s := r.d.Mem.Bytes(readSt, 1)[0]; s != StatusOK || !bytes.Equal(r.d.Mem.Bytes(readAddr, 4096), pattern(4096, 42)) {
		t.Fatalf("lone read: status %d, data right %v", s, bytes.Equal(r.d.Mem.Bytes(readAddr, 4096), pattern(4096, 42)))
	}
	for i, st := range sts {
		if s := r.d.Mem.Bytes(st, 1)[0]; s != StatusOK {
			t.Fatalf("write %d status %d", i, s)
		}
		if !bytes.Equal(disk.bytes((8+8*i)*512, (8+8*i)*512+4096), pattern(4096, byte(i))) {
			t.Fatalf("write %d: wrong data on disk", i)
		}
	}
}

func TestDiskName(t *testing.T) {
	for i, want := range map[int]string{-1: "", 0: "vda", 1: "vdb", 25: "vdz", 26: "vdaa", 27: "vdab", 51: "vdaz", 52: "vdba", 701: "vdzz", 702: "vdaaa"} {
		if got := DiskName(i); got != want {
			t.Errorf("DiskName(%d) = %q, want %q", i, got, want)
		}
	}
}
