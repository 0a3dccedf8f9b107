package launcher

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvirt/kvirt/images"
	"github.com/kvirt/kvirt/launcher/bootdisk"
	bt "github.com/kvirt/kvirt/launcher/bootdisk/bootdisktest"
	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/launcher/grace"
	"github.com/kvirt/kvirt/launcher/spec"
	"github.com/kvirt/kvirt/tests/testenv"
	"github.com/kvirt/kvirt/vmm"
	vboot "github.com/kvirt/kvirt/vmm/boot"
	"github.com/kvirt/kvirt/vmm/kvm"
	"github.com/kvirt/kvirt/vmm/memory"
	"github.com/u-root/u-root/pkg/cpio"
)

// These tests boot an operating system from its disk through Run, as `virt-launcher run -f` does: the
// launcher reads the disk's partition table, filesystem and GRUB entry, extracts the kernel and boots it.
// They need KVM (they skip without it, and fail under KVIRT_REQUIRE_KVM=1); the Debian ones also need
// `just os-images`. On PVM hosts a distribution boots slowly (its kernel is interpreted): the deadlines are
// generous and -short skips them.

// KubeVirt's vm-cirros user-data: #!/bin/sh, then echo 'printed from cloud-init userdata'.
const cirrosUserData = "IyEvYmluL3NoCgplY2hvICdwcmludGVkIGZyb20gY2xvdWQtaW5pdCB1c2VyZGF0YScK"

// toQCOW2 converts a raw image with qemu-img (the containerDisk format the OS images ship in), or returns
// the raw image when qemu-img is not installed.
func toQCOW2(t *testing.T, raw string) string {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Logf("qemu-img not installed: the containerDisk holds the raw image")
		return raw
	}
	out := strings.TrimSuffix(raw, filepath.Ext(raw)) + ".qcow2"
	if b, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, b)
	}
	return out
}

func osManifest(bootKernel, image, extra string) string {
	ann := ""
	if bootKernel != "" {
		ann = fmt.Sprintf(", annotations: {%s: %s}", spec.BootKernelAnnotation, bootKernel)
	}
	return fmt.Sprintf(`
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: vm-cirros, namespace: default, uid: 0e6f3a52-6d3b-4c53-9d4c-6a2f0b1c2d3e%s}
spec:
  terminationGracePeriodSeconds: 180
  domain:
    resources: {requests: {memory: 1Gi}}
    firmware: {uuid: 5d307ca9-b3ef-428c-8861-06e72d69f223}
    devices:
      autoattachPodInterface: false
      disks:
      - {name: containerdisk, disk: {bus: virtio}}
      - {name: cloudinitdisk, disk: {bus: virtio}}
  volumes:
  - {name: containerdisk, containerDisk: {image: "docker-archive:%s"}}
  - name: cloudinitdisk
    cloudInitNoCloud:
      userDataBase64: %s
%s`, ann, image, cirrosUserData, extra)
}

// osRun is one launcher booting an OS.
type osRun struct {
	console, log *testenv.SyncBuffer
	sigs         chan os.Signal
	out          chan grace.Outcome
	sock         string
}

func startOS(t *testing.T, manifest string) *osRun {
	t.Helper()
	testenv.RequireKVM(t)
	if testing.Short() {
		t.Skip("boots an operating system (minutes, longer on PVM hosts); skipped with -short")
	}
	vmi, err := LoadManifest([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r := &osRun{console: &testenv.SyncBuffer{}, log: &testenv.SyncBuffer{}, sigs: make(chan os.Signal, 2), out: make(chan grace.Outcome, 1),
		sock: filepath.Join(dir, "launcher.sock")}
	opts := Options{
		VMI: vmi, Dirs: spec.Dirs{Work: filepath.Join(dir, "work"), Root: dir}, ImagesDir: testenv.ImagesDir(t),
		Network: NetworkMode{Kind: "none"}, Console: r.console, Signals: r.sigs, ControlSocket: r.sock,
		Log: slog.New(slog.NewTextHandler(io.MultiWriter(r.log, testWriter{t}), nil)),
	}
	go func() { r.out <- Run(context.Background(), opts) }()
	t.Cleanup(func() {
		select {
		case o := <-r.out:
			r.out <- o
		default:
			r.sigs <- syscall.SIGTERM
			r.sigs <- syscall.SIGTERM // a second signal stops the guest at once
			<-r.out
		}
		if t.Failed() {
			t.Logf("console:\n%s", r.console.String())
		}
	})
	return r
}

// waitConsole waits until the console shows want, the launcher ends, or the deadline passes.
func (r *osRun) waitConsole(t *testing.T, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(r.console.String(), want) {
		select {
		case o := <-r.out:
			r.out <- o
			if !strings.Contains(r.console.String(), want) {
				t.Fatalf("the launcher ended (%+v) before the console showed %q", o, want)
			}
			return
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the console did not show %q within %v", want, d)
		}
	}
}

func (r *osRun) outcome(t *testing.T, d time.Duration) grace.Outcome {
	t.Helper()
	select {
	case o := <-r.out:
		r.out <- o
		return o
	case <-time.After(d):
		t.Fatalf("the launcher did not end within %v", d)
		return grace.Outcome{}
	}
}

// boot is the launcher's reported boot decision (its log line).
func (r *osRun) bootKernel(t *testing.T, want control.BootKernel) {
	t.Helper()
	if l := r.log.String(); !strings.Contains(l, "kernel chosen") || !strings.Contains(l, "kernel="+string(want)+" ") {
		t.Errorf("the launcher did not report booting the %s kernel; log:\n%s", want, l)
	}
}

// TestOSBootDirectKvirtKernel: a GPT disk whose /boot holds kvirt's own kernel and initramfs and whose
// default GRUB entry names them boots through the image-kernel path exactly as Debian's would: the launcher
// finds the entry, extracts kernel and initrd from the ext4 filesystem inside the qcow2 containerDisk, and
// boots them with the entry's command line. The kvirt-init it runs reports the firmware UUID and powers off.
func TestOSBootDirectKvirtKernel(t *testing.T) {
	testenv.RequireKVM(t)
	bt.Need(t)
	kernel, err := os.ReadFile(testenv.Image(t, images.Vmlinux))
	if err != nil {
		t.Fatal(err)
	}
	initrd, err := os.ReadFile(testenv.Image(t, images.Initramfs))
	if err != nil {
		t.Fatal(err)
	}
	const rootUUID = "5a6b7c8d-1111-4222-8333-944455556666"
	size := (len(kernel)+len(initrd))>>20 + 16
	raw := bt.MakeDisk(t, bt.Disk{Label: "gpt", Partitions: []bt.Partition{
		{Number: 1, SizeMiB: size, FS: &bt.FS{UUID: rootUUID, Files: map[string]bt.File{
			"boot/vmlinuz-kvirt":    {Data: string(kernel)},
			"boot/initrd.img-kvirt": {Data: string(initrd)},
			"boot/grub/grub.cfg": {Data: bt.GrubCfg("/boot/vmlinuz-kvirt", "/boot/initrd.img-kvirt", rootUUID,
				vmm.DefaultCmdline+` kvirt.test="uuid,poweroff"`)},
		}}},
		{Number: 14, SizeMiB: 1, Type: "21686148-6449-6E6F-744E-656564454649"},
	}})
	r := startOS(t, osManifest(spec.BootImageKernel, testenv.ContainerDiskArchive(t, toQCOW2(t, raw)), ""))
	o := r.outcome(t, 8*time.Minute)
	r.bootKernel(t, control.ImageKernel)
	if c := r.console.String(); !strings.Contains(c, "kvirt-guest: uuid=5d307ca9-b3ef-428c-8861-06e72d69f223") {
		t.Errorf("console lacks the guest's firmware UUID report")
	}
	if o.Phase != control.Succeeded || o.ExitCode != 0 {
		t.Errorf("outcome %+v, want the guest's poweroff", o)
	}
}

// debianBoot boots one of the Debian 12 images with the vm-cirros user-data and checks the acceptance
// items a launcher can see without a cluster: cloud-init ran the script, a login prompt on the serial
// console, and a graceful shutdown on SIGTERM (systemd powers off).
func debianBoot(t *testing.T, image, bootKernel string, want control.BootKernel) {
	testenv.RequireKVM(t) // before wrapping the image: that takes a while
	testenv.RequireOSBoot(t)
	if testing.Short() {
		t.Skip("boots an operating system (minutes, longer on PVM hosts); skipped with -short")
	}
	r := startOS(t, osManifest(bootKernel, testenv.ContainerDiskArchive(t, testenv.OSImage(t, image)), ""))
	// Slow on PVM (every guest kernel instruction is interpreted): see docs/boot.md for measured times.
	r.waitConsole(t, "printed from cloud-init userdata", 40*time.Minute)
	r.waitConsole(t, "login:", 20*time.Minute)
	r.bootKernel(t, want)
	r.sigs <- syscall.SIGTERM
	o := r.outcome(t, 4*time.Minute)
	if o.Phase != control.Succeeded || o.ExitCode != 0 {
		t.Errorf("outcome after SIGTERM %+v, want Succeeded (systemd powered off within the grace period)", o)
	}
	if c := r.console.String(); !strings.Contains(c, "reboot: Power down") {
		t.Errorf("the console does not show the kernel powering down")
	}
}

// TestOSBootDebianImageKernel: the Debian 12 image's own kernel and initrd (hosts that run stock kernels;
// forced here so that it also runs where the automatic choice would differ).
func TestOSBootDebianImageKernel(t *testing.T) {
	testenv.RequireKVM(t)
	if kvm.PVM() {
		t.Skip("needs a host that runs stock kernels: this host's KVM is PVM (Debian's own kernel dies in its interpreter; the platform-kernel tests cover this image here)")
	}
	debianBoot(t, "debian-12.qcow2", spec.BootImageKernel, control.ImageKernel)
}

// TestOSBootDebianPlatformKernel: kvirt's platform kernel boots Debian 12's userspace from the image's root
// filesystem (the PVM path; forced here so that it also runs on hosts with hardware virtualization).
func TestOSBootDebianPlatformKernel(t *testing.T) {
	debianBoot(t, "debian-12.qcow2", spec.BootPlatformKernel, control.PlatformKernel)
}

// TestOSBootKvirtKernelVariant: the debian-12-kvirt-kernel image (Debian 12 whose /boot holds kvirt's
// kernel, named by its default GRUB entry) on the automatic path of a host that runs stock kernels: the
// image-kernel path boots Debian's userspace with kvirt's kernel.
func TestOSBootKvirtKernelVariant(t *testing.T) {
	debianBoot(t, "debian-12-kvirt-kernel.qcow2", spec.BootImageKernel, control.ImageKernel)
}

// The user-data must be the vm-cirros script the acceptance names.
func TestCirrosUserData(t *testing.T) {
	b, err := base64.StdEncoding.DecodeString(cirrosUserData)
	if err != nil || !strings.HasPrefix(string(b), "#!/bin/sh") || !strings.Contains(string(b), "echo 'printed from cloud-init userdata'") {
		t.Fatalf("user-data %q, %v", b, err)
	}
}

// TestOSBootPlatformKernelKvirtRoot: the platform-kernel path with no distribution image needed. The disk's
// root filesystem holds kvirt's initramfs unpacked (kvirt-init as /init) and a GRUB entry naming some
// distribution kernel; the launcher boots kvirt's platform kernel instead, with root=UUID= resolved to
// /dev/vda1 and no initrd, so kvirt-init runs from the disk's root filesystem, reports the firmware UUID and
// powers off.
func TestOSBootPlatformKernelKvirtRoot(t *testing.T) {
	testenv.RequireKVM(t)
	bt.Need(t)
	testenv.Image(t, images.Vmlinux)
	tree := bt.CpioTree(t, testenv.Image(t, images.Initramfs))
	const rootUUID = "7a6b7c8d-1111-4222-8333-944455556666"
	tree["boot/vmlinuz-6.1.0-28-cloud-amd64"] = bt.File{Data: bt.BzImage("a distribution kernel that must not boot")}
	tree["boot/initrd.img-6.1.0-28-cloud-amd64"] = bt.File{Data: "an initrd that must not be loaded"}
	tree["boot/grub/grub.cfg"] = bt.File{Data: bt.GrubCfg("/boot/vmlinuz-6.1.0-28-cloud-amd64", "/boot/initrd.img-6.1.0-28-cloud-amd64",
		rootUUID, `rw init=/init kvirt.test="uuid,poweroff"`)}
	raw := bt.MakeDisk(t, bt.Disk{Label: "gpt", Partitions: []bt.Partition{
		{Number: 1, SizeMiB: 64, FS: &bt.FS{UUID: rootUUID, Files: tree}},
	}})
	r := startOS(t, osManifest(spec.BootPlatformKernel, testenv.ContainerDiskArchive(t, toQCOW2(t, raw)), ""))
	o := r.outcome(t, 8*time.Minute)
	r.bootKernel(t, control.PlatformKernel)
	if c := r.console.String(); !strings.Contains(c, "kvirt-guest: uuid=5d307ca9-b3ef-428c-8861-06e72d69f223") {
		t.Errorf("console lacks the guest's firmware UUID report (kvirt-init from the disk's root)")
	}
	if l := r.log.String(); !strings.Contains(l, "root filesystem /dev/vda1 (root=UUID="+rootUUID+")") {
		t.Errorf("the launcher did not boot with root=/dev/vda1; log:\n%s", l)
	}
	if o.Phase != control.Succeeded || o.ExitCode != 0 {
		t.Errorf("outcome %+v, want the guest's poweroff", o)
	}
}

// TestInitramfsTree checks the unpacking TestOSBootPlatformKernelKvirtRoot relies on (no KVM needed): a newc
// archive's directories, executables and symlinks land in an ext4 root the disk reader sees the same way.
func TestInitramfsTree(t *testing.T) {
	bt.Need(t)
	p := filepath.Join(t.TempDir(), "initramfs.cpio")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w := cpio.Newc.Writer(f)
	for _, r := range []cpio.Record{cpio.Directory(".", 0o755), cpio.Directory("bin", 0o755), cpio.Directory("empty", 0o755),
		cpio.StaticFile("init", "#!kvirt-init", 0o755), cpio.StaticFile("bin/busybox", "bb", 0o755), cpio.Symlink("bin/sh", "busybox")} {
		if err := w.WriteRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	f.Close()
	tree := bt.CpioTree(t, p)
	img, err := os.ReadFile(bt.MakeFS(t, bt.FS{Files: tree}))
	if err != nil {
		t.Fatal(err)
	}
	fsys, err := bootdisk.OpenExt4(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if st, err := fs.Stat(fsys, "init"); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("init: %v %v", st, err)
	}
	if l, err := fsys.ReadLink("bin/sh"); err != nil || l != "busybox" {
		t.Errorf("bin/sh → %q %v", l, err)
	}
	if st, err := fs.Stat(fsys, "empty"); err != nil || !st.IsDir() {
		t.Errorf("empty directory: %v %v", st, err)
	}
}

// TestDebianImageBootEntry reads the Debian 12 image of `just os-images` as the launcher does in a cluster (the
// qcow2 inside a containerDisk, no KVM needed): its GRUB entry's kernel and initrd are extracted and vmm/boot
// loads them (a bzImage through the 64-bit boot protocol, the initrd below its limit); the platform path
// resolves its root=UUID= to /dev/vda1.
func TestDebianImageBootEntry(t *testing.T) {
	img := testenv.OSImage(t, "debian-12.qcow2")
	if testing.Short() {
		t.Skip("wraps a 150 MB image; skipped with -short")
	}
	archive := testenv.ContainerDiskArchive(t, img)
	for _, force := range []string{spec.BootImageKernel, spec.BootPlatformKernel} {
		vmi, err := LoadManifest([]byte(osManifest(force, archive, "")))
		if err != nil {
			t.Fatal(err)
		}
		m, _, err := spec.Translate(vmi)
		if err != nil {
			t.Fatal(err)
		}
		imagesDir := t.TempDir()
		if err := os.WriteFile(filepath.Join(imagesDir, images.Vmlinux), []byte("\x7fELF platform"), 0o644); err != nil {
			t.Fatal(err)
		}
		dirs := spec.Dirs{Work: t.TempDir(), Root: t.TempDir()}
		disks, err := spec.PrepareDisks(context.Background(), m, dirs)
		if err != nil {
			t.Fatal(err)
		}
		r := &runner{o: Options{ImagesDir: imagesDir, Dirs: dirs}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			board: control.NewBoard(control.Status{}), hub: control.NewConsoleHub(0)}
		cfg, err := r.vmmConfig(context.Background(), m, disks)
		spec.CloseDisks(disks)
		r.hub.Close()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: kernel %s initrd %q cmdline %q; %s", force, cfg.Kernel, cfg.Initrd, cfg.Cmdline, r.board.Get().Boot.Message)
		if force == spec.BootPlatformKernel {
			if cfg.Initrd != "" || !strings.HasSuffix(cfg.Cmdline, "root=/dev/vda1") || !strings.Contains(cfg.Cmdline, "console=ttyS0") {
				t.Errorf("platform: initrd %q cmdline %q", cfg.Initrd, cfg.Cmdline)
			}
			continue
		}
		if !strings.Contains(cfg.Cmdline, "root=UUID=") || !strings.Contains(cfg.Cmdline, "console=ttyS0") {
			t.Errorf("image kernel cmdline %q", cfg.Cmdline)
		}
		mem, err := memory.New([][2]uint64{{0, 1 << 30}}, memory.Options{})
		if err != nil {
			t.Fatal(err)
		}
		kf, err := os.Open(cfg.Kernel)
		if err != nil {
			t.Fatal(err)
		}
		defer kf.Close()
		kst, _ := kf.Stat()
		k, err := vboot.LoadKernel(mem, kf, kst.Size())
		if err != nil {
			t.Fatalf("vmm/boot cannot load the image's kernel: %v", err)
		}
		inf, err := os.Open(cfg.Initrd)
		if err != nil {
			t.Fatal(err)
		}
		defer inf.Close()
		ist, _ := inf.Stat()
		if _, err := vboot.LoadInitrd(mem, k, inf, ist.Size()); err != nil {
			t.Errorf("vmm/boot cannot place the image's initrd (%d bytes): %v", ist.Size(), err)
		}
		if k.Format != "bzimage" {
			t.Logf("the image's kernel is %s, not a bzImage", k.Format)
		}
	}
}
