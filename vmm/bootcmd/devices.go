package bootcmd

import (
	"fmt"

	"github.com/kvirt/kvirt/devices/virtio/blk"
	"github.com/kvirt/kvirt/devices/virtio/rng"
	"github.com/kvirt/kvirt/vmm"
)

// devices validates the device flags without opening anything: --disk PATH[,ro][,serial=S][,direct]
// (repeatable; /dev/vda, /dev/vdb, ... in order) and --tap NAME[,mac=M] (repeatable; the tap of that name in
// this network namespace, created if missing).
func (f *Flags) devices() ([]DiskSpec, []TapSpec, error) {
	var ds []DiskSpec
	for _, s := range f.Disks {
		d, err := ParseDiskSpec(s)
		if err != nil {
			return nil, nil, usage("--disk: %v", err)
		}
		ds = append(ds, d)
	}
	var ts []TapSpec
	for _, s := range f.Taps {
		t, err := ParseTapSpec(s)
		if err != nil {
			return nil, nil, usage("--tap: %v", err)
		}
		ts = append(ts, t)
	}
	if len(ds) > 26 {
		return nil, nil, usage("--disk: at most 26 disks (vda..vdz)")
	}
	return ds, ts, nil
}

// addDevices opens the disks and taps and attaches them (disks first, in order), then the RNG.
func (f *Flags) addDevices(m *vmm.Machine) error {
	disks, taps, err := f.devices()
	if err != nil {
		return err
	}
	for i, d := range disks {
		name := blk.DiskName(i)
		dev, err := d.Open(name)
		if err != nil {
			return fmt.Errorf("--disk %s: %w", d, err)
		}
		if _, err := m.AttachVirtio("virtio-blk "+name, dev); err != nil {
			dev.Close()
			return err
		}
	}
	for _, t := range taps {
		dev, err := t.Open()
		if err != nil {
			return fmt.Errorf("--tap %s: %w", t, err)
		}
		if _, err := m.AttachVirtio("virtio-net "+t.Name, dev); err != nil {
			dev.Close()
			return err
		}
	}
	if f.RNG {
		_, err := m.AttachVirtio("virtio-rng", rng.New())
		return err
	}
	return nil
}
