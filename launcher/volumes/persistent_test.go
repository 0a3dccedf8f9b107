package volumes

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvirt/kvirt/devices/virtio/blk"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
)

func q(s string) *resource.Quantity { v := resource.MustParse(s); return &v }

// KubeVirt's replaceForHostDisk: the request when smaller than the capacity, else the capacity, aligned
// down to 1 MiB.
func TestClaimDiskSize(t *testing.T) {
	for _, tc := range []struct {
		name               string
		requests, capacity *resource.Quantity
		want               int64
		err                string
	}{
		{"bound, capacity larger than the request", q("1Gi"), q("2Gi"), 1 << 30, ""},
		{"bound, capacity smaller than the request", q("2Gi"), q("1Gi"), 1 << 30, ""},
		{"unbound: the request", q("512Mi"), nil, 512 << 20, ""},
		{"capacity only", nil, q("3Gi"), 3 << 30, ""},
		{"decimal request aligned down", q("1G"), nil, 953 << 20, ""},
		{"below 1 MiB", q("100Ki"), nil, 0, "below 1 MiB"},
		{"no size at all", nil, nil, 0, "neither"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ClaimDiskSize(ClaimInfo{Name: "c", Requests: tc.requests, Capacity: tc.capacity})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("size %d (%v), want %d", got, err, tc.want)
			}
		})
	}
}

// withFree makes the volume report free bytes of space for the test.
func withFree(t *testing.T, free int64) {
	old := freeBytes
	freeBytes = func(string) (int64, error) { return free, nil }
	t.Cleanup(func() { freeBytes = old })
}

// KubeVirt's handleRequestedSizeAndCreateSparseRaw: the space short of the request by at most 10 % (after
// the 128 KiB reserve) is used with a warning; more is an error naming the numbers.
func TestCreateDiskImageToleration(t *testing.T) {
	const size = 100 << 20
	for _, tc := range []struct {
		name     string
		free     int64
		want     int64
		warn     bool
		errMatch string
	}{
		{"room to spare", 1 << 30, size, false, ""},
		{"exactly enough with the reserve", size + MinimumReserveBytes, size, false, ""},
		{"5 % short: tolerated", size*95/100 + MinimumReserveBytes, (size*95/100 + 0) &^ 511, true, ""},
		{"20 % short: refused", size*80/100 + MinimumReserveBytes, 0, false, "also after a 10% toleration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withFree(t, tc.free)
			p := filepath.Join(t.TempDir(), "disk.img")
			got, warnings, err := createDiskImage(p, size, LessSpaceToleration, MinimumReserveBytes)
			if tc.errMatch != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errMatch) {
					t.Fatalf("err %v, want %q", err, tc.errMatch)
				}
				if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a refused image was left behind: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st, _ := os.Stat(p)
			if got != tc.want || st.Size() != tc.want {
				t.Errorf("created %d (file %d), want %d", got, st.Size(), tc.want)
			}
			if tc.warn != (len(warnings) == 1 && strings.HasPrefix(warnings[0], "ToleratedSmallPV")) {
				t.Errorf("warnings %q", warnings)
			}
		})
	}
}

// A filesystem-mode claim: not mounted is an error naming the volume; mounted and empty, disk.img is
// created at the claim's size and kept (with its data) across opens; a read-only claim or an unknown size
// cannot create it; a Block-mode claim needs its device.
func TestPreparePVC(t *testing.T) {
	const field = "spec.volumes[3].persistentVolumeClaim"
	root := t.TempDir()
	loc := PodPVCLocation(root, "data")
	claim := &ClaimInfo{Name: "data-claim", Requests: q("16Mi"), Capacity: q("20Mi")}
	if _, err := PreparePVC(field, loc, claim, PersistentOptions{}); err == nil || !strings.Contains(err.Error(), field+": neither") {
		t.Fatalf("claim not mounted: %v", err)
	}
	if err := os.MkdirAll(loc.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := PreparePVC(field, loc, claim, PersistentOptions{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "read-only and holds no disk.img") {
		t.Fatalf("read-only empty claim: %v", err)
	}
	if _, err := PreparePVC(field, loc, nil, PersistentOptions{}); err == nil || !strings.Contains(err.Error(), "size is unknown") {
		t.Fatalf("no claim info: %v", err)
	}
	d, err := PreparePVC(field, loc, claim, PersistentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Path != PVCDiskPath(root, "data") || d.Backend.Size() != 16<<20 {
		t.Fatalf("created %s of %d bytes", d.Path, d.Backend.Size())
	}
	data := bytes.Repeat([]byte("persist!"), 512) // 4 KiB: aligned for O_DIRECT
	if _, err := d.Backend.WriteAt(data, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(d.Backend.Sync(), d.Backend.Close()); err != nil {
		t.Fatal(err)
	}
	// The next pod: the same image, a larger claim does not grow or recreate it.
	bigger := &ClaimInfo{Name: "data-claim", Requests: q("64Mi")}
	d, err = PreparePVC(field, loc, bigger, PersistentOptions{ReadOnly: true, Cache: CacheWriteBack})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := d.Backend.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, data) || d.Backend.Size() != 16<<20 {
		t.Fatalf("reopened image: size %d, data kept %v (%v)", d.Backend.Size(), bytes.Equal(got, data), err)
	}
	if _, err := d.Backend.WriteAt(data, 0); err == nil {
		t.Error("a read-only claim's disk took a write")
	}
	d.Backend.Close()

	// A link in the claim is not followed (it could name any file of the launcher's container).
	linkLoc := PodPVCLocation(root, "linked")
	os.MkdirAll(linkLoc.Dir, 0o755)
	if err := os.Symlink(PVCDiskPath(root, "data"), filepath.Join(linkLoc.Dir, PVCDiskFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := PreparePVC(field, linkLoc, claim, PersistentOptions{}); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("disk.img as a link: %v", err)
	}

	blockClaim := &ClaimInfo{Name: "raw", Block: true, Requests: q("1Gi")}
	if _, err := PreparePVC(field, PodPVCLocation(root, "raw"), blockClaim, PersistentOptions{}); err == nil || !strings.Contains(err.Error(), "Block mode") {
		t.Fatalf("block claim without its device: %v", err)
	}
	notDev := filepath.Join(root, "dev", "plain")
	os.MkdirAll(filepath.Dir(notDev), 0o755)
	os.WriteFile(notDev, nil, 0o644)
	if _, err := PreparePVC(field, PodPVCLocation(root, "plain"), blockClaim, PersistentOptions{}); err == nil || !strings.Contains(err.Error(), "not a block device") {
		t.Fatalf("a file at the device path: %v", err)
	}
}

// Local runs name a file, a directory (disk.img inside) or a device for a claim.
func TestLocalPVCLocation(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "disk.raw")
	os.WriteFile(file, make([]byte, 1<<20), 0o644)
	for _, tc := range []struct {
		path string
		want PVCLocation
	}{{file, PVCLocation{File: file}}, {dir, PVCLocation{Dir: dir}}, {"/dev/null", PVCLocation{}}} {
		got, err := LocalPVCLocation(tc.path)
		if tc.want == (PVCLocation{}) {
			if err != nil {
				continue // /dev/null is a character device
			}
			if got.Device != "" {
				// a character device is reported as a device and refused when opened as a disk
				continue
			}
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v (%v), want %+v", tc.path, got, err, tc.want)
		}
	}
	if _, err := LocalPVCLocation(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing path was accepted")
	}
	d, err := PreparePVC("f", PVCLocation{File: file}, nil, PersistentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Backend.Size() != 1<<20 {
		t.Errorf("size %d", d.Backend.Size())
	}
	d.Backend.Close()
}

// KubeVirt's cache modes: the default is none (O_DIRECT) where the filesystem supports it, writethrough
// where it does not (tmpfs); an explicit none there is an error; writethrough makes each write durable.
func TestCacheModes(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(disk, make([]byte, 1<<20), 0o644)
	d, err := openPersistent("f", disk, PersistentOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Cache != CacheNone {
		t.Errorf("default on %s: %s, want none (O_DIRECT works there)", filepath.Dir(disk), d.Cache)
	}
	d.Backend.Close()

	d, err = openPersistent("f", disk, PersistentOptions{Cache: CacheWriteThrough}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Backend.(writeThrough); !ok || d.BlockSize != 0 {
		t.Errorf("writethrough: %T, block size %d", d.Backend, d.BlockSize)
	}
	if _, err := d.Backend.WriteAt([]byte("x"), 0); err != nil {
		t.Error(err)
	}
	d.Backend.Close()
	d, err = openPersistent("f", disk, PersistentOptions{Cache: CacheWriteBack}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Backend.(*blk.File); !ok || d.Cache != CacheWriteBack {
		t.Errorf("writeback: %s %T", d.Cache, d.Backend)
	}
	d.Backend.Close()

	// A filesystem without O_DIRECT (tmpfs before Linux 6.6).
	shm, err := os.MkdirTemp("/dev/shm", "kvirt-cache-")
	if err != nil {
		t.Skipf("no tmpfs to try: %v", err)
	}
	defer os.RemoveAll(shm)
	tmpfsDisk := filepath.Join(shm, "disk.img")
	os.WriteFile(tmpfsDisk, make([]byte, 1<<20), 0o644)
	if fd, err := unix.Open(tmpfsDisk, unix.O_RDONLY|unix.O_DIRECT, 0); err == nil {
		unix.Close(fd)
		t.Skip("tmpfs supports O_DIRECT on this kernel (6.6+): no filesystem here lacks it")
	}
	if _, err := openPersistent("spec.volumes[0].hostDisk", tmpfsDisk, PersistentOptions{Cache: CacheNone}, nil); err == nil || !strings.Contains(err.Error(), "needs O_DIRECT") {
		t.Fatalf("cache none on tmpfs: %v", err)
	}
	d, err = openPersistent("f", tmpfsDisk, PersistentOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d.Backend.(writeThrough); !ok || d.Cache != CacheWriteThrough {
		t.Errorf("default on tmpfs: %s with %T, want writethrough", d.Cache, d.Backend)
	}
	d.Backend.Close()
}

// countSyncs counts the flushes that reach the file.
type countSyncs struct {
	*blk.File
	n int
}

func (c *countSyncs) Sync() error { c.n++; return c.File.Sync() }

// writethrough: each write, vectored write, discard and write-zeroes is made durable before it completes
// (and the wrapper keeps blk's vectored fast path).
func TestWriteThroughSyncsEachWrite(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(p, make([]byte, 1<<20), 0o644)
	f, err := blk.OpenFile(p, blk.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := &countSyncs{File: f}
	w := writeThrough{c}
	var _ interface {
		ReadVAt([][]byte, int64) (int, error)
		WriteVAt([][]byte, int64) (int, error)
	} = w
	steps := []func() error{
		func() error { _, err := w.WriteAt([]byte("a"), 0); return err },
		func() error { _, err := w.WriteVAt([][]byte{[]byte("b"), []byte("c")}, 512); return err },
		func() error { return w.WriteZeroes(4096, 4096) },
		func() error { return w.PunchHole(8192, 4096) },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
		if c.n != i+1 {
			t.Fatalf("after step %d: %d syncs", i, c.n)
		}
	}
	got := make([]byte, 2)
	w.ReadAt(got, 512)
	if string(got) != "bc" || c.n != len(steps) {
		t.Fatalf("read %q, %d syncs (a read must not sync)", got, c.n)
	}
}

// hostDisk: Disk must exist, DiskOrCreate creates it at its capacity and keeps it (and its data) after;
// a capacity larger than an existing disk is refused.
func TestPrepareHostDisk(t *testing.T) {
	const f = "spec.volumes[4].hostDisk"
	root := t.TempDir()
	p := HostDiskPath(root, "hd", "/mnt/disks/hd.img")
	if !strings.HasSuffix(p, VMIDisksDir+"/hd/hd.img") {
		t.Fatalf("hostDisk path %s", p)
	}
	if _, err := PrepareHostDisk(f, p, "/mnt/disks/hd.img", HostDiskExists, nil, PersistentOptions{}); err == nil || !strings.Contains(err.Error(), f+".path") {
		t.Fatalf("missing Disk: %v", err)
	}
	if _, err := PrepareHostDisk(f, p, "/mnt/disks/hd.img", HostDiskOrCreate, nil, PersistentOptions{}); err == nil || !strings.Contains(err.Error(), f+".capacity: required") {
		t.Fatalf("DiskOrCreate without capacity: %v", err)
	}
	hb, err := PrepareHostDisk(f, p, "/mnt/disks/hd.img", HostDiskOrCreate, q("10Mi"), PersistentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if hb.Backend.Size() != 10<<20 {
		t.Fatalf("created %d bytes", hb.Backend.Size())
	}
	keep := bytes.Repeat([]byte("k"), 4096)
	if _, err := hb.Backend.WriteAt(keep, 0); err != nil {
		t.Fatal(err)
	}
	hb.Backend.Sync()
	hb.Backend.Close()
	hb, err = PrepareHostDisk(f, p, "/mnt/disks/hd.img", HostDiskExists, nil, PersistentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	hb.Backend.ReadAt(got, 0)
	hb.Backend.Close()
	if !bytes.Equal(got, keep) {
		t.Fatalf("hostDisk lost its data: %q", got[:8])
	}
	if _, err := PrepareHostDisk(f, p, "/mnt/disks/hd.img", HostDiskOrCreate, q("20Mi"), PersistentOptions{}); err == nil || !strings.Contains(err.Error(), "larger than the existing disk") {
		t.Fatalf("capacity larger than the disk: %v", err)
	}
	if _, err := PrepareHostDisk(f, p, "/x", "Directory", nil, PersistentOptions{}); err == nil || !strings.Contains(err.Error(), f+".type") {
		t.Fatalf("bad type: %v", err)
	}
	withFree(t, 1<<20)
	if _, err := PrepareHostDisk(f, filepath.Join(root, "big.img"), "/big.img", HostDiskOrCreate, q("1Gi"), PersistentOptions{}); err == nil || !strings.Contains(err.Error(), f+".capacity: not enough space") {
		t.Fatalf("no room: %v", err)
	}
}

// A claim's disk in each cache mode behind the virtio-blk device: scattered writes and reads (the vectored
// path, through O_DIRECT's bounce buffers for none), DISCARD and FLUSH, whose fdatasync reaches the file;
// the next pod's open sees what the guest flushed.
func TestPVCDiskThroughVirtioBlk(t *testing.T) {
	for _, mode := range []Cache{CacheNone, CacheWriteThrough, CacheWriteBack} {
		t.Run(string(mode), func(t *testing.T) {
			loc := PVCLocation{Dir: t.TempDir()}
			claim := &ClaimInfo{Name: "c", Requests: q("4Mi")}
			d, err := PreparePVC("f", loc, claim, PersistentOptions{Cache: mode})
			if err != nil {
				t.Fatal(err)
			}
			if d.Cache != mode {
				t.Fatalf("cache %s, want %s", d.Cache, mode)
			}
			var counted *countSyncs
			switch b := d.Backend.(type) {
			case *blk.File:
				counted = &countSyncs{File: b}
				d.Backend = counted
			case writeThrough:
				counted = &countSyncs{File: b.rawFile.(*blk.File)}
				d.Backend = writeThrough{counted}
			}
			x := attachBlk(t, d.Backend)
			w := [][]byte{bytes.Repeat([]byte{7}, 1536), bytes.Repeat([]byte{8}, 2560)}
			if st := x.do(blk.TypeOut, 8, w); st != blk.StatusOK {
				t.Fatalf("write status %d", st)
			}
			writes := counted.n // writethrough: already durable
			if mode == CacheWriteThrough && writes == 0 {
				t.Error("writethrough: the write completed without a sync")
			}
			if st := x.do(blk.TypeFlush, 0, nil); st != blk.StatusOK || counted.n != writes+1 {
				t.Fatalf("flush status %d, %d syncs after %d", st, counted.n, writes)
			}
			r := [][]byte{make([]byte, 512), make([]byte, 3584)}
			if st := x.do(blk.TypeIn, 8, r); st != blk.StatusOK || !bytes.Equal(bytes.Join(r, nil), bytes.Join(w, nil)) {
				t.Fatalf("read back: status %d", st)
			}
			if err := d.Backend.Close(); err != nil {
				t.Fatal(err)
			}
			again, err := PreparePVC("f", loc, claim, PersistentOptions{Cache: mode, ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer again.Backend.Close()
			got := make([]byte, 4096)
			if _, err := again.Backend.ReadAt(got, 8*512); err != nil || !bytes.Equal(got, bytes.Join(w, nil)) {
				t.Fatalf("the next open reads %v (%v)", got[:8], err)
			}
		})
	}
}
