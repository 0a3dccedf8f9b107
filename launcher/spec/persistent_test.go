package spec

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvirt/kvirt/launcher/volumes"
)

// A claim volume carries what status.volumeStatus says of its claim (the controller's copy of the VMI), and
// the disk's cache mode; cache on an ephemeral disk and io: native are honoured only as warnings.
func TestTranslatePersistentDisks(t *testing.T) {
	m, warnings := translate(t, `
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: p, namespace: default}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices:
      disks: [{name: root, cache: none, io: native}, {name: raw}, {name: scratch, cache: writeback}, {name: host, cache: writethrough}]
  volumes:
  - {name: root, persistentVolumeClaim: {claimName: fs}}
  - {name: raw, persistentVolumeClaim: {claimName: blk}}
  - {name: scratch, emptyDisk: {capacity: 1Mi}}
  - {name: host, hostDisk: {path: /srv/h.img, type: Disk}}
status:
  volumeStatus:
  - {name: root, persistentVolumeClaimInfo: {claimName: fs, volumeMode: Filesystem, requests: {storage: 1Gi}, capacity: {storage: 2Gi}}}
  - {name: raw, persistentVolumeClaimInfo: {claimName: blk, volumeMode: Block, requests: {storage: 3Gi}}}
`)
	root, raw, scratch, host := m.Disks[0], m.Disks[1], m.Disks[2], m.Disks[3]
	if c := root.Claim; c == nil || c.Name != "fs" || c.Block || c.Requests.String() != "1Gi" || c.Capacity.String() != "2Gi" {
		t.Errorf("root claim %+v", c)
	}
	if c := raw.Claim; c == nil || !c.Block || c.Capacity != nil || c.Requests.String() != "3Gi" {
		t.Errorf("raw claim %+v", c)
	}
	if root.Cache != volumes.CacheNone || raw.Cache != volumes.CacheDefault || host.Cache != volumes.CacheWriteThrough || scratch.Cache != volumes.CacheDefault {
		t.Errorf("cache modes %q %q %q %q", root.Cache, raw.Cache, host.Cache, scratch.Cache)
	}
	joined := strings.Join(warnings, "\n")
	for _, w := range []string{"spec.domain.devices.disks[2].cache", "spec.domain.devices.disks[0].io"} {
		if !strings.Contains(joined, w) {
			t.Errorf("warnings lack %s:\n%s", w, joined)
		}
	}
}

// The pod layout under Root: a filesystem claim's disk.img is created at the claim's size when missing.
func TestPrepareDisksCreatesClaimImage(t *testing.T) {
	m, _ := translate(t, `
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: p, namespace: default}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices:
      disks: [{name: root}]
  volumes:
  - {name: root, persistentVolumeClaim: {claimName: fs}}
status:
  volumeStatus:
  - {name: root, persistentVolumeClaimInfo: {claimName: fs, volumeMode: Filesystem, requests: {storage: 8Mi}, capacity: {storage: 10Mi}}}
`)
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, volumes.VMIDisksDir, "root"), 0o755); err != nil {
		t.Fatal(err)
	}
	disks, err := PrepareDisks(context.Background(), m, Dirs{Work: t.TempDir(), Root: root})
	if err != nil {
		t.Fatal(err)
	}
	defer CloseDisks(disks)
	if d := disks[0]; d.Path != volumes.PVCDiskPath(root, "root") || d.Backend.Size() != 8<<20 || d.Cache != volumes.CacheNone {
		t.Errorf("claim disk %s, %d bytes, cache %s", d.Path, d.Backend.Size(), d.Cache)
	}
}

func translate(t *testing.T, manifest string) (*Machine, []string) {
	t.Helper()
	m, warnings, err := Translate(parse(t, manifest))
	if err != nil {
		t.Fatal(err)
	}
	return m, warnings
}
