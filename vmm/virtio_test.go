package vmm

import (
	"bytes"
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"github.com/kvirt/kvirt/devices/bus"
	"github.com/kvirt/kvirt/devices/virtio/mmio"
	"github.com/kvirt/kvirt/devices/virtio/rng"
	"github.com/kvirt/kvirt/tests/testenv"
	"github.com/kvirt/kvirt/vmm/acpi"
	"github.com/kvirt/kvirt/vmm/kvm"
	"github.com/kvirt/kvirt/vmm/layout"
)

type regs struct{}

func (regs) Read(_ uint64, d []byte) { clear(d) }
func (regs) Write(uint64, []byte)    {}

func TestAddVirtioMMIO(t *testing.T) {
	var notify []*os.File
	m, con := startTestGuest(t, "poweroff", nil) // started: adding must now fail
	if _, err := m.AddVirtioMMIO(func(VirtioSlot, *IRQFD) (bus.Device, []*os.File, error) { return regs{}, nil, nil }); err == nil {
		t.Fatal("AddVirtioMMIO after Start accepted")
	}
	con.expect(t, "kvirt-testguest: poweroff", testGuestTimeout)

	cfg := Config{Kernel: m.cfg.Kernel, Cmdline: "testguest=poweroff", MemoryBytes: 64 << 20, Logf: t.Logf}
	m2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var slots []VirtioSlot
	for i := 0; i < 2; i++ {
		s, err := m2.AddVirtioMMIO(func(s VirtioSlot, irq *IRQFD) (bus.Device, []*os.File, error) {
			if irq.GSI != s.GSI {
				t.Errorf("irqfd on GSI %d, slot GSI %d", irq.GSI, s.GSI)
			}
			f, err := kvm.EventFD()
			if err != nil {
				return nil, nil, err
			}
			notify = append(notify, f)
			return regs{}, []*os.File{f, nil}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		slots = append(slots, s)
	}
	defer func() {
		for _, f := range notify {
			f.Close()
		}
	}()
	if slots[0].Base != layout.VirtioMMIOBase || slots[1].Base != layout.VirtioMMIOBase+layout.VirtioMMIOSize || slots[0].GSI == slots[1].GSI {
		t.Fatalf("slots %+v", slots)
	}
	if err := m2.Start(); err != nil {
		t.Fatal(err)
	}
	if o, err := wait(t, m2, testGuestTimeout); o != PoweredOff || err != nil {
		t.Fatalf("outcome %v (%v)", o, err)
	}
	c := m2.acpiConfig()
	if len(c.Virtio) != 2 || c.Virtio[1].Base != slots[1].Base || c.Virtio[1].GSI != slots[1].GSI || c.Virtio[0].Size != 0x200 {
		t.Fatalf("ACPI virtio devices %+v", c.Virtio)
	}
	if n := bytes.Count(acpi.DSDT(c), []byte("LNRO0005")); n != 2 {
		t.Fatalf("DSDT declares %d virtio-mmio devices, want 2", n)
	}
}

// AttachVirtio puts a device model behind a transport on the next slot, where the guest finds the
// virtio-mmio registers; once the machine has started it refuses, naming the device.
func TestAttachVirtio(t *testing.T) {
	testenv.RequireKVM(t)
	kernel := testenv.Image(t, "testguest")
	m, err := New(Config{Kernel: kernel, Cmdline: "testguest=poweroff", MemoryBytes: 64 << 20, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := m.AttachVirtio("virtio-rng", rng.New())
	if err != nil || tr == nil {
		t.Fatalf("attach: %v, transport %v", err, tr)
	}
	var magic [4]byte
	if !m.MMIO.Read(layout.VirtioMMIOBase+mmio.RegMagic, magic[:]) || binary.LittleEndian.Uint32(magic[:]) != mmio.Magic {
		t.Fatalf("no virtio-mmio magic at the first slot: %x", magic)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	if o, err := wait(t, m, testGuestTimeout); o != PoweredOff || err != nil {
		t.Fatalf("outcome %v (%v)", o, err)
	}
	if _, err := m.AttachVirtio("late", rng.New()); err == nil || !strings.Contains(err.Error(), "attach late") {
		t.Fatalf("attach after the end: %v, want an error naming the device", err)
	}
}
