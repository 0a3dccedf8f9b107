package bootdisk

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	bt "github.com/kvirt/kvirt/launcher/bootdisk/bootdisktest"
)

const (
	rootUUID = "5a6b7c8d-1111-4222-8333-944455556666"
	bootUUID = "0b0b0b0b-1111-4222-8333-944455556666"
	gptRoot  = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	gptBIOS  = "21686148-6449-6E6F-744E-656564454649"
	gptESP   = "C12A7328-F81F-11D2-BA4B-00A0C93EC3B8"
)

func inspectFile(t *testing.T, path string) (*OS, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return Inspect(f, st.Size())
}

// debianLike is Debian 12's cloud image layout: partition 1 the ext4 root with /boot and GRUB, 14 the BIOS
// boot partition, 15 the ESP.
func debianLike(kernelPath string, files map[string]bt.File) bt.Disk {
	tree := map[string]bt.File{
		"boot/vmlinuz-6.1.0-kvirt":    {Data: bt.BzImage("debian kernel")},
		"boot/initrd.img-6.1.0-kvirt": {Data: "initrd bytes"},
		"boot/grub/grub.cfg": {Data: bt.GrubCfg(kernelPath, "/boot/initrd.img-6.1.0-kvirt", rootUUID,
			"console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0")},
		"vmlinuz":      {Link: "boot/vmlinuz-6.1.0-kvirt"},
		"etc/hostname": {Data: "debian\n"},
	}
	for k, v := range files {
		tree[k] = v
	}
	return bt.Disk{Label: "gpt", Partitions: []bt.Partition{
		{Number: 1, SizeMiB: 12, Type: gptRoot, UUID: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", FS: &bt.FS{UUID: rootUUID, Files: tree}},
		{Number: 14, SizeMiB: 1, Type: gptBIOS},
		{Number: 15, SizeMiB: 2, Type: gptESP, Name: "EFI"},
	}}
}

func TestGPTGrubDebianLayout(t *testing.T) {
	img := bt.MakeDisk(t, debianLike("/boot/vmlinuz-6.1.0-kvirt", nil))
	o, err := inspectFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	if o.Table.Kind != "gpt" || len(o.Table.Partitions) != 3 {
		t.Fatalf("table = %+v", o.Table)
	}
	e := o.Entry
	if e.Loader != GRUB || e.Config != "/boot/grub/grub.cfg" || e.Title != "Debian GNU/Linux" {
		t.Errorf("entry = %+v", e)
	}
	if e.Kernel != "/boot/vmlinuz-6.1.0-kvirt" || len(e.Initrds) != 1 || e.Initrds[0] != "/boot/initrd.img-6.1.0-kvirt" {
		t.Errorf("kernel %q initrds %q", e.Kernel, e.Initrds)
	}
	if !strings.HasPrefix(e.Cmdline, "root=UUID="+rootUUID+" ro console=tty0") || strings.Contains(e.Cmdline, "single") {
		t.Errorf("cmdline = %q (want the first entry's, not recovery's)", e.Cmdline)
	}
	if o.Boot.Index != 1 || o.Root == nil || o.Root.Index != 1 || DevicePath("vda", *o.Root) != "/dev/vda1" {
		t.Errorf("boot %+v root %+v", o.Boot, o.Root)
	}
	if o.Root.UUID != "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee" || o.Root.FSUUID != rootUUID {
		t.Errorf("root volume = %+v", o.Root)
	}
	dir := t.TempDir()
	k, i, err := o.Extract(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(k); string(b) != bt.BzImage("debian kernel") {
		t.Errorf("extracted kernel differs (%d bytes)", len(b))
	}
	if b, _ := os.ReadFile(i); string(b) != "initrd bytes" {
		t.Errorf("extracted initrd = %q", b)
	}
	if _, i, _ := o.Extract(t.TempDir(), false); i != "" {
		t.Errorf("initrd extracted although skipped: %q", i)
	}
}

func TestGrubKernelThroughSymlink(t *testing.T) {
	img := bt.MakeDisk(t, debianLike("/vmlinuz", nil))
	o, err := inspectFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	k, _, err := o.Extract(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(k); !bytes.Contains(b, []byte("debian kernel")) {
		t.Error("the symlinked kernel was not followed")
	}
}

func TestMBRExtlinuxSeparateBoot(t *testing.T) {
	boot := map[string]bt.File{
		"extlinux.conf": {Data: "DEFAULT alpine\nPROMPT 0\nLABEL rescue\n  KERNEL /vmlinuz-rescue\nLABEL alpine\n  MENU LABEL Alpine\n  LINUX vmlinuz-lts\n  INITRD initramfs-lts\n  APPEND root=LABEL=alproot modules=ext4 quiet\n"},
		"vmlinuz-lts":   {Data: bt.BzImage("alpine")},
		"initramfs-lts": {Data: "alpine initramfs"},
	}
	img := bt.MakeDisk(t, bt.Disk{Label: "dos", LabelID: "0x1badcafe", Extended: true, Partitions: []bt.Partition{
		{SizeMiB: 4, FS: &bt.FS{Files: boot, Type: "ext2", UUID: bootUUID}},
		{SizeMiB: 1, Type: "82"},
		{SizeMiB: 1, Type: "83"},
		{SizeMiB: 4, FS: &bt.FS{Label: "alproot", Files: map[string]bt.File{"etc/os-release": {Data: "ID=alpine\n"}}}},
	}})
	o, err := inspectFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	if o.Table.Kind != "mbr" || o.Table.DiskID != "1badcafe" {
		t.Fatalf("table = %+v", o.Table)
	}
	e := o.Entry
	if e.Loader != Syslinux || e.Config != "/extlinux.conf" || e.Kernel != "/vmlinuz-lts" {
		t.Errorf("entry = %+v", e)
	}
	if len(e.Initrds) != 1 || e.Initrds[0] != "/initramfs-lts" || e.Cmdline != "root=LABEL=alproot modules=ext4 quiet" {
		t.Errorf("initrds %q cmdline %q", e.Initrds, e.Cmdline)
	}
	if o.Root == nil || o.Root.Index != 5 || o.Root.UUID != "1badcafe-05" {
		t.Errorf("root = %+v (want logical partition 5)", o.Root)
	}
}

func TestMBRAppendInitrdAndDevicePath(t *testing.T) {
	boot := map[string]bt.File{
		"boot/syslinux/syslinux.cfg": {Data: "default linux\nlabel linux\n kernel /boot/bzImage\n append initrd=/boot/initrd.gz root=/dev/sda2 rw\n"},
		"boot/bzImage":               {Data: bt.BzImage("slack")},
		"boot/initrd.gz":             {Data: "gz"},
	}
	img := bt.MakeDisk(t, bt.Disk{Label: "dos", Partitions: []bt.Partition{
		{SizeMiB: 4, FS: &bt.FS{Files: boot}},
		{SizeMiB: 4, FS: &bt.FS{Files: map[string]bt.File{"etc/x": {Data: "x"}}}},
	}})
	o, err := inspectFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	if got := o.Entry.Initrds; len(got) != 1 || got[0] != "/boot/initrd.gz" || o.Entry.Cmdline != "root=/dev/sda2 rw" {
		t.Errorf("initrds %q cmdline %q", got, o.Entry.Cmdline)
	}
	if o.Root == nil || DevicePath("vdb", *o.Root) != "/dev/vdb2" {
		t.Errorf("root = %+v", o.Root)
	}
}

func TestBLSWholeDisk(t *testing.T) {
	files := map[string]bt.File{
		"loader/loader.conf":             {Data: "timeout 3\ndefault arch-*\n"},
		"loader/entries/arch-6.6.conf":   {Data: "title Arch Linux\nversion 6.6\nlinux /vmlinuz-6.6\ninitrd /intel-ucode.img\ninitrd /initramfs-6.6.img\noptions root=PARTUUID=feedface-01 rw\noptions quiet\n"},
		"loader/entries/arch-6.10.conf":  {Data: "title Arch Linux\nversion 6.10\nlinux /vmlinuz-6.10\ninitrd /initramfs-6.10.img\noptions root=UUID=" + rootUUID + " rw\n"},
		"loader/entries/zz-memtest.conf": {Data: "title Memtest\nefi /memtest.efi\n"},
		"vmlinuz-6.10":                   {Data: bt.BzImage("6.10")},
		"initramfs-6.10.img":             {Data: "i"},
		"vmlinuz-6.6":                    {Data: bt.BzImage("6.6")},
		"intel-ucode.img":                {Data: "u"},
		"initramfs-6.6.img":              {Data: "i"},
	}
	img := bt.MakeDisk(t, bt.Disk{Partitions: []bt.Partition{{FS: &bt.FS{UUID: rootUUID, Files: files}}}})
	o, err := inspectFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	e := o.Entry
	// loader.conf's glob matches both arch entries; the highest version (6.10 > 6.6 numerically) wins.
	if e.Loader != BLS || e.Kernel != "/vmlinuz-6.10" || e.Title != "Arch Linux 6.10" {
		t.Errorf("entry = %+v", e)
	}
	if o.Table.Kind != "none" || o.Root == nil || o.Root.Index != 0 || DevicePath("vda", *o.Root) != "/dev/vda" {
		t.Errorf("table %+v root %+v", o.Table, o.Root)
	}
}

func TestFedoraBLSThroughGrub(t *testing.T) {
	files := map[string]bt.File{
		"boot/grub2/grub.cfg": {Data: "set default=\"${saved_entry}\"\nload_env\ninsmod blscfg\nblscfg\n"},
		"boot/grub2/grubenv": {Data: "# GRUB Environment Block\nsaved_entry=abc-6.5.fc39.x86_64\nkernelopts=root=UUID=" + rootUUID + " ro rhgb\n" +
			strings.Repeat("#", 200) + "\n"},
		"boot/loader/entries/abc-6.5.fc39.x86_64.conf": {Data: "title Fedora (6.5)\nversion 6.5\nlinux /vmlinuz-6.5\ninitrd /initramfs-6.5.img $tuned_initrd\noptions $kernelopts $tuned_params\n"},
		"boot/loader/entries/abc-6.7.fc39.x86_64.conf": {Data: "title Fedora (6.7)\nlinux /vmlinuz-6.7\noptions root=/dev/vda9\n"},
		"boot/vmlinuz-6.5":       {Data: bt.BzImage("fc")},
		"boot/initramfs-6.5.img": {Data: "i"},
		"boot/vmlinuz-6.7":       {Data: bt.BzImage("fc7")},
	}
	img := bt.MakeDisk(t, bt.Disk{Label: "gpt", Partitions: []bt.Partition{{SizeMiB: 8, FS: &bt.FS{UUID: rootUUID, Files: files}}}})
	o, err := inspectFile(t, img)
	if err != nil {
		t.Fatal(err)
	}
	e := o.Entry
	if e.Loader != BLS || e.Kernel != "/boot/vmlinuz-6.5" || len(e.Initrds) != 1 || e.Initrds[0] != "/boot/initramfs-6.5.img" {
		t.Errorf("entry = %+v (want grubenv's saved_entry)", e)
	}
	if e.Cmdline != "root=UUID="+rootUUID+" ro rhgb" || o.Root == nil || o.Root.Index != 1 {
		t.Errorf("cmdline %q root %+v", e.Cmdline, o.Root)
	}
}

func TestNotBootable(t *testing.T) {
	blank := filepath.Join(t.TempDir(), "blank")
	if err := os.WriteFile(blank, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, img := range map[string]string{
		"blank":         blank,
		"data ext4":     bt.MakeDisk(t, bt.Disk{Partitions: []bt.Partition{{FS: &bt.FS{Files: map[string]bt.File{"data": {Data: "d"}}}}}}),
		"unformatted":   bt.MakeDisk(t, bt.Disk{Label: "gpt", Partitions: []bt.Partition{{SizeMiB: 2}}}),
		"grub dir only": bt.MakeDisk(t, bt.Disk{Label: "dos", Partitions: []bt.Partition{{SizeMiB: 4, FS: &bt.FS{Files: map[string]bt.File{"boot/grub/fonts/x": {Data: "f"}}}}}}),
	} {
		_, err := inspectFile(t, img)
		if !IsNotBootable(err) {
			t.Errorf("%s: err = %v, want NotBootableError", name, err)
		}
	}
}

func TestBrokenDisks(t *testing.T) {
	missing := bt.MakeDisk(t, debianLike("/boot/vmlinuz-6.1.0-gone", nil))
	notKernel := bt.MakeDisk(t, debianLike("/etc/hostname", nil))

	gpt := bt.MakeDisk(t, debianLike("/boot/vmlinuz-6.1.0-kvirt", nil))
	data, err := os.ReadFile(gpt)
	if err != nil {
		t.Fatal(err)
	}
	badCRC := filepath.Join(t.TempDir(), "badcrc")
	c := bytes.Clone(data)
	c[512+16]++        // primary header CRC
	c[len(c)-512+16]++ // backup header CRC
	if err := os.WriteFile(badCRC, c, 0o644); err != nil {
		t.Fatal(err)
	}
	// Only the primary damaged: the backup is used.
	primaryOnly := filepath.Join(t.TempDir(), "primary")
	c = bytes.Clone(data)
	c[512+16]++
	if err := os.WriteFile(primaryOnly, c, 0o644); err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "truncated")
	if err := os.WriteFile(truncated, data[:6<<20], 0o644); err != nil {
		t.Fatal(err)
	}
	// The ext4 superblock's inode size zeroed.
	badFS := filepath.Join(t.TempDir(), "badfs")
	c = bytes.Clone(data)
	off := 2048*512 + 1024 + 0x58
	c[off], c[off+1] = 0, 0
	if err := os.WriteFile(badFS, c, 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, img, want string
	}{
		{"missing kernel", missing, "names kernel /boot/vmlinuz-6.1.0-gone, which is not on the filesystem"},
		{"bad GPT CRC", badCRC, "header CRC32"},
		{"truncated", truncated, "does not fit"},
		{"corrupt ext4", badFS, "partition 1: ext4: inode size 0 is invalid"},
	} {
		_, err := inspectFile(t, tc.img)
		if err == nil || IsNotBootable(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := inspectFile(t, primaryOnly); err != nil {
		t.Errorf("primary GPT damaged, backup intact: %v", err)
	}
	o, err := inspectFile(t, notKernel)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := o.Extract(t.TempDir(), false); err == nil || !strings.Contains(err.Error(), "not a Linux kernel") {
		t.Errorf("extracting a text file as kernel: %v", err)
	}
}

// TestExt4Reader checks the reader against fstest.TestFS over the layouts mke2fs makes: extents and
// ext2/3 block maps, 1 KiB and 4 KiB blocks, inline data, 64-bit, files spanning indirect blocks.
func TestExt4Reader(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 20000) // 320 KB: double-indirect blocks at 1 KiB
	// 12 pieces with holes between them: 12 extents, more than the inode's 4, so an extent tree of depth 1.
	sparse := map[int64]string{}
	const sparseSize = 11*65536 + 105 // ends with a piece (mke2fs -O inline_data drops a trailing hole)
	want := make([]byte, sparseSize)
	for i := range int64(12) {
		sparse[i*65536+100] = "piece"
		copy(want[i*65536+100:], "piece")
	}
	files := map[string]bt.File{
		"a/b/c.txt":     {Data: "hello"},
		"a/empty":       {},
		"big":           {Data: big},
		"tiny":          {Data: "x"},
		"sparse":        {At: sparse, Size: sparseSize},
		"link-rel":      {Link: "a/b/c.txt"},
		"a/link-abs":    {Link: "/a/b/c.txt"},
		"a/link-dotdot": {Link: "../big"},
		"many/":         {},
	}
	for i := range 120 { // a directory spanning several blocks (hashed by mke2fs)
		files["many/file-"+strings.Repeat("n", i%40)+string(rune('a'+i%26))+string(rune('a'+i/26))] = bt.File{Data: "m"}
	}
	for _, tc := range []bt.FS{
		{},
		{Type: "ext2", BlockSize: 1024},
		{Type: "ext3", BlockSize: 4096},
		{Features: []string{"^extent", "^64bit"}, BlockSize: 1024},
		{Features: []string{"inline_data"}},
		{Features: []string{"64bit", "metadata_csum"}, BlockSize: 2048},
	} {
		name := tc.Type + strings.Join(tc.Features, ",")
		t.Run(name, func(t *testing.T) {
			tc.Files, tc.SizeMiB = files, 16
			// In memory: fstest reads byte by byte, a syscall each from a file.
			data, err := os.ReadFile(bt.MakeFS(t, tc))
			if err != nil {
				t.Fatal(err)
			}
			fsys, err := OpenExt4(bytes.NewReader(data), int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			if err := fstest.TestFS(fsys, "a/b/c.txt", "big", "tiny", "a/empty"); err != nil {
				t.Fatal(err)
			}
			for name, want := range map[string]string{"big": big, "link-rel": "hello", "a/link-abs": "hello",
				"a/link-dotdot": big, "tiny": "x", "a/empty": "", "sparse": string(want)} {
				got, err := fsys.ReadFile(name, 4<<20)
				if err != nil || string(got) != want {
					t.Errorf("%s: %d bytes, err %v", name, len(got), err)
				}
			}
			if _, err := fsys.ReadFile("big", 1000); err == nil {
				t.Error("ReadFile ignored its limit")
			}
		})
	}
}

func TestVersionOrder(t *testing.T) {
	for _, c := range [][2]string{{"6.10", "6.9"}, {"fc39-6.5.12", "fc39-6.5.9"}, {"b", "a"}, {"1.02", "1.1"}} {
		if compareVersions(c[0], c[1]) <= 0 || compareVersions(c[1], c[0]) >= 0 {
			t.Errorf("%s should sort above %s", c[0], c[1])
		}
	}
}

// TestGrubSavedDefault: GRUB_DEFAULT=saved makes grub.cfg boot grubenv's saved_entry (a title, or
// "submenu>title").
func TestGrubSavedDefault(t *testing.T) {
	cfg := "set default=\"${saved_entry}\"\n" +
		"menuentry 'Debian GNU/Linux' {\n linux /boot/vmlinuz-new root=UUID=" + rootUUID + " ro\n}\n" +
		"submenu 'Advanced options' {\n menuentry 'Debian GNU/Linux, with Linux old' {\n  linux /boot/vmlinuz-old root=UUID=" + rootUUID + " ro quiet\n }\n}\n"
	for saved, want := range map[string]string{
		"Advanced options>Debian GNU/Linux, with Linux old": "/boot/vmlinuz-old",
		"Debian GNU/Linux": "/boot/vmlinuz-new",
		"gone":             "/boot/vmlinuz-new",
	} {
		img := bt.MakeDisk(t, bt.Disk{Label: "gpt", Partitions: []bt.Partition{{SizeMiB: 4, FS: &bt.FS{UUID: rootUUID, Files: map[string]bt.File{
			"boot/grub/grub.cfg": {Data: cfg},
			"boot/grub/grubenv":  {Data: "# GRUB Environment Block\nsaved_entry=" + saved + "\n" + strings.Repeat("#", 100)},
			"boot/vmlinuz-new":   {Data: bt.BzImage("new")},
			"boot/vmlinuz-old":   {Data: bt.BzImage("old")},
		}}}}})
		o, err := inspectFile(t, img)
		if err != nil {
			t.Fatal(err)
		}
		if o.Entry.Kernel != want {
			t.Errorf("saved_entry %q: kernel %s, want %s", saved, o.Entry.Kernel, want)
		}
	}
}
