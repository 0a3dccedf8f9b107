package bootcmd

import (
	"fmt"
	"os"

	"github.com/kvirt/kvirt/devices/bus"
	"github.com/kvirt/kvirt/devices/virtio/blk"
	"github.com/kvirt/kvirt/devices/virtio/mmio"
	vnet "github.com/kvirt/kvirt/devices/virtio/net"
	"github.com/kvirt/kvirt/devices/virtio/rng"
	"github.com/kvirt/kvirt/vmm"
)

// devices validates the device flags without opening anything: --disk PATH[,ro][,serial=S][,direct]
// (repeatable; /dev/vda, /dev/vdb, ... in order) and --tap NAME[,mac=M] (repeatable; the tap of that name in
// this network namespace, created if missing).
func (f *Flags) devices() ([]blk.DiskSpec, []vnet.TapSpec, error) {
	var ds []blk.DiskSpec
	for _, s := range f.Disks {
		d, err := blk.ParseDiskSpec(s)
		if err != nil {
			return nil, nil, usage("--disk: %v", err)
		}
		ds = append(ds, d)
	}
	var ts []vnet.TapSpec
	for _, s := range f.Taps {
		t, err := vnet.ParseTapSpec(s)
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

// attachVirtio maps dev behind a virtio-mmio transport on m. The machine closes the transport (stopping
// the device, syncing disks) before it reports the end.
func attachVirtio(m *vmm.Machine, name string, dev mmio.Device) error {
	_, err := m.AddVirtioMMIO(func(_ vmm.VirtioSlot, irq *vmm.IRQFD) (bus.Device, []*os.File, error) {
		tr, err := mmio.New(name, dev, m.Memory(), irq)
		if err != nil {
			return nil, nil, err
		}
		return tr, tr.NotifyFiles(), nil
	})
	return err
}

// addDevices opens the disks and taps and attaches them (disks first, in order), then the RNG.
func (f *Flags) addDevices(m *vmm.Machine) error {
	disks, taps, err := f.devices()
	if err != nil {
		return err
	}
	for i, d := range disks {
		name := "vd" + string(rune('a'+i))
		dev, err := d.Open(name)
		if err != nil {
			return fmt.Errorf("--disk %s: %w", d, err)
		}
		if err := attachVirtio(m, "virtio-blk "+name, dev); err != nil {
			dev.Close()
			return err
		}
	}
	for _, t := range taps {
		dev, err := t.Open()
		if err != nil {
			return fmt.Errorf("--tap %s: %w", t, err)
		}
		if err := attachVirtio(m, "virtio-net "+t.Name, dev); err != nil {
			dev.Close()
			return err
		}
	}
	if f.RNG {
		return attachVirtio(m, "virtio-rng", rng.New())
	}
	return nil
}
