package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvirt/kvirt/images"
	"github.com/kvirt/kvirt/images/oci"
	bt "github.com/kvirt/kvirt/launcher/bootdisk/bootdisktest"
	"github.com/kvirt/kvirt/tests/harness"
	"github.com/kvirt/kvirt/tests/testenv"
	"github.com/kvirt/kvirt/vmm"
	"github.com/kvirt/kvirt/vmm/kvm"
)

// rootDiskRef is a containerDisk holding an operating system whose root filesystem is kvirt's initramfs
// unpacked (kvirt-init as /init) and whose /boot holds kvirt's kernel, named by a GRUB entry in Debian's
// form. It boots in seconds where Debian's userland takes tens of minutes (PVM hosts), so `just test` runs
// issue 14's boot-from-disk path on the cluster on every host: the image-kernel path where stock kernels
// run, the platform-kernel path on PVM.
const rootDiskRef = "kvirt.io/kvirt-root-disk:e2e"

var (
	rootDiskOnce sync.Once
	rootDiskErr  error
)

// loadRootDisk builds rootDiskRef (GPT, ext4 root, qcow2 under /disk/) and imports it into the cluster's
// containerd.
func loadRootDisk(t *testing.T) {
	t.Helper()
	bt.Need(t)
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img (qemu-utils) is needed to make the containerDisk's qcow2: bash .ci/install installs it")
	}
	kernel, initrd := testenv.Image(t, images.Vmlinux), testenv.Image(t, images.Initramfs)
	rootDiskOnce.Do(func() {
		const rootUUID, partUUID = "9b1e2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d", "9b1e2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5e"
		k, err := os.ReadFile(kernel)
		if err != nil {
			rootDiskErr = err
			return
		}
		tree := bt.CpioTree(t, initrd)
		tree["boot/vmlinuz-kvirt"] = bt.File{Data: string(k)}
		tree["run/"], tree["tmp/"] = bt.File{}, bt.File{} // mount points on a root mounted read-only
		// kvirt-init: report the firmware UUID and the cloud-init data it finds, then wait for the power
		// button (virtctl stop).
		// No initrd: the kernel mounts the partition it names itself.
		cfg := strings.ReplaceAll(bt.GrubCfg("/boot/vmlinuz-kvirt", "", rootUUID, vmm.DefaultCmdline+` init=/init kvirt.test="uuid,cidata,wait"`),
			"root=UUID="+rootUUID, "root=PARTUUID="+partUUID)
		var lines []string
		for _, l := range strings.Split(cfg, "\n") {
			if !strings.Contains(l, "initrd") && !strings.Contains(l, "initial ramdisk") {
				lines = append(lines, l)
			}
		}
		tree["boot/grub/grub.cfg"] = bt.File{Data: strings.Join(lines, "\n")}
		raw := bt.MakeDisk(t, bt.Disk{Label: "gpt", Partitions: []bt.Partition{
			{Number: 1, SizeMiB: (len(k)+len(tree))>>20 + 64, UUID: partUUID, FS: &bt.FS{UUID: rootUUID, Files: tree}},
		}})
		dir, err := os.MkdirTemp("", "kvirt-e2e-root-disk-")
		if err != nil {
			rootDiskErr = err
			return
		}
		defer os.RemoveAll(dir)
		qcow := filepath.Join(dir, "disk.qcow2")
		if out, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow).CombinedOutput(); err != nil {
			rootDiskErr = fmt.Errorf("qemu-img convert: %v: %s", err, out)
			return
		}
		tar := filepath.Join(dir, "root-disk.tar")
		img := oci.Image{Ref: rootDiskRef, User: "107:107", Files: []oci.File{{Path: "/disk/disk.qcow2", Source: qcow, Mode: 0o444}}}
		if rootDiskErr = oci.WriteTarball(tar, img); rootDiskErr != nil {
			return
		}
		rootDiskErr = harness.ImportImage(filepath.Join(repoRoot(), "build", "cluster", "containerd", "containerd.sock"), tar)
	})
	if rootDiskErr != nil {
		t.Fatal(rootDiskErr)
	}
}

// TestVMBootsTheOSOnItsDisk: a VM whose containerDisk holds an operating system (GPT, ext4, a GRUB entry)
// boots that OS, not kvirt's built-in guest: the launcher reads the entry from the qcow2 the kubelet pulled,
// boots its kernel (or, on PVM hosts, kvirt's platform kernel with the disk's root filesystem), the VMI's
// BootedFromDisk condition and an event say which, and the OS on the disk reads the VMI's cloud-init data.
// `virtctl stop` presses its power button.
func TestVMBootsTheOSOnItsDisk(t *testing.T) {
	t.Parallel()
	e := setupGuest(t)
	loadRootDisk(t)
	e.apply(fmt.Sprintf(`apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: diskos
spec:
  running: false
  template:
    spec:
      domain:
        devices:
          autoattachPodInterface: false
          disks:
          - name: containerdisk
            disk: {bus: virtio}
          - name: cloudinitdisk
            disk: {bus: virtio}
        resources:
          requests: {memory: 128Mi}
      terminationGracePeriodSeconds: 120
      volumes:
      - name: containerdisk
        containerDisk: {image: %s, imagePullPolicy: Never}
      - name: cloudinitdisk
        cloudInitNoCloud:
          userDataBase64: IyEvYmluL3NoCgplY2hvICdwcmludGVkIGZyb20gY2xvdWQtaW5pdCB1c2VyZGF0YScK
`, rootDiskRef))
	e.waitField("vm/diskos", "{.status.printableStatus}", "Stopped", time.Minute)
	e.virtctlOK("start", "diskos")
	e.waitField("vmi/diskos", "{.status.phase}", "Running", 5*time.Minute)
	uid, err := e.jsonpath("vmi/diskos", "{.metadata.uid}")
	if err != nil || uid == "" {
		t.Fatalf("VMI UID: %q %v", uid, err)
	}
	want := "True ImageKernel"
	if kvm.PVM() {
		want = "True PlatformKernel"
	}
	e.waitField("vmi/diskos", `{.status.conditions[?(@.type=="BootedFromDisk")].status} {.status.conditions[?(@.type=="BootedFromDisk")].reason}`, want, 2*time.Minute)
	kind := strings.TrimPrefix(want, "True ")
	e.eventually("a "+kind+" event", time.Minute, func() (bool, string) {
		ev := e.kubectl("get", "events", "--field-selector", "involvedObject.name=diskos", "-o", "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}")
		return strings.Contains(ev, kind+": "), ev
	})
	e.eventually("the OS on the disk ran and read the VMI's cloud-init data", 6*time.Minute, func() (bool, string) {
		out := e.consoleLog("diskos")
		return strings.Contains(out, "kvirt-guest: cidata instance-id="+uid+" local-hostname=diskos") &&
			strings.Contains(out, "waiting for the power button"), lastLines(out, 15)
	})
	e.virtctlOK("stop", "diskos")
	e.waitGone("vmi/diskos", 3*time.Minute)
}
