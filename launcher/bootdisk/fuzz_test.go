package bootdisk

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"

	bt "github.com/kvirt/kvirt/launcher/bootdisk/bootdisktest"
)

// seedDisks are small disks of every layout the reader knows (when e2fsprogs and sfdisk are there).
func seedDisks(f *testing.F) [][]byte {
	if _, err := os.Stat("/usr/sbin/mke2fs"); err != nil {
		return nil
	}
	grub := map[string]bt.File{
		"boot/grub/grub.cfg": {Data: "set default=0\nmenuentry 'D' {\n linux /boot/k root=UUID=" + rootUUID + " ro\n initrd /boot/i\n}\n"},
		"boot/k":             {Data: bt.BzImage("k")},
		"boot/i":             {Data: "i"},
		"vmlinuz":            {Link: "boot/k"},
	}
	ext := map[string]bt.File{"extlinux.conf": {Data: "DEFAULT l\nLABEL l\n LINUX /k\n APPEND root=PARTUUID=01020304-05\n"}, "k": {Data: bt.BzImage("k")}}
	bls := map[string]bt.File{"loader/entries/a.conf": {Data: "linux /k\noptions root=LABEL=r\n"}, "k": {Data: bt.BzImage("k")}}
	var out [][]byte
	for _, d := range []bt.Disk{
		{Label: "gpt", Compact: true, Partitions: []bt.Partition{{SizeKiB: 100, FS: &bt.FS{Tiny: true, UUID: rootUUID, Files: grub}}}},
		{Label: "dos", Compact: true, Extended: true, LabelID: "0x01020304", Partitions: []bt.Partition{
			{SizeKiB: 4}, {SizeKiB: 4}, {SizeKiB: 4}, {SizeKiB: 100, FS: &bt.FS{Tiny: true, Files: ext}}}},
		{Partitions: []bt.Partition{{FS: &bt.FS{Tiny: true, SizeKiB: 100, Label: "r", Files: bls}}}},
	} {
		data, err := os.ReadFile(bt.MakeDisk(f, d))
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

func FuzzReadTable(f *testing.F) {
	for _, d := range seedDisks(f) {
		f.Add(d[:min(len(d), 64<<10)])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, err := ReadTable(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		for _, p := range tb.Partitions {
			if p.Start < 0 || p.Size <= 0 || p.Start+p.Size > int64(len(data)) {
				t.Fatalf("partition %+v outside the %d-byte disk", p, len(data))
			}
		}
	})
}

// FuzzExt4 opens the data as a filesystem and reads every file and directory in it.
func FuzzExt4(f *testing.F) {
	for _, d := range seedDisks(f) {
		if IsExt4(bytes.NewReader(d)) {
			f.Add(d)
		}
		if tb, err := ReadTable(bytes.NewReader(d), int64(len(d))); err == nil {
			for _, p := range tb.Partitions {
				if sr := io.NewSectionReader(bytes.NewReader(d), p.Start, p.Size); IsExt4(sr) {
					f.Add(d[p.Start : p.Start+p.Size])
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys, err := OpenExt4(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		n := 0
		fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
			if n++; err != nil || n > 200 {
				return fs.SkipDir
			}
			if d.Type()&fs.ModeSymlink != 0 {
				fsys.ReadLink(p)
			}
			if !d.IsDir() {
				fsys.ReadFile(p, 1<<20)
			}
			return nil
		})
		fsys.ReadFile("boot/grub/grub.cfg", 1<<20)
	})
}

// FuzzFindEntry feeds arbitrary GRUB, BLS and extlinux configurations through the parsers' glue.
func FuzzFindEntry(f *testing.F) {
	f.Add(bt.GrubCfg("/boot/vmlinuz", "/boot/initrd.img", rootUUID, "console=ttyS0"), "title x\nlinux /k\ninitrd /i\noptions root=/dev/vda1\n", "DEFAULT a\nLABEL a\n KERNEL /k\n APPEND initrd=/i root=LABEL=x")
	f.Add("set default=\"${saved_entry}\"\nblscfg\n", "linux $x\noptions $kernelopts\n", "INCLUDE other.cfg\nLABEL a\n LINUX (hd0)/k\n")
	f.Add("configfile /boot/grub/grub.cfg\nmenuentry x {\nlinux (hd0,gpt1)/k\n}", "", "label x\nkernel mboot.c32\nappend /k --- /m")
	f.Fuzz(func(t *testing.T, grubCfg, blsConf, syslinuxCfg string) {
		for _, files := range []fstest.MapFS{
			{"boot/grub/grub.cfg": {Data: []byte(grubCfg)}, "boot/grub/grubenv": {Data: []byte(blsConf)}, "loader/entries/x.conf": {Data: []byte(blsConf)}},
			{"loader/entries/x.conf": {Data: []byte(blsConf)}, "loader/loader.conf": {Data: []byte(syslinuxCfg)}},
			{"extlinux.conf": {Data: []byte(syslinuxCfg)}, "other.cfg": {Data: []byte(grubCfg)}},
		} {
			files["k"] = &fstest.MapFile{Data: []byte(bt.BzImage("k"))}
			e, err := FindEntry(files)
			if err != nil {
				continue
			}
			if e.Kernel == "" || !strings.HasPrefix(e.Kernel, "/") {
				t.Fatalf("entry without an absolute kernel path: %+v", e)
			}
			for _, i := range e.Initrds {
				if !strings.HasPrefix(i, "/") {
					t.Fatalf("relative initrd path %q", i)
				}
			}
		}
	})
}

// FuzzInspect runs the whole disk inspection on arbitrary disks.
func FuzzInspect(f *testing.F) {
	for _, d := range seedDisks(f) {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := Inspect(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if o.Entry == nil || o.FS == nil || o.Entry.Kernel == "" {
			t.Fatalf("inspection succeeded without an entry: %+v", o)
		}
		if o.Root != nil {
			_ = DevicePath("vda", *o.Root)
		}
	})
}
