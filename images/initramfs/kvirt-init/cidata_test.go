package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kvirt/kvirt/launcher/volumes"
)

func TestParseMetaData(t *testing.T) {
	md := parseMetaData([]byte("instance-id: 7c0b5a3e-1d2f\nlocal-hostname: 'vm1' # name\n# comment\npublic-keys:\n  - ssh-rsa AAA\nempty:\nquoted: \"a:b\"\n"))
	want := map[string]string{"instance-id": "7c0b5a3e-1d2f", "local-hostname": "vm1", "public-keys": "", "empty": "", "quoted": "a:b"}
	if len(md) != len(want) {
		t.Fatalf("got %v", md)
	}
	for k, v := range want {
		if md[k] != v {
			t.Errorf("%s = %q, want %q", k, md[k], v)
		}
	}
}

// The launcher's cidata ISO (launcher/volumes) is recognised by its label, as the guest scans its disks.
func TestVolumeLabelOfLauncherISO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ci.iso")
	if err := volumes.WriteISO(p, "cidata", map[string][]byte{"meta-data": []byte("instance-id: x\n")}); err != nil {
		t.Fatal(err)
	}
	if l, fs := volumeLabel(p); l != "cidata" || fs != "iso9660" {
		t.Fatalf("label %q fstype %q", l, fs)
	}
	other := filepath.Join(t.TempDir(), "zero.img")
	os.WriteFile(other, make([]byte, 64<<10), 0o644)
	if l, fs := volumeLabel(other); l != "" || fs != "" {
		t.Fatalf("zero disk: label %q fstype %q", l, fs)
	}
	if l, fs := volumeLabel("/nonexistent"); l != "" || fs != "" {
		t.Fatalf("missing device: %q %q", l, fs)
	}
}

func TestFATLabel(t *testing.T) {
	bs := make([]byte, 512)
	bs[510], bs[511] = 0x55, 0xaa
	bs[38] = 0x29
	copy(bs[43:54], "CIDATA     ")
	copy(bs[54:62], "FAT12   ")
	if l, ok := fatLabel(bs); !ok || l != "CIDATA" {
		t.Errorf("FAT12: %q %v", l, ok)
	}
	bs32 := make([]byte, 512)
	bs32[510], bs32[511] = 0x55, 0xaa
	bs32[66] = 0x29
	copy(bs32[71:82], "cidata     ")
	copy(bs32[82:90], "FAT32   ")
	if l, ok := fatLabel(bs32); !ok || l != "cidata" {
		t.Errorf("FAT32: %q %v", l, ok)
	}
	bs32[511] = 0
	if _, ok := fatLabel(bs32); ok {
		t.Error("no boot signature accepted")
	}
}

func FuzzCIDataParsers(f *testing.F) {
	f.Add([]byte("instance-id: a\nlocal-hostname: b\n"))
	f.Add(append([]byte{1, 'C', 'D', '0', '0', '1'}, make([]byte, 2042)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseMetaData(b)
		isoLabel(b)
		fatLabel(b)
	})
}
