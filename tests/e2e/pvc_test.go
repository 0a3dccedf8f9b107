package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvirt/kvirt/images/oci"
	"github.com/kvirt/kvirt/tests/harness"
	"github.com/kvirt/kvirt/tests/testenv"
	"github.com/kvirt/kvirt/vmm"
)

// Persistent disks (issue 15) on the local cluster: its provisioner (tests/provisioner, the default
// StorageClass, WaitForFirstConsumer) serves both volume modes; a VM names a claim that does not exist yet;
// guests keep what they wrote on a claim and on a hostDisk across stop/start and a forced restart.

// diskCheckRef is tests/e2e/cmd/disk-check in an image of its own, built and loaded by the suite.
const diskCheckRef = "kvirt.io/disk-check:e2e"

var (
	diskCheckOnce sync.Once
	diskCheckErr  error
)

// loadDiskCheck builds disk-check (static), images it (images/oci) and imports it into the cluster's
// containerd (build/cluster, as `just cluster-load`).
func loadDiskCheck(t *testing.T) {
	t.Helper()
	diskCheckOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kvirt-e2e-disk-check-")
		if err != nil {
			diskCheckErr = err
			return
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "disk-check")
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./tests/e2e/cmd/disk-check")
		cmd.Dir, cmd.Env = repoRoot(), append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			diskCheckErr = fmt.Errorf("go build ./tests/e2e/cmd/disk-check: %v\n%s", err, out)
			return
		}
		tar := filepath.Join(dir, "disk-check.tar")
		img := oci.Image{Ref: diskCheckRef, Files: []oci.File{{Path: "/usr/bin/disk-check", Source: bin}}, Entrypoint: []string{"/usr/bin/disk-check"}}
		if diskCheckErr = oci.WriteTarball(tar, img); diskCheckErr != nil {
			return
		}
		sock := filepath.Join(repoRoot(), "build", "cluster", "containerd", "containerd.sock")
		diskCheckErr = harness.ImportImage(sock, tar)
	})
	if diskCheckErr != nil {
		t.Fatal(diskCheckErr)
	}
}

// claimManifest is a claim of the default StorageClass.
func claimManifest(name, mode, size string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: %s}
spec:
  accessModes: [ReadWriteOnce]
  volumeMode: %s
  resources: {requests: {storage: %s}}
`, name, mode, size)
}

// diskCheckPod runs disk-check once per container: one on the filesystem claim fs at /data, one on the
// block claim blk at /dev/xvdb.
func diskCheckPod(name string, fsArgs, blkArgs []string) string {
	q := func(args []string) string { return `["` + strings.Join(args, `", "`) + `"]` }
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: fs
    image: %s
    imagePullPolicy: Never
    args: %s
    volumeMounts: [{name: fs, mountPath: /data}]
  - name: blk
    image: %s
    imagePullPolicy: Never
    args: %s
    volumeDevices: [{name: blk, devicePath: /dev/xvdb}]
  volumes:
  - {name: fs, persistentVolumeClaim: {claimName: fs}}
  - {name: blk, persistentVolumeClaim: {claimName: blk}}
`, name, diskCheckRef, q(fsArgs), diskCheckRef, q(blkArgs))
}

var sumRE = regexp.MustCompile(`disk-check: (write|read) \S+ sha256=([0-9a-f]{64}) bytes=\d+`)

// podSum is the checksum disk-check printed in container c of pod.
func (e *env) podSum(pod, c string) string {
	e.t.Helper()
	out := e.kubectl("logs", pod, "-c", c)
	m := sumRE.FindStringSubmatch(out)
	if m == nil {
		e.t.Fatalf("pod %s container %s printed no checksum:\n%s", pod, c, out)
	}
	return m[2]
}

// The default StorageClass provisions a claim of each volume mode once a pod uses it (WaitForFirstConsumer),
// a plain pod writes to both (a file on the filesystem claim, the raw block device), a second pod reads the
// same bytes back, and deleting the claims deletes their volumes. Needs no KVM.
func TestProvisionerBothVolumeModes(t *testing.T) {
	e := setup(t)
	loadDiskCheck(t)
	e.apply(claimManifest("fs", "Filesystem", "64Mi") + "---\n" + claimManifest("blk", "Block", "64Mi"))
	e.waitField("pvc/fs", "{.spec.storageClassName}", harness.StorageClassName, 30*time.Second)
	if phase, _ := e.jsonpath("pvc/blk", "{.status.phase}"); phase != "Pending" {
		t.Errorf("a WaitForFirstConsumer claim is %s before any pod uses it", phase)
	}
	const n = "1048576"
	e.apply(diskCheckPod("writer", []string{"write", "/data/f", "7", n}, []string{"write", "/dev/xvdb", "9", n}))
	e.waitField("pod/writer", "{.status.phase}", "Succeeded", 3*time.Minute)
	e.waitField("pvc/fs", "{.status.phase}", "Bound", 30*time.Second)
	e.waitField("pvc/blk", "{.status.phase}", "Bound", 30*time.Second)
	pvs := map[string]string{}
	for _, c := range []string{"fs", "blk"} {
		pv, err := e.jsonpath("pvc/"+c, "{.spec.volumeName}")
		if err != nil || pv == "" {
			t.Fatalf("pvc/%s bound to no PV: %v", c, err)
		}
		pvs[c] = pv
	}
	if mode, _ := e.jsonpath("pv/"+pvs["blk"], "{.spec.volumeMode} {.spec.local.path}"); !strings.HasPrefix(mode, "Block /dev/loop") {
		t.Errorf("block PV: %q, want volumeMode Block on a loop device", mode)
	}
	if mode, _ := e.jsonpath("pv/"+pvs["fs"], "{.spec.volumeMode}"); mode != "Filesystem" {
		t.Errorf("filesystem PV: volumeMode %q", mode)
	}
	wroteFS, wroteBlk := e.podSum("writer", "fs"), e.podSum("writer", "blk")

	e.apply(diskCheckPod("reader", []string{"read", "/data/f", n}, []string{"read", "/dev/xvdb", n}))
	e.waitField("pod/reader", "{.status.phase}", "Succeeded", 3*time.Minute)
	if got := e.podSum("reader", "fs"); got != wroteFS {
		t.Errorf("filesystem claim: read %s, wrote %s", got, wroteFS)
	}
	if got := e.podSum("reader", "blk"); got != wroteBlk {
		t.Errorf("block claim: read %s, wrote %s", got, wroteBlk)
	}

	e.kubectl("delete", "pod", "writer", "reader", "--wait=true")
	e.kubectl("delete", "pvc", "fs", "blk", "--wait=true")
	for _, pv := range pvs {
		e.waitGone("pv/"+pv, 2*time.Minute)
	}
}

// requireGuests ends a test at this point, as setupGuest would have at its start, on a cluster whose nodes
// cannot run guests (no /dev/kvm): what came before it needed none.
func (e *env) requireGuests() {
	e.t.Helper()
	guestNodesOnce.Do(func() { guestNodesErr = guestNodes(e) })
	if guestNodesErr != nil {
		if testenv.Required() {
			e.t.Fatalf("%v although KVIRT_REQUIRE_KVM=1", guestNodesErr)
		}
		e.t.Skipf("%s %v", testenv.SkipNeedsKVM, guestNodesErr)
	}
}

// diskVM is a VM running kvirt's Linux guest with kernelArgs args and one disk "data" from volume (a YAML
// flow mapping of the volume source).
func diskVM(name, strategy, volume, args string) string {
	return fmt.Sprintf(`apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: %s}
spec:
  runStrategy: %s
  template:
    spec:
      terminationGracePeriodSeconds: 10
      domain:
        resources: {requests: {memory: 128Mi}}
        firmware:
          kernelBoot:
            kernelArgs: %q
            container:
              image: docker-archive:/usr/share/kvirt/e2e/linux-kernel.tar
              kernelPath: /boot/vmlinux
              initrdPath: /boot/initramfs.cpio
        devices:
          autoattachPodInterface: false
          disks: [{name: data, disk: {bus: virtio}}]
      volumes:
      - name: data
        %s
`, name, strategy, vmm.DefaultCmdline+" "+args, volume)
}

// BEHAVIOUR.md §2: a VM whose claim does not exist shows ErrorPvcNotFound and its VMI carries
// Synchronized=False/FailedPvcNotFound; creating the claim (unbound: WaitForFirstConsumer) lets the launcher
// pod be created with the claim, and the VM runs once the claim is bound. The guest part needs KVM.
func TestPvcNotFoundThenCreated(t *testing.T) {
	e := setup(t)
	e.apply(diskVM("late", "Always", "persistentVolumeClaim: {claimName: late}", `kvirt.test=wait`))
	e.waitField("vm/late", "{.status.printableStatus}", "ErrorPvcNotFound", 2*time.Minute)
	e.waitField("vmi/late", `{.status.conditions[?(@.type=="Synchronized")].reason}`, "FailedPvcNotFound", time.Minute)
	msg, _ := e.jsonpath("vmi/late", `{.status.conditions[?(@.type=="Synchronized")].message}`)
	if want := "PVC " + e.ns + "/late does not exist, waiting for it to appear"; msg != want {
		t.Errorf("Synchronized message %q, want %q", msg, want)
	}
	if pods, _ := e.jsonpath("pods", "{.items[*].metadata.name}"); pods != "" {
		t.Fatalf("launcher pod created for a missing claim: %s", pods)
	}
	e.apply(claimManifest("late", "Filesystem", "64Mi"))
	e.eventually("a launcher pod with the claim", 2*time.Minute, func() (bool, string) {
		out, _ := e.jsonpath("pods", `{.items[*].spec.volumes[?(@.name=="data")].persistentVolumeClaim.claimName}`)
		return out == "late", out
	})
	e.eventually("the VM past ErrorPvcNotFound", time.Minute, func() (bool, string) {
		s, _ := e.jsonpath("vm/late", "{.status.printableStatus}")
		return s != "ErrorPvcNotFound" && s != "", s
	})
	e.requireGuests()
	e.waitField("pvc/late", "{.status.phase}", "Bound", 2*time.Minute)
	e.waitField("vmi/late", "{.status.phase}", "Running", 5*time.Minute)
	e.waitField("vm/late", "{.status.printableStatus}", "Running", time.Minute)
}

// The guest script of the durability tests, one boot: checksum the first 256 KiB of /dev/vda as found,
// overwrite them with random bytes written O_SYNC (each write flushed to the disk), checksum what is
// there now, say so, and wait for the power button.
const durabilityArgs = `kvirt.test="sh:dd if=/dev/vda of=/tmp/before bs=4096 count=64,sh:shasum -a 256 /tmp/before,` +
	`sh:dd if=/dev/urandom of=/dev/vda bs=4096 count=64 oflag=sync,sh:dd if=/dev/vda of=/tmp/after bs=4096 count=64,` +
	`sh:shasum -a 256 /tmp/after,echo:synced,wait"`

var shaRE = regexp.MustCompile(`([0-9a-f]{64})\s+/tmp/(before|after)`)

// bootSums waits for the VMI's current launcher pod to log the guest's "synced" line and returns the
// checksums the guest printed before and after its write.
func (e *env) bootSums(vm string) (uid, before, after string) {
	e.t.Helper()
	var out string
	e.eventually("vmi/"+vm+" guest wrote and synced", 8*time.Minute, func() (bool, string) {
		u, err := e.jsonpath("vmi/"+vm, "{.metadata.uid}")
		if err != nil || u == "" {
			return false, "no VMI"
		}
		uid = u
		pod, _ := e.jsonpath("pods", fmt.Sprintf(`{.items[?(@.metadata.labels.kubevirt\.io/created-by=="%s")].metadata.name}`, u))
		if pod == "" {
			return false, "no launcher pod"
		}
		out, _ = e.run(kubectl, "logs", pod, "-c", "compute", "--tail=-1")
		return strings.Contains(out, "kvirt-guest: synced"), lastLines(out, 10)
	})
	for _, m := range shaRE.FindAllStringSubmatch(out, -1) {
		if m[2] == "before" {
			before = m[1]
		} else {
			after = m[1]
		}
	}
	if before == "" || after == "" || before == after {
		e.t.Fatalf("guest checksums before %q after %q:\n%s", before, after, lastLines(out, 30))
	}
	return uid, before, after
}

// durability: what the guest synced is there after `virtctl stop` + `virtctl start` (a new launcher pod),
// and after `virtctl restart --force --grace-period=0` (the pod killed at once).
func (e *env) durability(vm string) {
	e.t.Helper()
	e.virtctlOK("start", vm)
	uid1, _, after1 := e.bootSums(vm)
	e.virtctlOK("stop", vm)
	e.waitGone("vmi/"+vm, 3*time.Minute)
	e.virtctlOK("start", vm)
	e.waitNewRunning(vm, uid1, 5*time.Minute)
	uid2, before2, after2 := e.bootSums(vm)
	if before2 != after1 {
		e.t.Errorf("after stop/start the disk holds %s, the guest had synced %s", before2, after1)
	}
	e.virtctlOK("restart", vm, "--force", "--grace-period=0")
	e.waitNewRunning(vm, uid2, 5*time.Minute)
	_, before3, _ := e.bootSums(vm)
	if before3 != after2 {
		e.t.Errorf("after restart --force --grace-period=0 the disk holds %s, the guest had synced %s", before3, after2)
	}
	e.virtctlOK("stop", vm)
	e.waitGone("vmi/"+vm, 3*time.Minute)
}

// Issue 15 acceptance: a VM whose disk is a claim of the default StorageClass, filesystem then block mode.
func TestPVCDataSurvivesRestart(t *testing.T) {
	for _, mode := range []string{"Filesystem", "Block"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "Block" {
				// ~10 min per restart cycle on PVM; the Filesystem case covers the guest path in CI there.
				testenv.LongOnPVM(t, "a second PVC durability cycle (~10 min here)")
			}
			e := setupGuest(t)
			e.apply(claimManifest("disk", mode, "256Mi"))
			e.apply(diskVM("pvcvm", "Halted", "persistentVolumeClaim: {claimName: disk}", durabilityArgs))
			e.durability("pvcvm")
		})
	}
}

// Issue 15 acceptance: hostDisk DiskOrCreate is created on the node at its capacity and keeps its data.
func TestHostDiskDiskOrCreateSurvivesRestart(t *testing.T) {
	testenv.LongOnPVM(t, "another durability cycle (~10 min here); TestPVCDataSurvivesRestart/Filesystem covers the path in CI")
	e := setupGuest(t)
	dir := filepath.Join("/var/lib/kvirt-e2e", e.ns)
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "disk.img")
	e.apply(diskVM("hostvm", "Halted", fmt.Sprintf("hostDisk: {path: %s, type: DiskOrCreate, capacity: 64Mi}", path), durabilityArgs))
	e.durability("hostvm")
	st, err := os.Stat(path) // the cluster's only node is this machine
	if err != nil || st.Size() != 64<<20 {
		t.Errorf("hostDisk on the node: %v %v, want 64Mi", st, err)
	}
}
