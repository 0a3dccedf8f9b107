package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/devices/virtio/blk"
	"github.com/kvirt/kvirt/images"
	"github.com/kvirt/kvirt/launcher/bootdisk"
	bt "github.com/kvirt/kvirt/launcher/bootdisk/bootdisktest"
	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/launcher/grace"
	"github.com/kvirt/kvirt/launcher/spec"
	"github.com/kvirt/kvirt/tests/testenv"
	"sigs.k8s.io/yaml"
)

const testRootUUID = "5a6b7c8d-1111-4222-8333-944455556666"

func debianOS(cmdline string, root *bootdisk.Volume, rootSpec string) *bootdisk.OS {
	return &bootdisk.OS{Entry: &bootdisk.Entry{Loader: bootdisk.GRUB, Config: "/boot/grub/grub.cfg", Title: "Debian GNU/Linux",
		Kernel: "/boot/vmlinuz-6.1.0-28-cloud-amd64", Initrds: []string{"/boot/initrd.img-6.1.0-28-cloud-amd64"}, Cmdline: cmdline},
		Root: root, RootSpec: rootSpec}
}

// TestDecideBoot is the boot decision table (docs/boot.md).
func TestDecideBoot(t *testing.T) {
	p1 := &bootdisk.Volume{Partition: bootdisk.Partition{Index: 1}, FSType: "ext4", FSUUID: testRootUUID}
	deb := debianOS("root=UUID="+testRootUUID+" ro console=tty0 console=ttyS0,115200", p1, "UUID="+testRootUUID)
	corrupt := errors.New("partition table: GPT: header CRC32 is 0x1, the header says 0x2")
	notOS := &bootdisk.NotBootableError{Reason: "no GRUB, BLS or extlinux/syslinux configuration on ext4 on the whole disk"}
	disk := func(in bootInput) bootInput {
		in.disk, in.field, in.device = "rootdisk", "spec.domain.devices.disks[0]", "vda"
		return in
	}
	for _, tc := range []struct {
		name    string
		in      bootInput
		kernel  control.BootKernel
		cmdline string // exact, when set
		has     []string
		lacks   []string
		msg     string
		err     string
	}{
		{name: "stock host boots the image's kernel", in: disk(bootInput{stockOK: true, os: deb}), kernel: control.ImageKernel,
			cmdline: "root=UUID=" + testRootUUID + " ro console=tty0 console=ttyS0,115200",
			msg:     `booted the image's own kernel /boot/vmlinuz-6.1.0-28-cloud-amd64 from disk "rootdisk" (grub entry "Debian GNU/Linux" in /boot/grub/grub.cfg)`},
		{name: "image kernel gets the serial console when its entry has none",
			in:     disk(bootInput{stockOK: true, os: debianOS("root=UUID=x ro console=tty0 quiet", p1, "UUID=x")}),
			kernel: control.ImageKernel, cmdline: "root=UUID=x ro console=tty0 quiet console=ttyS0"},
		{name: "PVM host boots the platform kernel on the image's root", in: disk(bootInput{os: deb}), kernel: control.PlatformKernel,
			has:   []string{"root=/dev/vda1", "reboot=k", "panic=-1", "console=tty0 console=ttyS0,115200", " ro "},
			lacks: []string{"UUID=", "quiet", "GODEBUG", "initrd"},
			msg:   "booted kvirt's platform kernel with the image's root filesystem /dev/vda1 (root=UUID=" + testRootUUID + ") and command line from disk \"rootdisk\""},
		{name: "annotation forces the image kernel on PVM", in: disk(bootInput{force: spec.BootImageKernel, os: deb}), kernel: control.ImageKernel,
			msg: "(kvirt.io/boot-kernel: image)"},
		{name: "annotation forces the platform kernel on a stock host", in: disk(bootInput{force: spec.BootPlatformKernel, stockOK: true, os: deb}),
			kernel: control.PlatformKernel, msg: "without the image's initrd: kvirt.io/boot-kernel: platform"},
		{name: "platform kernel on the second disk's partition 3",
			in: bootInput{disk: "os", field: "spec.domain.devices.disks[1]", device: "vdb",
				os: debianOS("root=PARTLABEL=r", &bootdisk.Volume{Partition: bootdisk.Partition{Index: 3}}, "PARTLABEL=r")},
			kernel: control.PlatformKernel, has: []string{"root=/dev/vdb3"}},
		{name: "unresolved PARTUUID is passed to the platform kernel",
			in:     disk(bootInput{os: debianOS("root=PARTUUID=abcd-01 rw", nil, "PARTUUID=abcd-01")}),
			kernel: control.PlatformKernel, has: []string{"root=PARTUUID=abcd-01", " rw "}},
		{name: "root UUID on another disk cannot boot the platform kernel",
			in:  disk(bootInput{os: debianOS("root=UUID=elsewhere", nil, "UUID=elsewhere")}),
			err: `spec.domain.devices.disks[0] (disk "rootdisk"): /boot/grub/grub.cfg: root=UUID=elsewhere is not a filesystem on this disk`},
		{name: "no root= cannot boot the platform kernel", in: disk(bootInput{os: debianOS("quiet", nil, "")}),
			err: `the default entry "Debian GNU/Linux" has no root=`},
		{name: "no OS: built-in guest, said so", in: disk(bootInput{stockOK: true, err: notOS}), kernel: control.BuiltInGuest,
			msg: `no bootable operating system on disk "rootdisk": booting kvirt's built-in guest (no GRUB, BLS or extlinux/syslinux configuration`},
		{name: "no OS but a forced kernel fails", in: disk(bootInput{force: spec.BootImageKernel, err: notOS}),
			err: `spec.domain.devices.disks[0] (disk "rootdisk"): no bootable operating system: no GRUB, BLS or extlinux/syslinux configuration on ext4 on the whole disk, but kvirt.io/boot-kernel asks for the image kernel`},
		{name: "corrupt disk fails naming it", in: disk(bootInput{stockOK: true, err: corrupt}),
			err: `spec.domain.devices.disks[0] (disk "rootdisk"): partition table: GPT: header CRC32`},
		{name: "no disks: built-in guest", in: bootInput{stockOK: true}, kernel: control.BuiltInGuest,
			msg: "the VMI has no disks: booting kvirt's built-in guest"},
		{name: "builtin forced", in: disk(bootInput{force: spec.BootBuiltIn, os: deb}), kernel: control.BuiltInGuest,
			msg: `kvirt.io/boot-kernel: builtin: booting kvirt's built-in guest; disk "rootdisk" is a data disk`},
		{name: "forced kernel without disks fails", in: bootInput{force: spec.BootPlatformKernel},
			err: "kvirt.io/boot-kernel: platform: the VMI has no disk to boot from"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := decideBoot(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.kernel != tc.kernel {
				t.Errorf("kernel = %s, want %s", p.kernel, tc.kernel)
			}
			if tc.cmdline != "" && p.cmdline != tc.cmdline {
				t.Errorf("cmdline = %q, want %q", p.cmdline, tc.cmdline)
			}
			padded := " " + p.cmdline + " "
			for _, w := range tc.has {
				if !strings.Contains(padded, w) {
					t.Errorf("cmdline %q lacks %q", p.cmdline, w)
				}
			}
			for _, w := range tc.lacks {
				if strings.Contains(padded, w) {
					t.Errorf("cmdline %q has %q", p.cmdline, w)
				}
			}
			if !strings.Contains(p.message, tc.msg) {
				t.Errorf("message = %q, want it to contain %q", p.message, tc.msg)
			}
			if p.kernel == control.ImageKernel && !p.useInitrd || p.kernel == control.PlatformKernel && p.useInitrd {
				t.Errorf("useInitrd = %v for the %s kernel", p.useInitrd, p.kernel)
			}
		})
	}
}

// osDisk builds a GPT disk shaped like the Debian 12 cloud image, with kernel as its /boot kernel.
func osDisk(t *testing.T, kernel string) string {
	return bt.MakeDisk(t, bt.Disk{Label: "gpt", Partitions: []bt.Partition{
		{Number: 1, SizeMiB: 12, FS: &bt.FS{UUID: testRootUUID, Files: map[string]bt.File{
			"boot/vmlinuz-6.1.0-kvirt":    {Data: kernel},
			"boot/initrd.img-6.1.0-kvirt": {Data: "initrd"},
			"boot/grub/grub.cfg": {Data: bt.GrubCfg("/boot/vmlinuz-6.1.0-kvirt", "/boot/initrd.img-6.1.0-kvirt", testRootUUID,
				"console=tty0 console=ttyS0,115200")},
		}}},
		{Number: 14, SizeMiB: 1, Type: "21686148-6449-6E6F-744E-656564454649"},
	}})
}

func preparedDisk(t *testing.T, name, path string) spec.PreparedDisk {
	b, err := blk.OpenFile(path, blk.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return spec.PreparedDisk{Disk: spec.Disk{Name: name}, Backend: b, ReadOnly: true}
}

// TestVMMConfigBootsFromDisk runs the launcher's kernel choice on real disk images (no KVM needed: the VMM
// config is built, not booted): the kernel extracted, the command line, and the status the controller reads.
func TestVMMConfigBootsFromDisk(t *testing.T) {
	bt.Need(t)
	imagesDir := t.TempDir()
	for _, f := range []string{images.Vmlinux, images.Initramfs} {
		if err := os.WriteFile(filepath.Join(imagesDir, f), []byte("\x7fELF kvirt "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kernel := bt.BzImage("the image's kernel")
	osImg := osDisk(t, kernel)
	dataImg := bt.MakeDisk(t, bt.Disk{Partitions: []bt.Partition{{FS: &bt.FS{Files: map[string]bt.File{"data": {Data: "d"}}}}}})
	for _, tc := range []struct {
		name      string
		force     string
		disks     []spec.PreparedDisk
		bootDisk  int
		kernel    control.BootKernel
		wantFile  string // content of cfg.Kernel
		initrd    string // content of cfg.Initrd
		cmdline   string // a substring
		errSubstr string
	}{
		{name: "image kernel", force: spec.BootImageKernel, disks: []spec.PreparedDisk{preparedDisk(t, "root", osImg)},
			kernel: control.ImageKernel, wantFile: kernel, initrd: "initrd", cmdline: "root=UUID=" + testRootUUID + " ro console=tty0 console=ttyS0,115200"},
		{name: "platform kernel on the second disk (bootOrder 1)", force: spec.BootPlatformKernel, bootDisk: 1,
			disks:  []spec.PreparedDisk{preparedDisk(t, "data", dataImg), preparedDisk(t, "root", osImg)},
			kernel: control.PlatformKernel, wantFile: "\x7fELF kvirt " + images.Vmlinux, cmdline: "root=/dev/vdb1"},
		{name: "data disk only", disks: []spec.PreparedDisk{preparedDisk(t, "data", dataImg)},
			kernel: control.BuiltInGuest, wantFile: "\x7fELF kvirt " + images.Vmlinux, initrd: "\x7fELF kvirt " + images.Initramfs,
			cmdline: "console=ttyS0 reboot=k"},
		{name: "missing kernel fails", disks: []spec.PreparedDisk{preparedDisk(t, "root", bt.MakeDisk(t, bt.Disk{Label: "dos", Partitions: []bt.Partition{
			{SizeMiB: 4, FS: &bt.FS{Files: map[string]bt.File{"boot/grub/grub.cfg": {Data: bt.GrubCfg("/boot/vmlinuz-gone", "/boot/initrd", "u", "")}}}}}}))},
			errSubstr: `spec.domain.devices.disks[0] (disk "root"): partition 1: /boot/grub/grub.cfg: the default entry "Debian GNU/Linux" names kernel /boot/vmlinuz-gone, which is not on the filesystem`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &runner{o: Options{ImagesDir: imagesDir, Dirs: spec.Dirs{Work: t.TempDir()}},
				log: slog.New(slog.NewTextHandler(io.Discard, nil)), board: control.NewBoard(control.Status{}), hub: control.NewConsoleHub(0)}
			defer r.hub.Close()
			m := &spec.Machine{MemoryBytes: 256 << 20, Sockets: 1, Cores: 1, Threads: 1, BootKernel: tc.force, BootDisk: tc.bootDisk}
			cfg, err := r.vmmConfig(context.Background(), m, tc.disks)
			if tc.errSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errSubstr) {
					t.Fatalf("err = %v, want %q", err, tc.errSubstr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(cfg.Kernel); string(b) != tc.wantFile {
				t.Errorf("kernel %s holds %q", cfg.Kernel, b)
			}
			got := ""
			if cfg.Initrd != "" {
				b, _ := os.ReadFile(cfg.Initrd)
				got = string(b)
			}
			if got != tc.initrd {
				t.Errorf("initrd %q holds %q, want %q", cfg.Initrd, got, tc.initrd)
			}
			if !strings.Contains(cfg.Cmdline, tc.cmdline) {
				t.Errorf("cmdline %q lacks %q", cfg.Cmdline, tc.cmdline)
			}
			st := r.board.Get()
			if st.Boot == nil || st.Boot.Kernel != tc.kernel || st.Boot.Disk != tc.disks[tc.bootDisk].Name || st.Boot.Message == "" {
				t.Errorf("status boot = %+v", st.Boot)
			}
		})
	}
}

// TestBootDiskFromSpec: bootOrder picks the boot disk; without one it is the first; the annotation is checked.
func TestBootDiskFromSpec(t *testing.T) {
	var vmi v1.VirtualMachineInstance
	if err := yaml.UnmarshalStrict([]byte(`
metadata: {name: b, annotations: {kvirt.io/boot-kernel: platform}}
spec:
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      disks:
      - {name: data, disk: {bus: virtio}, bootOrder: 3}
      - {name: os, disk: {bus: virtio}, bootOrder: 2}
      - {name: cidata, disk: {bus: virtio}}
  volumes:
  - {name: data, emptyDisk: {capacity: 1Mi}}
  - {name: os, containerDisk: {image: kvirt.io/debian-containerdisk:12}}
  - {name: cidata, cloudInitNoCloud: {userData: "#cloud-config"}}
`), &vmi); err != nil {
		t.Fatal(err)
	}
	m, _, err := spec.Translate(&vmi)
	if err != nil {
		t.Fatal(err)
	}
	if m.BootDisk != 1 || m.BootKernel != spec.BootPlatformKernel {
		t.Errorf("boot disk %d kernel %q", m.BootDisk, m.BootKernel)
	}
	vmi.Annotations[spec.BootKernelAnnotation] = "bios"
	if _, _, err := spec.Translate(&vmi); err == nil || !strings.Contains(err.Error(), "metadata.annotations[kvirt.io/boot-kernel]") {
		t.Errorf("bad annotation: %v", err)
	}
}

// TestVMMConfigFromQCOW2ContainerDisk: the boot disk as it comes in a cluster, a qcow2 inside a
// containerDisk image, read through the launcher's containerDisk backend (qcow2 reader under the
// copy-on-write overlay): the kernel and initrd extracted are the image's.
func TestVMMConfigFromQCOW2ContainerDisk(t *testing.T) {
	bt.Need(t)
	kernel := bt.BzImage("the image's kernel")
	img := toQCOW2(t, osDisk(t, kernel))
	vmi, err := LoadManifest([]byte(osManifest("", testenv.ContainerDiskArchive(t, img), "")))
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := spec.Translate(vmi)
	if err != nil {
		t.Fatal(err)
	}
	m.BootKernel = spec.BootImageKernel // this host's automatic choice may be either
	dir := t.TempDir()
	dirs := spec.Dirs{Work: filepath.Join(dir, "work"), Root: dir}
	disks, err := spec.PrepareDisks(context.Background(), m, dirs)
	if err != nil {
		t.Fatal(err)
	}
	defer spec.CloseDisks(disks)
	r := &runner{o: Options{ImagesDir: t.TempDir(), Dirs: dirs}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		board: control.NewBoard(control.Status{}), hub: control.NewConsoleHub(0)}
	defer r.hub.Close()
	cfg, err := r.vmmConfig(context.Background(), m, disks)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(cfg.Kernel); string(b) != kernel {
		t.Errorf("kernel extracted through the containerDisk differs (%d bytes)", len(b))
	}
	if b, _ := os.ReadFile(cfg.Initrd); string(b) != "initrd" {
		t.Errorf("initrd = %q", b)
	}
	if st := r.board.Get(); st.Boot == nil || st.Boot.Kernel != control.ImageKernel || st.Boot.Disk != "containerdisk" ||
		!strings.Contains(st.Boot.Message, `from disk "containerdisk" (grub entry "Debian GNU/Linux" in /boot/grub/grub.cfg)`) {
		t.Errorf("boot status %+v", st.Boot)
	}
}

// TestRunFailsOnBrokenBootDisk: a VMI whose boot disk names a missing kernel, or whose partition table is
// corrupt, fails before any VM is created (no KVM needed), with a message naming the disk and what is wrong,
// in the termination message the controller reads.
func TestRunFailsOnBrokenBootDisk(t *testing.T) {
	bt.Need(t)
	missing := bt.MakeDisk(t, bt.Disk{Label: "gpt", Partitions: []bt.Partition{{SizeMiB: 4, FS: &bt.FS{Files: map[string]bt.File{
		"boot/grub/grub.cfg": {Data: bt.GrubCfg("/boot/vmlinuz-6.1.0-28-cloud-amd64", "/boot/initrd.img", testRootUUID, "")}}}}}})
	good, err := os.ReadFile(osDisk(t, bt.BzImage("k")))
	if err != nil {
		t.Fatal(err)
	}
	good[512+16] ^= 0xff           // the primary GPT header's CRC
	good[len(good)-512+16] ^= 0xff // and the backup's
	corrupt := filepath.Join(t.TempDir(), "corrupt.img")
	if err := os.WriteFile(corrupt, good, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ img, want string }{
		{missing, `spec.domain.devices.disks[0] (disk "containerdisk"): partition 1: /boot/grub/grub.cfg: the default entry "Debian GNU/Linux" names kernel /boot/vmlinuz-6.1.0-28-cloud-amd64, which is not on the filesystem`},
		{corrupt, `spec.domain.devices.disks[0] (disk "containerdisk"): partition table: GPT: primary header: header CRC32`},
	} {
		vmi, err := LoadManifest([]byte(osManifest("", testenv.ContainerDiskArchive(t, tc.img), "")))
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		term := filepath.Join(dir, "termination-log")
		o := Run(context.Background(), Options{VMI: vmi, Dirs: spec.Dirs{Work: filepath.Join(dir, "work"), Root: dir},
			ImagesDir: t.TempDir(), Network: NetworkMode{Kind: "none"}, TerminationLog: term,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if o.Phase != control.Failed || o.Reason != "LauncherFailed" || !strings.Contains(o.Message, tc.want) {
			t.Errorf("outcome %+v, want a failure containing %q", o, tc.want)
		}
		var msg grace.Outcome
		if b, err := os.ReadFile(term); err != nil || json.Unmarshal(b, &msg) != nil || !strings.Contains(msg.Message, `(disk "containerdisk")`) {
			t.Errorf("termination message %+v (%v) does not name the disk", msg, err)
		}
	}
}
