package guesttest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bootTimeout bounds one guest run: boot is tens of seconds on PVM (interpreted ring 0), minutes when the
// shared machine is loaded.
const bootTimeout = 10 * time.Minute

// mkext4 makes an ext4 image of size bytes holding files (name → content).
func mkext4(t *testing.T, size int64, files map[string][]byte) string {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed: apt-get install e2fsprogs")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "root")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// No journal and no lazy init: nothing for the (slow) guest to do in the background.
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-E", "lazy_itable_init=0,lazy_journal_init=0",
		"-d", src, img).CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	return img
}

// debugfsCat reads a file from an ext4 image on the host.
func debugfsCat(t *testing.T, img, name string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat /"+name, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", name, err)
	}
	return string(out)
}

func randomToken(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// The guest mounts /dev/vda (ext4), reads the host's file, writes and syncs one; after the guest powers off,
// the host image holds it.
func TestDiskReadWriteDurable(t *testing.T) {
	t.Parallel()
	img := mkext4(t, 32<<20, map[string][]byte{"hello": []byte("hello from the host\n")})
	token := randomToken(t)
	g := startGuest(t, vmOptions{
		Disks:   []diskOption{{Path: img}},
		Cmdline: "kvirt.test=disk,poweroff kvirt.write=" + token,
	})
	g.expect(t, "kvirt-guest: read=hello from the host", bootTimeout)
	g.expect(t, "kvirt-guest: disk ok", bootTimeout)
	g.waitExit(t, bootTimeout)
	if got := strings.TrimSpace(debugfsCat(t, img, "written")); got != token {
		t.Fatalf("host image /written = %q, want %q", got, token)
	}
}

// A read-only disk: the guest sees it read-only, a read-write mount fails, and the image is unchanged.
func TestDiskReadOnly(t *testing.T) {
	t.Parallel()
	img := mkext4(t, 16<<20, map[string][]byte{"hello": []byte("ro\n")})
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	g := startGuest(t, vmOptions{
		Disks:   []diskOption{{Path: img, ReadOnly: true}},
		Cmdline: `kvirt.test="sh:echo RO=$(cat /sys/block/vda/ro)",disk,poweroff kvirt.write=x`,
	})
	g.expect(t, "RO=1", bootTimeout)
	g.expect(t, "kvirt-guest: error disk", bootTimeout)
	g.waitExit(t, bootTimeout)
	after, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("read-only image changed")
	}
}

// Two disks appear as vda and vdb in order, each with its serial.
func TestTwoDisksWithSerials(t *testing.T) {
	t.Parallel()
	a := mkext4(t, 8<<20, nil)
	b := mkext4(t, 8<<20, nil)
	g := startGuest(t, vmOptions{
		Disks:   []diskOption{{Path: a, Serial: "kvirt-disk-a"}, {Path: b, Serial: "kvirt-disk-b", ReadOnly: true}},
		Cmdline: `kvirt.test="sh:echo A=$(cat /sys/block/vda/serial) B=$(cat /sys/block/vdb/serial) BRO=$(cat /sys/block/vdb/ro)",poweroff`,
	})
	g.expect(t, "A=kvirt-disk-a B=kvirt-disk-b BRO=1", bootTimeout)
	g.expect(t, "kvirt-guest: sh exit=0", bootTimeout)
	g.waitExit(t, bootTimeout)
}

func allocatedBytes(t *testing.T, path string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// Deleting a file on a filesystem mounted with -o discard punches holes in the host image.
func TestDiskDiscardShrinksAllocation(t *testing.T) {
	t.Parallel()
	big := make([]byte, 8<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	img := mkext4(t, 32<<20, map[string][]byte{"big": big})
	before := allocatedBytes(t, img)
	g := startGuest(t, vmOptions{
		Disks:   []diskOption{{Path: img}},
		Cmdline: `kvirt.test="sh:mount -o discard /dev/vda /mnt && rm /mnt/big && sync && umount /mnt",poweroff`,
	})
	g.expect(t, "kvirt-guest: sh exit=0", bootTimeout)
	g.waitExit(t, bootTimeout)
	after := allocatedBytes(t, img)
	t.Logf("host allocation %d → %d bytes", before, after)
	if after > before-6<<20 {
		t.Fatalf("allocation %d → %d: discard did not free the deleted file's 8 MiB", before, after)
	}
}
