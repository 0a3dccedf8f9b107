package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Cloud-init NoCloud support, as a fresh Linux guest of the default image acts on it: at boot (PID 1 only),
// kvirt-init looks for a block device labelled "cidata" (ISO 9660 or vfat, the NoCloud datasource's rule),
// mounts it read-only, sets the hostname from meta-data's local-hostname and prints
//
//	kvirt-guest: cidata instance-id=<id> local-hostname=<name>
//	kvirt-guest: cidata user-data bytes=<n> sha256=<hex> network-config=<yes|no>
//
// Without a cidata disk it prints nothing. Actions (kvirt.test=): "cidata" runs the same again (an error if
// there is no cidata disk), "disks" prints one line per virtio disk:
//
//	kvirt-guest: disk vda size=<bytes> serial=<serial> ro=<0|1> label=<label>

func init() {
	knownActions["cidata"] = false
	knownActions["disks"] = false
}

// cidataDir is where the cidata disk is mounted while it is read.
const cidataDir = "/run/cidata"

// cidataAction runs the "cidata" or "disks" action.
func cidataAction(name string) error {
	if name == "disks" {
		return listDisks()
	}
	found, err := cloudInit()
	if err == nil && !found {
		err = errors.New("no block device labelled cidata")
	}
	return err
}

// cloudInitAtBoot is cloudInit for main: problems are printed, never fatal.
func cloudInitAtBoot() {
	if _, err := cloudInit(); err != nil {
		say("error cidata: %v", err)
	}
}

// cloudInit finds, reads and applies the cidata disk; found says whether there was one.
func cloudInit() (found bool, err error) {
	devs, err := blockDevices()
	if err != nil {
		return false, err
	}
	for _, d := range devs {
		label, fstype := volumeLabel("/dev/" + d)
		if !strings.EqualFold(label, "cidata") {
			continue
		}
		return true, readCIData("/dev/"+d, fstype)
	}
	return false, nil
}

func readCIData(dev, fstype string) error {
	if err := os.MkdirAll(cidataDir, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount(dev, cidataDir, fstype, syscall.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", dev, fstype, cidataDir, err)
	}
	defer syscall.Unmount(cidataDir, 0)
	meta, err := os.ReadFile(filepath.Join(cidataDir, "meta-data"))
	if err != nil {
		return fmt.Errorf("%s: %w", dev, err)
	}
	md := parseMetaData(meta)
	id, host := md["instance-id"], md["local-hostname"]
	if id == "" {
		return fmt.Errorf("%s: meta-data has no instance-id", dev)
	}
	if host != "" {
		if err := syscall.Sethostname([]byte(host)); err != nil {
			return fmt.Errorf("sethostname %q: %w", host, err)
		}
	}
	say("cidata instance-id=%s local-hostname=%s", id, host)
	user, err := os.ReadFile(filepath.Join(cidataDir, "user-data"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w", dev, err)
	}
	sum := sha256.Sum256(user)
	nc := "no"
	if _, err := os.Stat(filepath.Join(cidataDir, "network-config")); err == nil {
		nc = "yes"
	}
	say("cidata user-data bytes=%d sha256=%s network-config=%s", len(user), hex.EncodeToString(sum[:]), nc)
	return nil
}

// parseMetaData reads the flat "key: value" lines of NoCloud meta-data (YAML; nested maps, lists and
// comments are skipped; single or double quotes around a value are removed).
func parseMetaData(b []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' || line[0] == '#' || line[0] == '-' {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if i := strings.Index(v, " #"); i >= 0 {
			v = strings.TrimSpace(v[:i])
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		if k != "" {
			out[k] = v
		}
	}
	return out
}

// blockDevices lists the virtio disks (vd*) in name order.
func blockDevices() ([]string, error) {
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "vd") {
			out = append(out, e.Name())
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if len(out[i]) != len(out[j]) {
			return len(out[i]) < len(out[j])
		}
		return out[i] < out[j]
	})
	return out, nil
}

// volumeLabel reads the filesystem label of dev: ISO 9660 (volume identifier) or FAT (boot sector label);
// fstype is the mount type. Unknown content gives "", "".
func volumeLabel(dev string) (label, fstype string) {
	f, err := os.Open(dev)
	if err != nil {
		return "", ""
	}
	defer f.Close()
	iso := make([]byte, 2048)
	if n, _ := f.ReadAt(iso, 16*2048); n == len(iso) {
		if l, ok := isoLabel(iso); ok {
			return l, "iso9660"
		}
	}
	boot := make([]byte, 512)
	if n, _ := f.ReadAt(boot, 0); n == len(boot) {
		if l, ok := fatLabel(boot); ok {
			return l, "vfat"
		}
	}
	return "", ""
}

// isoLabel returns the volume identifier of an ISO 9660 primary volume descriptor (sector 16).
func isoLabel(pvd []byte) (string, bool) {
	if len(pvd) < 72 || pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		return "", false
	}
	return strings.TrimRight(string(pvd[40:72]), " \x00"), true
}

// fatLabel returns the volume label of a FAT12/16/32 boot sector with an extended boot signature.
func fatLabel(bs []byte) (string, bool) {
	if len(bs) < 512 || bs[510] != 0x55 || bs[511] != 0xaa {
		return "", false
	}
	// FAT32 keeps its extended BPB at offset 64 (signature 0x29 at 66, label at 71), FAT12/16 at 36 (38, 43).
	if bytes.HasPrefix(bs[82:90], []byte("FAT32")) && bs[66] == 0x29 {
		return strings.TrimRight(string(bs[71:82]), " \x00"), true
	}
	if bytes.HasPrefix(bs[54:62], []byte("FAT")) && bs[38] == 0x29 {
		return strings.TrimRight(string(bs[43:54]), " \x00"), true
	}
	return "", false
}

// listDisks prints each virtio disk's size, serial, read-only flag and label.
func listDisks() error {
	devs, err := blockDevices()
	if err != nil {
		return err
	}
	if len(devs) == 0 {
		say("disks none")
		return nil
	}
	for _, d := range devs {
		sectors, err := readSysInt("/sys/block/" + d + "/size")
		if err != nil {
			return err
		}
		ro, _ := readSysInt("/sys/block/" + d + "/ro")
		serial, _ := os.ReadFile("/sys/block/" + d + "/serial")
		label, _ := volumeLabel("/dev/" + d)
		say("disk %s size=%d serial=%s ro=%d label=%s", d, sectors*512, firstLine(string(serial)), ro, label)
	}
	return nil
}

func readSysInt(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
