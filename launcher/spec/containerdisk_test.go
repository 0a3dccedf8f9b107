package spec

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvirt/kvirt/launcher/containerdisk"
	"github.com/kvirt/kvirt/launcher/volumes"
)

// In a launcher pod the kubelet pulled the containerDisk and an init container copied its disk to
// containerdisk.DisksDir/<volume>/disk.img: the launcher uses that copy (read-only, under an overlay) and
// never contacts a registry, even with an imagePullSecret it could not read.
func TestPrepareDisksUsesPodCopiedContainerDisk(t *testing.T) {
	m, _, err := Translate(parse(t, `
metadata: {name: cd, uid: 11111111-2222-3333-4444-555555555555}
spec:
  domain:
    resources: {requests: {memory: 64Mi}}
    devices:
      disks: [{name: root}]
  volumes:
  - {name: root, containerDisk: {image: "registry.invalid/private/disk:1", imagePullSecret: regcred}}
`))
	if err != nil {
		t.Fatalf("imagePullSecret is accepted (the kubelet uses it): %v", err)
	}
	if m.Disks[0].ImagePullSecret != "regcred" {
		t.Fatalf("disk %+v", m.Disks[0])
	}
	disks := t.TempDir()
	work := t.TempDir()

	// No copy from an init container: the launcher would pull itself and refuses the secret, without
	// any network access.
	_, err = PrepareDisks(context.Background(), m, Dirs{Work: work, ContainerDisks: disks})
	var fe *volumes.FieldError
	if !errors.As(err, &fe) || fe.Field != "spec.volumes[0].containerDisk.image" || !strings.Contains(err.Error(), "kubelet") {
		t.Fatalf("pull with a secret: %v", err)
	}

	src := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(src, bytes.Repeat([]byte("D"), 1<<20), 0o644)
	if _, err := containerdisk.Copy(context.Background(), src, containerdisk.VolumeDir(disks, "root"), nil); err != nil {
		t.Fatal(err)
	}
	out, err := PrepareDisks(context.Background(), m, Dirs{Work: work, ContainerDisks: disks})
	if err != nil {
		t.Fatal(err)
	}
	defer CloseDisks(out)
	fastPaths(t, out[0])
	b := out[0].Backend
	if b.Size() != 1<<20 {
		t.Fatalf("size %d", b.Size())
	}
	if _, err := b.WriteAt([]byte("guest"), 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	b.ReadAt(got, 0)
	if string(got) != "guestD" {
		t.Errorf("read back %q", got)
	}
	copied, _ := os.ReadFile(filepath.Join(containerdisk.VolumeDir(disks, "root"), containerdisk.DiskFile))
	if !bytes.Equal(copied, bytes.Repeat([]byte("D"), 1<<20)) {
		t.Error("the guest's write reached the pod's copy of the image")
	}
	if _, err := os.Stat(filepath.Join(work, "root", "disk.overlay")); err != nil {
		t.Errorf("no overlay in the work directory: %v", err)
	}
}
