package bootcmd

import (
	"fmt"
	"net"
	"strings"

	"github.com/kvirt/kvirt/devices/virtio/blk"
	"github.com/kvirt/kvirt/devices/virtio/virtionet"
)

// The syntax of the repeatable device flags (--disk, --tap), kept here next to the command that parses them
// so that the device packages hold device logic only.

// DiskSpec is a disk as given on a command line: `PATH[,ro][,serial=S][,direct]`.
type DiskSpec struct {
	Path     string
	ReadOnly bool
	Serial   string
	Direct   bool
}

// ParseDiskSpec parses `PATH[,ro][,serial=S][,direct]` (the boot command's --disk). A path containing a comma
// cannot be given this way.
func ParseDiskSpec(s string) (DiskSpec, error) {
	parts := strings.Split(s, ",")
	d := DiskSpec{Path: parts[0]}
	if d.Path == "" {
		return d, fmt.Errorf("disk %q: empty path (want PATH[,ro][,serial=S][,direct])", s)
	}
	seen := map[string]bool{}
	for _, p := range parts[1:] {
		key, val, hasVal := strings.Cut(p, "=")
		if seen[key] {
			return d, fmt.Errorf("disk %q: %s given twice", s, key)
		}
		seen[key] = true
		switch {
		case key == "ro" && !hasVal:
			d.ReadOnly = true
		case key == "direct" && !hasVal:
			d.Direct = true
		case key == "serial" && hasVal:
			if len(val) == 0 || len(val) > blk.IDLen {
				return d, fmt.Errorf("disk %q: serial must be 1..%d bytes", s, blk.IDLen)
			}
			for _, c := range []byte(val) {
				if c < 0x20 || c > 0x7e {
					return d, fmt.Errorf("disk %q: serial must be printable ASCII", s)
				}
			}
			d.Serial = val
		default:
			return d, fmt.Errorf("disk %q: unknown option %q (want ro, serial=S or direct)", s, p)
		}
	}
	return d, nil
}

// String formats the spec back into the flag syntax.
func (d DiskSpec) String() string {
	s := d.Path
	if d.ReadOnly {
		s += ",ro"
	}
	if d.Serial != "" {
		s += ",serial=" + d.Serial
	}
	if d.Direct {
		s += ",direct"
	}
	return s
}

// Open opens the disk's image and builds the device (name is e.g. "vda"). Close the device to sync and
// close the image.
func (d DiskSpec) Open(name string) (*blk.Device, error) {
	f, err := blk.OpenFile(d.Path, blk.FileOptions{ReadOnly: d.ReadOnly, Direct: d.Direct})
	if err != nil {
		return nil, err
	}
	dev, err := blk.New(blk.Config{Backend: f, Size: f.Size(), ReadOnly: d.ReadOnly, Serial: d.Serial, OwnBackend: true, Name: name})
	if err != nil {
		f.Close()
		return nil, err
	}
	return dev, nil
}

// TapSpec is a NIC as given on a command line: `NAME[,mac=M]`.
type TapSpec struct {
	Name string
	MAC  net.HardwareAddr // nil: random
}

// ParseTapSpec parses `NAME[,mac=M]` (the boot command's --tap).
func ParseTapSpec(s string) (TapSpec, error) {
	parts := strings.Split(s, ",")
	t := TapSpec{Name: parts[0]}
	if t.Name == "" || len(t.Name) > 15 || strings.ContainsAny(t.Name, "/ \t\n:") {
		return t, fmt.Errorf("tap %q: want NAME[,mac=M] with an interface name of 1..15 characters", s)
	}
	for _, p := range parts[1:] {
		key, val, _ := strings.Cut(p, "=")
		if key != "mac" || t.MAC != nil {
			return t, fmt.Errorf("tap %q: unknown or repeated option %q (want mac=M)", s, p)
		}
		mac, err := net.ParseMAC(val)
		if err != nil || len(mac) != 6 {
			return t, fmt.Errorf("tap %q: mac %q is not a 6-byte MAC address", s, val)
		}
		if mac[0]&1 != 0 {
			return t, fmt.Errorf("tap %q: mac %s is a multicast address", s, mac)
		}
		t.MAC = mac
	}
	return t, nil
}

// String formats the spec back into the flag syntax.
func (t TapSpec) String() string {
	if t.MAC != nil {
		return t.Name + ",mac=" + t.MAC.String()
	}
	return t.Name
}

// Open attaches to (or creates) the tap in the calling thread's network namespace and builds the device.
// Close the device to close the tap.
func (t TapSpec) Open() (*virtionet.Device, error) {
	tap, err := virtionet.OpenTap(t.Name)
	if err != nil {
		return nil, err
	}
	dev, err := virtionet.New(virtionet.Config{Backend: tap, MAC: t.MAC, OwnBackend: true, Name: t.Name})
	if err != nil {
		tap.Close()
		return nil, err
	}
	return dev, nil
}
