// Package bootdisktest builds small bootable-looking disk images for tests with the real tools a cloud image
// is made with: mke2fs -d fills an ext2/3/4 filesystem from a directory tree, sfdisk writes the MBR or GPT.
// Nothing is mounted and no loop device is used. Tests that call it skip when e2fsprogs or sfdisk are missing.
package bootdisktest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// File is one file of a filesystem tree: content, or a symlink target when Link is set. A path ending in "/"
// is an (empty) directory.
type File struct {
	Data string
	Link string
	Mode os.FileMode // 0: 0644
	// At writes these pieces at their offsets of a sparse file of Size bytes (instead of Data): mke2fs keeps
	// the holes, so the file gets one extent per piece.
	At   map[int64]string
	Size int64
}

// FS describes an ext2/3/4 filesystem.
type FS struct {
	Files map[string]File // path (without leading slash) → file
	// Type is "ext4" (default), "ext2" or "ext3"; Features are extra mke2fs -O words (e.g. "^extent",
	// "inline_data"); BlockSize 0 is mke2fs' default.
	Type      string
	Features  []string
	BlockSize int
	UUID      string
	Label     string
	SizeMiB   int // default 8
	// SizeKiB, if set, replaces SizeMiB; Tiny makes the smallest filesystem mke2fs can (1 KiB blocks, 32
	// inodes, no journal): fuzz seeds.
	SizeKiB int
	Tiny    bool
}

// Partition is one partition of a disk; FS nil leaves it unformatted.
type Partition struct {
	Number  int // 0: the next number
	SizeMiB int
	SizeKiB int    // replaces SizeMiB when set
	Type    string // sfdisk type (GPT GUID or MBR hex byte); default Linux
	UUID    string // GPT partition GUID
	Name    string // GPT partition name
	FS      *FS
}

// Disk describes a disk: Label "gpt", "dos" (MBR) or "" (one filesystem on the whole disk, Partitions[0]).
type Disk struct {
	Label      string
	LabelID    string
	Partitions []Partition
	// Extended puts the MBR partitions after the first three in an extended partition (logical, from 5).
	Extended bool
	// Compact packs the partitions without 1 MiB alignment (small fuzz seeds).
	Compact bool
}

func (p Partition) sectors() int64 {
	if p.SizeKiB != 0 {
		return int64(p.SizeKiB) * 2
	}
	return int64(p.SizeMiB) << 11
}

// Need skips the test when the image tools are missing.
func Need(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"mke2fs", "sfdisk"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err := os.Stat("/usr/sbin/" + tool); err != nil {
				t.Skipf("%s not found (Debian: e2fsprogs, fdisk)", tool)
			}
		}
	}
}

func tool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return "/usr/sbin/" + name
}

// MakeFS builds a filesystem image file and returns its path.
func MakeFS(t testing.TB, f FS) string {
	t.Helper()
	Need(t)
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, fl := range f.Files {
		p := filepath.Join(tree, name)
		dir := filepath.Dir(p)
		if strings.HasSuffix(name, "/") { // a directory
			dir = p
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, "/") {
			continue
		}
		if fl.Link != "" {
			if err := os.Symlink(fl.Link, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		mode := fl.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(p, []byte(fl.Data), mode); err != nil {
			t.Fatal(err)
		}
		if fl.At != nil {
			if err := os.Truncate(p, fl.Size); err != nil {
				t.Fatal(err)
			}
			w, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			for off, d := range fl.At {
				if _, err := w.WriteAt([]byte(d), off); err != nil {
					t.Fatal(err)
				}
			}
			w.Close()
		}
	}
	img := filepath.Join(dir, "fs.img")
	size := f.SizeMiB
	if size == 0 {
		size = 8
	}
	args := []string{"-q", "-F", "-t", cmpOr(f.Type, "ext4"), "-d", tree, "-E", "root_owner=0:0"}
	if len(f.Features) > 0 {
		args = append(args, "-O", strings.Join(f.Features, ","))
	}
	if f.BlockSize != 0 {
		args = append(args, "-b", fmt.Sprint(f.BlockSize))
	}
	if f.UUID != "" {
		args = append(args, "-U", f.UUID)
	}
	if f.Label != "" {
		args = append(args, "-L", f.Label)
	}
	if f.Tiny {
		args = append(args, "-b", "1024", "-N", "32", "-O", "^has_journal,^resize_inode", "-m", "0")
	}
	sz := fmt.Sprintf("%dM", size)
	if f.SizeKiB != 0 {
		sz = fmt.Sprintf("%dK", f.SizeKiB)
	}
	args = append(args, img, sz)
	cmd := exec.Command(tool("mke2fs"), args...)
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1700000000", "MKE2FS_DETERMINISTIC=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mke2fs %v: %v\n%s", args, err, out)
	}
	return img
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// MakeDisk builds a disk image and returns its path.
func MakeDisk(t testing.TB, d Disk) string {
	t.Helper()
	Need(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if d.Label == "" {
		if len(d.Partitions) != 1 || d.Partitions[0].FS == nil {
			t.Fatal("a disk without a partition table holds exactly one filesystem")
		}
		fs := MakeFS(t, *d.Partitions[0].FS)
		if err := os.Rename(fs, img); err != nil {
			t.Fatal(err)
		}
		return img
	}
	align, gap, tail := int64(2048), int64(2048), int64(2048) // sectors: 1 MiB alignment, room for an EBR, GPT's backup
	if d.Compact {
		align, gap, tail = 40, 8, 40
	}
	total := align + tail
	for _, p := range d.Partitions {
		total += p.sectors() + gap
	}
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, total*512); err != nil {
		t.Fatal(err)
	}
	var script strings.Builder
	fmt.Fprintf(&script, "label: %s\n", d.Label)
	if d.LabelID != "" {
		fmt.Fprintf(&script, "label-id: %s\n", d.LabelID)
	}
	if d.Compact && d.Label == "gpt" {
		script.WriteString("first-lba: 34\n")
	}
	type placed struct {
		start int64 // sectors
		p     Partition
	}
	var layout []placed
	start := align
	for i, p := range d.Partitions {
		typ := p.Type
		if typ == "" {
			typ = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
			if d.Label == "dos" {
				typ = "83"
			}
		}
		if d.Extended && i == 3 {
			fmt.Fprintf(&script, "start=%d, type=5\n", start)
			start += gap
		} else if d.Extended && i > 3 {
			start += gap // room for the next EBR
		}
		line := fmt.Sprintf("start=%d, size=%d, type=%s", start, p.sectors(), typ)
		if p.UUID != "" {
			line += ", uuid=" + p.UUID
		}
		if p.Name != "" {
			line += ", name=" + p.Name
		}
		if p.Number != 0 {
			line = fmt.Sprintf("%s%d : %s", img, p.Number, line)
		}
		script.WriteString(line + "\n")
		layout = append(layout, placed{start, p})
		start += p.sectors()
	}
	cmd := exec.Command(tool("sfdisk"), "-q", "--no-reread", "--no-tell-kernel", img)
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s\nscript:\n%s", err, out, script.String())
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range layout {
		if l.p.FS == nil {
			continue
		}
		fsi := *l.p.FS
		if fsi.SizeKiB == 0 || int64(fsi.SizeKiB)*2 > l.p.sectors() {
			fsi.SizeKiB = int(l.p.sectors() / 2)
		}
		data, err := os.ReadFile(MakeFS(t, fsi))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(data, l.start*512); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// BzImage returns a minimal file that carries a bzImage setup header ("HdrS" at 0x202): enough for the
// disk reader's kernel check, not bootable.
func BzImage(tag string) string {
	b := make([]byte, 0x400)
	b[0x1fe], b[0x1ff] = 0x55, 0xaa
	copy(b[0x202:], "HdrS")
	copy(b[0x300:], tag)
	return string(b)
}

// GrubCfg is a grub.cfg in the shape grub-mkconfig writes on Debian 12, booting kernel and initrd (paths as
// in the filesystem) with root=UUID=rootUUID and the extra command line words.
func GrubCfg(kernel, initrd, rootUUID, extra string) string {
	return fmt.Sprintf(`#
# DO NOT EDIT THIS FILE
#
# It is automatically generated by grub-mkconfig using templates
# from /etc/grub.d and settings from /etc/default/grub
#

### BEGIN /etc/grub.d/00_header ###
if [ -s $prefix/grubenv ]; then
  set have_grubenv=true
  load_env
fi
if [ "${next_entry}" ] ; then
   set default="${next_entry}"
   set next_entry=
   save_env next_entry
   set boot_once=true
else
   set default="0"
fi

if [ x"${feature_menuentry_id}" = xy ]; then
  menuentry_id_option="--id"
else
  menuentry_id_option=""
fi

export menuentry_id_option

function load_video {
  if [ x$feature_all_video_module = xy ]; then
    insmod all_video
  fi
}

serial --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
### END /etc/grub.d/00_header ###

### BEGIN /etc/grub.d/10_linux ###
function gfxmode {
	set gfxpayload="${1}"
}
set linux_gfx_mode=
export linux_gfx_mode
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-%[3]s' {
	load_video
	insmod gzio
	if [ x$grub_platform = xxen ]; then insmod xzio; insmod lzopio; fi
	insmod part_gpt
	insmod ext2
	search --no-floppy --fs-uuid --set=root %[3]s
	echo	'Loading Linux 6.1.0-kvirt ...'
	linux	%[1]s root=UUID=%[3]s ro %[4]s
	echo	'Loading initial ramdisk ...'
	initrd	%[2]s
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-%[3]s' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-kvirt' --class debian $menuentry_id_option 'gnulinux-6.1.0-kvirt-advanced-%[3]s' {
		load_video
		insmod gzio
		search --no-floppy --fs-uuid --set=root %[3]s
		linux	%[1]s root=UUID=%[3]s ro %[4]s
		initrd	%[2]s
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-kvirt (recovery mode)' --class debian $menuentry_id_option 'gnulinux-6.1.0-kvirt-recovery-%[3]s' {
		load_video
		search --no-floppy --fs-uuid --set=root %[3]s
		linux	%[1]s root=UUID=%[3]s ro single %[4]s
		initrd	%[2]s
	}
}
### END /etc/grub.d/10_linux ###
`, kernel, initrd, rootUUID, extra)
}
