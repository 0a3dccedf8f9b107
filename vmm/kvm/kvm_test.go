package kvm

import (
	"testing"
	"unsafe"

	"github.com/kvirt/kvirt/tests/testenv"
)

func TestStructSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"kvm_regs", unsafe.Sizeof(Regs{}), 144},
		{"kvm_sregs", unsafe.Sizeof(Sregs{}), 312},
		{"kvm_fpu", unsafe.Sizeof(FPU{}), 416},
		{"kvm_cpuid_entry2", unsafe.Sizeof(CPUIDEntry{}), 40},
		{"kvm_segment", unsafe.Sizeof(Segment{}), 24},
		{"kvm_run exit union offset", unsafe.Offsetof(Run{}.exit), 32},
		{"kvm_userspace_memory_region", unsafe.Sizeof(userspaceMemoryRegion{}), 32},
		{"kvm_irqfd", unsafe.Sizeof(irqfd{}), 32},
		{"kvm_ioeventfd", unsafe.Sizeof(ioeventfd{}), 64},
		{"kvm_clock_data", unsafe.Sizeof(ClockData{}), 48},
		{"kvm_msr_entry", unsafe.Sizeof(MSR{}), 16},
	} {
		if c.got != c.want {
			t.Errorf("%s: size %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestSystem(t *testing.T) {
	testenv.RequireKVM(t)
	s, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []int{CapIRQChip, CapUserMemory, CapIRQFD, CapIOEventFD, CapPIT2, CapImmediateExit} {
		if s.CheckExtension(c) == 0 {
			t.Errorf("capability %d missing", c)
		}
	}
	ids, err := s.SupportedCPUID()
	if err != nil || len(ids) == 0 {
		t.Fatalf("supported cpuid: %v (%d entries)", err, len(ids))
	}
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	c, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.GetSregs(); err != nil {
		t.Fatal(err)
	}
	if err := c.SetCPUID2(ids); err != nil {
		t.Fatal(err)
	}
	t.Logf("PVM host: %v, %d cpuid entries", PVM(), len(ids))
}
