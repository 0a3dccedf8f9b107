package volumes

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"

	"github.com/kvirt/kvirt/devices/virtio/blk"
)

// CloudInitLabel is the volume label cloud-init's NoCloud datasource looks for.
const CloudInitLabel = "cidata"

// maxCloudInitBytes bounds the user-data and network-config a VMI may carry (KubeVirt caps user-data at 2 KiB
// inline but allows secrets; 16 MiB is far above any real cloud-config).
const maxCloudInitBytes = 16 << 20

// NoCloud is a cloudInitNoCloud volume's content. Exactly one of UserData and UserDataBase64 may be set (both
// empty gives an empty user-data file); the same holds for the network-config pair.
type NoCloud struct {
	UserData             string
	UserDataBase64       string
	NetworkData          string
	NetworkDataBase64    string
	InstanceID, Hostname string // meta-data: the VMI's UID and name
}

// PrepareCloudInit writes an ISO 9660 image (Rock Ridge names, label "cidata") at workDir/<volume>.iso holding
// user-data, meta-data and, when given, network-config, and opens it read-only. field is e.g.
// "spec.volumes[1].cloudInitNoCloud".
func PrepareCloudInit(field, workDir, volume string, nc NoCloud) (*blk.File, error) {
	user, err := pickData(field, "userData", nc.UserData, nc.UserDataBase64)
	if err != nil {
		return nil, err
	}
	network, err := pickData(field, "networkData", nc.NetworkData, nc.NetworkDataBase64)
	if err != nil {
		return nil, err
	}
	if nc.InstanceID == "" {
		return nil, fieldErr("metadata.uid", "empty: the VMI UID is the cloud-init instance-id")
	}
	files := map[string][]byte{
		"user-data": user,
		"meta-data": []byte(fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", nc.InstanceID, nc.Hostname)),
	}
	if network != nil {
		files["network-config"] = network
	}
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return nil, fieldErr(field, "create work directory: %w", err)
	}
	p := filepath.Join(workDir, volume+".iso")
	if err := WriteISO(p, CloudInitLabel, files); err != nil {
		return nil, fieldErr(field, "build the cidata disk: %w", err)
	}
	b, err := blk.OpenFile(p, blk.FileOptions{ReadOnly: true})
	if err != nil {
		return nil, fieldErr(field, "%w", err)
	}
	return b, nil
}

func pickData(field, name, plain, b64 string) ([]byte, error) {
	switch {
	case plain != "" && b64 != "":
		return nil, fieldErr(field, "both %s and %sBase64 are set: set only one", name, name)
	case b64 != "":
		d, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
		if err != nil {
			return nil, fieldErr(field+"."+name+"Base64", "not valid base64: %v", err)
		}
		if len(d) > maxCloudInitBytes {
			return nil, fieldErr(field+"."+name+"Base64", "%d bytes decoded, more than %d", len(d), maxCloudInitBytes)
		}
		return d, nil
	case plain != "":
		if len(plain) > maxCloudInitBytes {
			return nil, fieldErr(field+"."+name, "%d bytes, more than %d", len(plain), maxCloudInitBytes)
		}
		return []byte(plain), nil
	}
	if name == "userData" {
		return []byte{}, nil
	}
	return nil, nil
}

// WriteISO writes an ISO 9660 image with Rock Ridge names holding files in its root directory.
func WriteISO(path, label string, files map[string][]byte) (err error) {
	var total int64
	for _, b := range files {
		total += (int64(len(b))/2048 + 1) * 2048
	}
	os.Remove(path)
	work, err := os.MkdirTemp(filepath.Dir(path), ".iso-work-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	d, err := diskfs.Create(path, 1<<20+2*total, diskfs.SectorSizeDefault)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := d.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	d.LogicalBlocksize = 2048
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 0, FSType: filesystem.TypeISO9660, VolumeLabel: label, WorkDir: work})
	if err != nil {
		return err
	}
	for name, b := range files {
		f, err := fs.OpenFile(name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	iso, ok := fs.(*iso9660.FileSystem)
	if !ok {
		return fmt.Errorf("go-diskfs returned %T, not an ISO 9660 filesystem", fs)
	}
	if err := iso.Finalize(iso9660.FinalizeOptions{RockRidge: true, VolumeIdentifier: label}); err != nil {
		return err
	}
	return padVolumeDescriptor(path)
}

// padVolumeDescriptor replaces the NUL padding go-diskfs leaves in the primary volume descriptor's system and
// volume identifiers with spaces, as ECMA-119 requires (blkid and cloud-init then read the label "cidata").
func padVolumeDescriptor(path string) error {
	const pvd = 16 * 2048
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var d [72]byte
	if _, err := f.ReadAt(d[:], pvd); err != nil {
		return fmt.Errorf("read the primary volume descriptor: %w", err)
	}
	if d[0] != 1 || string(d[1:6]) != "CD001" {
		return fmt.Errorf("no primary volume descriptor at sector 16")
	}
	for i := 8; i < 72; i++ {
		if d[i] == 0 {
			d[i] = ' '
		}
	}
	if _, err := f.WriteAt(d[8:72], pvd+8); err != nil {
		return err
	}
	return f.Sync()
}
