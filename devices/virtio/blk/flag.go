package blk

import (
	"fmt"
	"strings"
)

// DiskSpec is a disk as given on a command line: `PATH[,ro][,serial=S][,direct]`.
type DiskSpec struct {
	Path     string
	ReadOnly bool
	Serial   string
	Direct   bool
}

// ParseDiskSpec parses `PATH[,ro][,serial=S][,direct]` (virt-launcher's --disk). A path containing a comma
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
			if len(val) == 0 || len(val) > IDLen {
				return d, fmt.Errorf("disk %q: serial must be 1..%d bytes", s, IDLen)
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
func (d DiskSpec) Open(name string) (*Device, error) {
	f, err := OpenFile(d.Path, FileOptions{ReadOnly: d.ReadOnly, Direct: d.Direct})
	if err != nil {
		return nil, err
	}
	dev, err := New(Config{Backend: f, Size: f.Size(), ReadOnly: d.ReadOnly, Serial: d.Serial, OwnBackend: true, Name: name})
	if err != nil {
		f.Close()
		return nil, err
	}
	return dev, nil
}
