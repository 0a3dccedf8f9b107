package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/kvirt/kvirt/images/oci"
)

// ociLayoutDisk writes an OCI image layout whose image holds an 8 MiB ext4 disk (with /hello) at
// /disk/disk.img, and returns the layout directory.
func ociLayoutDisk(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed (apt-get install e2fsprogs)")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.Mkdir(root, 0o755)
	os.WriteFile(filepath.Join(root, "hello"), []byte("from-the-oci-layout\n"), 0o644)
	disk := filepath.Join(dir, "disk.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", root, disk, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	img, err := oci.Build(oci.Image{Ref: "kvirt.test/ext4:1", Files: []oci.File{{Path: "/disk/disk.img", Source: disk, Mode: 0o444}}})
	if err != nil {
		t.Fatal(err)
	}
	lay := filepath.Join(dir, "layout")
	p, err := layout.Write(lay, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	return lay
}

// Every local volume type at once, as `virt-launcher run -f` runs them: a containerDisk from an OCI layout,
// a cloudInitNoCloud disk, an emptyDisk and a hostDisk (created). The guest sees each disk with its size and
// serial, reads and writes the containerDisk, and kvirt-init reads the cloud-init meta-data (instance-id =
// the VMI UID, local-hostname = the VMI name, which becomes the hostname) and the user-data.
func TestRunLinuxAllVolumeTypes(t *testing.T) {
	lay := ociLayoutDisk(t)
	podRoot := t.TempDir()
	const userData = "#cloud-config\nhostname: ignored-by-kvirt-init\n"
	sum := sha256.Sum256([]byte(userData))
	vmi := fmt.Sprintf(`apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: allvols, namespace: default, uid: 6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b}
spec:
  domain:
    resources: {requests: {memory: 128Mi}}
    devices:
      autoattachPodInterface: false
      disks:
      - {name: root, serial: root-serial}
      - {name: cloudinit, serial: ci-serial}
      - {name: scratch, serial: scratch-serial}
      - {name: host, serial: host-serial}
  volumes:
  - {name: root, containerDisk: {image: "oci:%s"}}
  - {name: cloudinit, cloudInitNoCloud: {userData: %q}}
  - {name: scratch, emptyDisk: {capacity: 16Mi}}
  - {name: host, hostDisk: {path: /var/disks/host.img, type: DiskOrCreate, capacity: 24Mi}}
`, lay, userData)
	console, diag := runLinux(t, vmi, `kvirt.test="disks,disk,sh:cat /proc/sys/kernel/hostname,poweroff" kvirt.disk=/dev/vda kvirt.write=guest-wrote`,
		"--root", podRoot)
	for _, want := range []string{
		"kvirt-guest: cidata instance-id=6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b local-hostname=allvols",
		fmt.Sprintf("kvirt-guest: cidata user-data bytes=%d sha256=%s network-config=no", len(userData), hex.EncodeToString(sum[:])),
		"kvirt-guest: disk vda size=8388608 serial=root-serial ro=0 label=",
		"serial=ci-serial ro=1 label=cidata",
		"kvirt-guest: disk vdc size=16777216 serial=scratch-serial ro=0 label=",
		"kvirt-guest: disk vdd size=25165824 serial=host-serial ro=0 label=",
		"kvirt-guest: read=from-the-oci-layout",
		"kvirt-guest: disk ok",
		"\nallvols",
	} {
		if !strings.Contains(console, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if !strings.Contains(console, "kvirt-guest: disk vdb size=") {
		t.Errorf("the guest does not see the cidata disk as vdb")
	}
	// The hostDisk was created where KubeVirt's pod layout puts it, at its capacity.
	if st, err := os.Stat(filepath.Join(podRoot, "var/run/kubevirt-private/vmi-disks/host/host.img")); err != nil || st.Size() != 24<<20 {
		t.Errorf("hostDisk file: %v %v", st, err)
	}
	if t.Failed() {
		t.Log(diag())
	}
}
