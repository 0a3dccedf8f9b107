// Package bootdisk finds the operating system on a VMI's boot disk without mounting anything: it reads the
// disk's partition table (MBR with logical partitions, or GPT), opens each ext2/3/4 filesystem with its own
// read-only reader (ext4.go), finds the image's boot configuration — GRUB's grub.cfg and extlinux/syslinux
// through u-root's pkg/boot parsers, BLS entries (/loader/entries/*.conf) directly — and returns the default
// entry's kernel, initrds and command line, with the entry's root= resolved to a partition of the disk.
//
// Everything here reads guest-controlled bytes: the disk is untrusted input. Every offset is checked, every
// table and file read is bounded, and a corrupt table, filesystem or configuration is an error saying what
// is wrong, never a panic. A disk that simply holds no operating system (blank, a data filesystem, no boot
// configuration) is a *NotBootableError, which the launcher treats differently from corruption.
//
// Not read: vfat (an ESP's grub.cfg only chains to the one in /boot), xfs and btrfs /boot filesystems (their
// UUIDs and labels are read, so a root= on them resolves), LVM and LUKS.
package bootdisk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Limits on the files extracted for boot.
const (
	MaxKernelBytes = 256 << 20
	MaxInitrdBytes = 1 << 30
)

// NotBootableError says the disk holds no operating system kvirt can boot (as opposed to a corrupt one).
type NotBootableError struct{ Reason string }

func (e *NotBootableError) Error() string { return "no bootable operating system: " + e.Reason }

// IsNotBootable reports whether err says the disk holds no operating system.
func IsNotBootable(err error) bool {
	var nb *NotBootableError
	return errors.As(err, &nb)
}

// Volume is a filesystem found on the disk.
type Volume struct {
	Partition
	FSType  string // "ext4" (ext2/3/4), "xfs", "btrfs"
	FSUUID  string
	FSLabel string
}

// OS is what Inspect found.
type OS struct {
	Table   *Table
	Volumes []Volume
	// Boot is the volume holding the boot configuration and the files it names.
	Boot  Volume
	FS    *Ext4
	Entry *Entry
	// RootSpec is the entry's root= value ("" when it has none); Root is the volume it names on this disk
	// (nil when root= is absent or names something not on this disk).
	RootSpec string
	Root     *Volume
}

// Inspect reads the disk of size bytes and returns its operating system's default boot entry.
func Inspect(r io.ReaderAt, size int64) (*OS, error) {
	t, err := ReadTable(r, size)
	switch {
	case errors.Is(err, ErrNoTable):
		if !IsExt4(io.NewSectionReader(r, 0, size)) {
			return nil, &NotBootableError{Reason: "no partition table and no ext2/3/4 filesystem on the whole disk"}
		}
		t = &Table{Kind: "none", Partitions: []Partition{{Index: 0, Start: 0, Size: size}}}
	case err != nil:
		return nil, fmt.Errorf("partition table: %w", err)
	}
	o := &OS{Table: t}
	var fsErr error
	var seen []string
	for _, p := range t.Partitions {
		if p.Extent {
			continue
		}
		sr := io.NewSectionReader(r, p.Start, p.Size)
		v := Volume{Partition: p}
		if !IsExt4(sr) {
			v.FSType, v.FSUUID, v.FSLabel = probeOther(sr)
			if v.FSType != "" {
				o.Volumes = append(o.Volumes, v)
				seen = append(seen, fmt.Sprintf("%s on %s", v.FSType, partName(p)))
			}
			continue
		}
		fsys, err := OpenExt4(sr, p.Size)
		if err != nil {
			if fsErr == nil {
				fsErr = fmt.Errorf("%s: %w", partName(p), err)
			}
			continue
		}
		v.FSType, v.FSUUID, v.FSLabel = "ext4", fsys.UUID(), fsys.Label()
		o.Volumes = append(o.Volumes, v)
		seen = append(seen, fmt.Sprintf("ext4 on %s", partName(p)))
		if o.Entry != nil {
			continue
		}
		e, err := FindEntry(fsys)
		if errors.Is(err, errNoConfig) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", partName(p), err)
		}
		if err := checkFiles(fsys, e); err != nil {
			return nil, fmt.Errorf("%s: %w", partName(p), err)
		}
		o.Boot, o.FS, o.Entry = v, fsys, e
	}
	if o.Entry == nil {
		if fsErr != nil {
			return nil, fsErr
		}
		if len(seen) == 0 {
			return nil, &NotBootableError{Reason: fmt.Sprintf("%s partition table with %d partitions and no ext2/3/4 filesystem",
				strings.ToUpper(t.Kind), len(t.Partitions))}
		}
		return nil, &NotBootableError{Reason: fmt.Sprintf("no GRUB, BLS or extlinux/syslinux configuration on %s",
			strings.Join(seen, ", "))}
	}
	o.RootSpec = cmdlineValue(o.Entry.Cmdline, "root")
	o.Root = o.resolve(o.RootSpec)
	return o, nil
}

func partName(p Partition) string {
	if p.Index == 0 {
		return "the whole disk"
	}
	return fmt.Sprintf("partition %d", p.Index)
}

// checkFiles makes sure the entry's kernel and initrds exist as regular files.
func checkFiles(fsys *Ext4, e *Entry) error {
	for i, p := range append([]string{e.Kernel}, e.Initrds...) {
		what := "kernel"
		if i > 0 {
			what = "initrd"
		}
		st, err := fs.Stat(fsys, strings.TrimPrefix(p, "/"))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s: the default entry %q names %s %s, which is not on the filesystem", e.Config, e.Title, what, p)
			}
			return fmt.Errorf("%s: the default entry %q names %s %s: %w", e.Config, e.Title, what, p, err)
		}
		if st.IsDir() {
			return fmt.Errorf("%s: the default entry %q names %s %s, which is a directory", e.Config, e.Title, what, p)
		}
	}
	return nil
}

// cmdlineValue returns the value of the last key=value word on a kernel command line.
func cmdlineValue(cmdline, key string) string {
	v := ""
	for _, w := range strings.Fields(cmdline) {
		if rest, ok := strings.CutPrefix(w, key+"="); ok {
			v = rest
		}
	}
	return v
}

// resolve finds the volume a root= value names on this disk (UUID=, PARTUUID=, LABEL=, PARTLABEL=,
// /dev/disk/by-*/ and /dev/[svx]dXN or /dev/hdXN by partition number).
func (o *OS) resolve(spec string) *Volume {
	if spec == "" {
		return nil
	}
	match := func(f func(v Volume) bool) *Volume {
		for i := range o.Volumes {
			if f(o.Volumes[i]) {
				return &o.Volumes[i]
			}
		}
		return nil
	}
	for prefix, key := range map[string]string{"/dev/disk/by-uuid/": "UUID=", "/dev/disk/by-partuuid/": "PARTUUID=",
		"/dev/disk/by-label/": "LABEL=", "/dev/disk/by-partlabel/": "PARTLABEL="} {
		if rest, ok := strings.CutPrefix(spec, prefix); ok {
			spec = key + rest
		}
	}
	switch {
	case strings.HasPrefix(spec, "UUID="):
		u := strings.ToLower(strings.TrimPrefix(spec, "UUID="))
		return match(func(v Volume) bool { return v.FSUUID == u })
	case strings.HasPrefix(spec, "PARTUUID="):
		u := strings.ToLower(strings.TrimPrefix(spec, "PARTUUID="))
		u, _, _ = strings.Cut(u, "/") // PARTUUID=x/PARTNROFF=n is not resolved further
		return match(func(v Volume) bool { return v.UUID != "" && v.UUID == u })
	case strings.HasPrefix(spec, "LABEL="):
		l := strings.TrimPrefix(spec, "LABEL=")
		return match(func(v Volume) bool { return v.FSLabel != "" && v.FSLabel == l })
	case strings.HasPrefix(spec, "PARTLABEL="):
		l := strings.TrimPrefix(spec, "PARTLABEL=")
		return match(func(v Volume) bool { return v.Label != "" && v.Label == l })
	case strings.HasPrefix(spec, "/dev/"):
		name := strings.TrimPrefix(spec, "/dev/")
		for _, pre := range []string{"vd", "sd", "xvd", "hd"} {
			rest, ok := strings.CutPrefix(name, pre)
			if !ok || len(rest) < 1 || rest[0] < 'a' || rest[0] > 'z' {
				continue
			}
			num := strings.TrimLeft(rest, "abcdefghijklmnopqrstuvwxyz")
			n := 0
			if num != "" {
				if _, err := fmt.Sscanf(num, "%d", &n); err != nil {
					return nil
				}
			}
			return match(func(v Volume) bool { return v.Index == n })
		}
	}
	return nil
}

// DevicePath is the guest's device node for volume v on the virtio disk named disk ("vda" → "/dev/vda1").
func DevicePath(disk string, v Volume) string {
	if v.Index == 0 {
		return "/dev/" + disk
	}
	return fmt.Sprintf("/dev/%s%d", disk, v.Index)
}

// probeOther recognises xfs and btrfs superblocks (type, UUID, label) so that root= on them resolves.
func probeOther(r io.ReaderAt) (typ, uuid, label string) {
	var b [512]byte
	if readFull(r, b[:], 0) == nil && string(b[:4]) == "XFSB" {
		return "xfs", formatUUID(b[32:48]), cString(b[108:120])
	}
	var s [0x22b]byte
	if readFull(r, s[:], 0x10000) == nil && string(s[0x40:0x48]) == "_BHRfS_M" {
		return "btrfs", formatUUID(s[0x20:0x30]), cString(s[0x12b:0x22b])
	}
	return "", "", ""
}

// Extract copies the entry's kernel to dir/kernel and its initrds, concatenated (each padded to 512 bytes,
// which the kernel's initramfs unpacker skips), to dir/initrd. It returns their paths (initrd "" when the
// entry has none). The kernel must start with an ELF or bzImage header.
func (o *OS) Extract(dir string, withInitrd bool) (kernel, initrd string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	kernel = filepath.Join(dir, "kernel")
	if err := o.copyFiles(kernel, []string{o.Entry.Kernel}, MaxKernelBytes); err != nil {
		return "", "", err
	}
	if err := checkKernelHeader(kernel); err != nil {
		return "", "", fmt.Errorf("%s (from %s): %w", o.Entry.Kernel, o.Entry.Config, err)
	}
	if withInitrd && len(o.Entry.Initrds) > 0 {
		initrd = filepath.Join(dir, "initrd")
		if err := o.copyFiles(initrd, o.Entry.Initrds, MaxInitrdBytes); err != nil {
			return "", "", err
		}
	}
	return kernel, initrd, nil
}

func (o *OS) copyFiles(dst string, srcs []string, limit int64) error {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	var total int64
	for i, src := range srcs {
		f, err := o.FS.Open(strings.TrimPrefix(src, "/"))
		if err != nil {
			out.Close()
			return fmt.Errorf("%s: %w", src, err)
		}
		st, _ := f.Stat()
		if total+st.Size() > limit {
			f.Close()
			out.Close()
			return fmt.Errorf("%s: %d bytes is more than the %d MiB kvirt loads", src, st.Size(), limit>>20)
		}
		n, err := io.Copy(out, f)
		f.Close()
		if err != nil {
			out.Close()
			return fmt.Errorf("read %s from the disk: %w", src, err)
		}
		total += n
		if pad := (512 - n%512) % 512; i < len(srcs)-1 && pad != 0 {
			if _, err := out.Write(make([]byte, pad)); err != nil {
				out.Close()
				return err
			}
			total += pad
		}
	}
	return out.Close()
}

func checkKernelHeader(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var h [0x210]byte
	n, _ := io.ReadFull(f, h[:])
	if n >= 4 && string(h[:4]) == "\x7fELF" {
		return nil
	}
	if n >= 0x206 && binary.LittleEndian.Uint32(h[0x202:]) == 0x53726448 {
		return nil
	}
	return errors.New("not a Linux kernel (neither an ELF vmlinux nor a bzImage)")
}

// Summary describes the entry for logs and events.
func (o *OS) Summary() string {
	return fmt.Sprintf("%s entry %q in %s on %s: kernel %s", o.Entry.Loader, o.Entry.Title, o.Entry.Config,
		partName(o.Boot.Partition), o.Entry.Kernel)
}

// Words returns a command line's words without the keys given (for root= rewriting).
func Words(cmdline string, drop ...string) []string {
	var out []string
	for _, w := range strings.Fields(cmdline) {
		k, _, _ := strings.Cut(w, "=")
		if slices.Contains(drop, k) {
			continue
		}
		out = append(out, w)
	}
	return out
}
