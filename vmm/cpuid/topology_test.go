package cpuid

import (
	"slices"
	"strings"
	"testing"

	"github.com/kvirt/kvirt/vmm/kvm"
)

// intelHost is KVM_GET_SUPPORTED_CPUID's topology-related part on an Intel host (measured on a PVM
// development machine: only subleaf 0 of 0xB and 0x1F is listed, all zero).
func intelHost() []kvm.CPUIDEntry {
	return []kvm.CPUIDEntry{
		{Function: 0, EAX: 0x24, EBX: 0x756e6547, ECX: 0x6c65746e, EDX: 0x49656e69},
		{Function: 1, EAX: 0xa0671, EBX: 0x1020800, ECX: 0x81202000, EDX: 0xf8bfbff},
		{Function: 4, Index: 0, Flags: 1, EAX: 0x4000121, EBX: 0x2c0003f, ECX: 0x3f},
		{Function: 4, Index: 1, Flags: 1, EAX: 0x4000122, EBX: 0x3c0003f, ECX: 0x3f},
		{Function: 4, Index: 2, Flags: 1, EAX: 0x4000143, EBX: 0x3c0003f, ECX: 0x7ff},
		{Function: 4, Index: 3, Flags: 1, EAX: 0x4004163, EBX: 0x3c0003f, ECX: 0x77fff},
		{Function: 4, Index: 4, Flags: 1},
		{Function: 0xb, Index: 0, Flags: 1, EDX: 1},
		{Function: 0x1f, Index: 0, Flags: 1, EDX: 1},
		{Function: 0x80000000, EAX: 0x80000008},
		{Function: 0x80000008, EAX: 0x3930, ECX: 0x1234},
	}
}

// amdHost is an AMD host's list: vendor AuthenticAMD, 0xB of its own 8-thread package, and the extended
// topology leaves.
func amdHost() []kvm.CPUIDEntry {
	return []kvm.CPUIDEntry{
		{Function: 0, EAX: 0x10, EBX: vendorAMD, ECX: 0x444d4163, EDX: 0x69746e65},
		{Function: 1, EBX: 0x00080800},
		{Function: 0xb, Index: 0, Flags: 1, EAX: 1, EBX: 2, ECX: 0x100},
		{Function: 0xb, Index: 1, Flags: 1, EAX: 4, EBX: 8, ECX: 0x201},
		{Function: 0x80000000, EAX: 0x80000021},
		{Function: 0x80000008, EAX: 0x3030, ECX: 0x7007},
		{Function: 0x8000001d, Index: 0, Flags: 1, EAX: 0x4121, EBX: 0x3f},
		{Function: 0x8000001d, Index: 3, Flags: 1, EAX: 0x3c163, EBX: 0x3f},
		{Function: 0x8000001e, EAX: 3, EBX: 0x0101, ECX: 0x0300},
	}
}

func entry(t *testing.T, es []kvm.CPUIDEntry, fn, idx uint32) kvm.CPUIDEntry {
	t.Helper()
	for _, e := range es {
		if e.Function == fn && (e.Index == idx || e.Flags&kvm.CPUIDFlagSignificantIndex == 0) {
			return e
		}
	}
	t.Fatalf("no CPUID leaf %#x/%d", fn, idx)
	return kvm.CPUIDEntry{}
}

// linuxView derives what Linux 6.1 shows in /sys/devices/system/cpu/cpuN/topology from a vCPU's CPUID, the
// way detect_extended_topology does: the SMT level's shift gives the core field, the core level's shift
// the package field; the x2APIC ID comes from EDX.
func linuxView(t *testing.T, es []kvm.CPUIDEntry, leaf uint32) (apic, pkg, core, siblings uint32) {
	t.Helper()
	smt := entry(t, es, leaf, 0)
	if smt.EBX&0xffff == 0 || (smt.ECX>>8)&0xff != levelSMT {
		t.Fatalf("leaf %#x/0 is not a valid SMT level: %+v", leaf, smt)
	}
	htWidth, pkgWidth := smt.EAX&0x1f, smt.EAX&0x1f
	siblings = smt.EBX & 0xffff
	for i := uint32(1); ; i++ {
		e := entry(t, es, leaf, i)
		typ := (e.ECX >> 8) & 0xff
		if typ == levelInvalid {
			break
		}
		if typ == levelCore {
			pkgWidth = e.EAX & 0x1f
			siblings = e.EBX & 0xffff
		}
		if i > 8 {
			t.Fatalf("leaf %#x never ends", leaf)
		}
	}
	apic = smt.EDX
	coreMask := (^(^uint32(0) << pkgWidth)) >> htWidth
	return apic, apic >> pkgWidth, (apic >> htWidth) & coreMask, siblings
}

func TestAPICIDs(t *testing.T) {
	for _, c := range []struct {
		t    Topology
		want []uint32
	}{
		{Topology{1, 1, 1}, []uint32{0}},
		{Topology{2, 1, 1}, []uint32{0, 1}},
		{Topology{1, 2, 1}, []uint32{0, 1}},
		{Topology{1, 1, 2}, []uint32{0, 1}},
		{Topology{2, 3, 1}, []uint32{0, 1, 2, 4, 5, 6}},
		{Topology{2, 2, 2}, []uint32{0, 1, 2, 3, 4, 5, 6, 7}},
		{Topology{1, 3, 3}, []uint32{0, 1, 2, 4, 5, 6, 8, 9, 10}},
		{Topology{3, 1, 2}, []uint32{0, 1, 2, 3, 4, 5}},
	} {
		if err := c.t.Validate(); err != nil {
			t.Errorf("%v: %v", c.t, err)
		}
		if got := c.t.APICIDs(); !slices.Equal(got, c.want) {
			t.Errorf("%v: APIC IDs %v, want %v", c.t, got, c.want)
		}
	}
}

func TestTopologyValidate(t *testing.T) {
	for _, c := range []struct {
		t    Topology
		want string
	}{
		{Topology{0, 1, 1}, "at least 1"},
		{Topology{1, -1, 1}, "at least 1"},
		{Topology{1, 1, 0}, "at least 1"},
		{Topology{2, 1, 130}, "APIC IDs up to 385"},
		{Topology{1 << 40, 1 << 40, 1}, "more than 255"},
	} {
		err := c.t.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one containing %q", c.t, err, c.want)
		}
	}
	if err := (Topology{1, 1, 255}).Validate(); err != nil {
		t.Errorf("255 threads (APIC IDs 0-254) refused: %v", err)
	}
	if _, err := ForVCPU(intelHost(), Topology{2, 1, 1}, 2, Policy{}); err == nil {
		t.Error("vCPU index 2 of 2 accepted")
	}
	if _, err := ForVCPU(intelHost(), Topology{0, 1, 1}, 0, Policy{}); err == nil {
		t.Error("zero sockets accepted")
	}
}

// TestTopologyLeaves checks, for several layouts, that every vCPU's leaves 0xB and 0x1F make Linux derive
// the socket and core the VMM placed it in, and that leaves 1 and 4 agree.
func TestTopologyLeaves(t *testing.T) {
	for _, top := range []Topology{{1, 1, 1}, {2, 1, 1}, {1, 2, 1}, {1, 1, 2}, {2, 3, 1}, {2, 2, 2}, {1, 3, 3}, {4, 2, 1}} {
		seen := map[uint32]bool{}
		for i := 0; i < top.CPUs(); i++ {
			es, err := ForVCPU(intelHost(), top, i, Policy{})
			if err != nil {
				t.Fatalf("%v vCPU %d: %v", top, i, err)
			}
			socket, core, _ := top.Position(i)
			for _, leaf := range []uint32{0xb, 0x1f} {
				n := 0
				for _, e := range es {
					if e.Function == leaf {
						n++
					}
				}
				if n != 3 {
					t.Fatalf("%v: leaf %#x has %d subleaves, want 3 (SMT, core, end)", top, leaf, n)
				}
				apic, pkg, c, siblings := linuxView(t, es, leaf)
				if apic != top.APICID(i) || pkg != uint32(socket) || c != uint32(core) || siblings != uint32(top.Cores*top.Threads) {
					t.Errorf("%v vCPU %d leaf %#x: Linux sees apic %d package %d core %d siblings %d, want %d %d %d %d",
						top, i, leaf, apic, pkg, c, siblings, top.APICID(i), socket, core, top.Cores*top.Threads)
				}
			}
			if seen[top.APICID(i)] {
				t.Fatalf("%v: APIC ID %d given twice", top, top.APICID(i))
			}
			seen[top.APICID(i)] = true

			l1 := entry(t, es, 1, 0)
			if l1.EBX>>24 != top.APICID(i) {
				t.Errorf("%v vCPU %d: leaf 1 initial APIC ID %d", top, i, l1.EBX>>24)
			}
			if l1.EBX&0xffff != 0x0800 { // brand index and CLFLUSH size are kept
				t.Errorf("%v: leaf 1 EBX low half changed: %#x", top, l1.EBX)
			}
			perPkg := top.Cores * top.Threads
			if got := (l1.EBX >> 16) & 0xff; got < uint32(perPkg) || got != 1<<top.PackageShift() {
				t.Errorf("%v: leaf 1 addressable logical processors %d, want %d", top, got, 1<<top.PackageShift())
			}
			if htt := l1.EDX&(1<<28) != 0; htt != (perPkg > 1) {
				t.Errorf("%v: HTT %v with %d logical processors per package", top, htt, perPkg)
			}
			if l1.ECX&(1<<31) == 0 {
				t.Errorf("%v: hypervisor bit not set", top)
			}
			for idx := uint32(0); idx < 4; idx++ {
				l4 := entry(t, es, 4, idx)
				cores := l4.EAX>>26 + 1
				sharing := (l4.EAX>>14)&0xfff + 1
				want := uint32(1) << top.ThreadBits()
				if (l4.EAX>>5)&7 == 3 {
					want = 1 << top.PackageShift()
				}
				if cores != 1<<top.CoreBits() || sharing != want || l4.EAX&0x3fff != intelHost()[2+idx].EAX&0x3fff {
					t.Errorf("%v: leaf 4/%d EAX %#x: %d cores, %d sharing (want %d, %d)", top, idx, l4.EAX, cores, sharing, 1<<top.CoreBits(), want)
				}
			}
			if l := entry(t, es, 4, 4); l.EAX != 0 {
				t.Errorf("%v: leaf 4/4 (no cache) changed: %#x", top, l.EAX)
			}
			if l := entry(t, es, 0x80000008, 0); l.ECX != 0x1234 {
				t.Errorf("%v: Intel leaf 0x80000008 ECX changed to %#x", top, l.ECX)
			}
		}
	}
}

func TestTopologyAMD(t *testing.T) {
	top := Topology{2, 3, 2}
	for i := 0; i < top.CPUs(); i++ {
		es, err := ForVCPU(amdHost(), top, i, Policy{})
		if err != nil {
			t.Fatal(err)
		}
		socket, core, _ := top.Position(i)
		l8 := entry(t, es, 0x80000008, 0)
		if nc, w := l8.ECX&0xff, (l8.ECX>>12)&0xf; nc != 5 || w != top.PackageShift() || l8.ECX&^0xf0ff != 0x7007&^0xf0ff {
			t.Errorf("vCPU %d: 0x80000008 ECX %#x: NC %d (want 5), ApicIdCoreIdSize %d (want %d)", i, l8.ECX, nc, w, top.PackageShift())
		}
		l1e := entry(t, es, 0x8000001e, 0)
		if l1e.EAX != top.APICID(i) || l1e.EBX&0xff != uint32(core) || (l1e.EBX>>8)&0xff != 1 || l1e.ECX&0xff != uint32(socket) || (l1e.ECX>>8)&7 != 0 {
			t.Errorf("vCPU %d: 0x8000001E = %+v, want APIC %d core %d threads-1 1 node %d", i, l1e, top.APICID(i), core, socket)
		}
		if l1, l3 := entry(t, es, 0x8000001d, 0), entry(t, es, 0x8000001d, 3); (l1.EAX>>14)&0xfff != 1 || (l3.EAX>>14)&0xfff != 7 || l1.EAX&0x3fff != 0x121 || l3.EAX&0x3fff != 0x163 {
			t.Errorf("vCPU %d: 0x8000001D L1 EAX %#x (want 2 threads sharing), L3 EAX %#x (want 8: the package's 4×2 rounded)", i, l1.EAX, l3.EAX)
		}
		if _, pkg, c, _ := linuxView(t, es, 0xb); pkg != uint32(socket) || c != uint32(core) {
			t.Errorf("vCPU %d: leaf 0xB gives package %d core %d, want %d %d (the host's own subleaves must be replaced)", i, pkg, c, socket, core)
		}
	}
}

// TestTopologyKeepsPolicy checks the PVM compatibility policy still applies with a topology.
func TestTopologyKeepsPolicy(t *testing.T) {
	es, err := ForVCPU(intelHost(), Topology{2, 1, 1}, 1, PVMPolicy())
	if err != nil {
		t.Fatal(err)
	}
	if l1 := entry(t, es, 1, 0); l1.ECX&(1<<13|1<<23|1<<26) != 0 || l1.EBX>>24 != 1 {
		t.Fatalf("leaf 1 %+v: policy or APIC ID lost", l1)
	}
	if !slices.IsSortedFunc(es, func(a, b kvm.CPUIDEntry) int {
		if a.Function != b.Function {
			return int(int64(a.Function) - int64(b.Function))
		}
		return int(int64(a.Index) - int64(b.Index))
	}) {
		t.Fatal("entries not sorted by function and index")
	}
}

// FuzzTopology: any sockets/cores/threads either fails validation with an error or gives distinct APIC IDs
// within the 8-bit limit, from which Linux derives the same socket and core.
func FuzzTopology(f *testing.F) {
	f.Add(1, 1, 1)
	f.Add(2, 3, 2)
	f.Add(0, 5, 1)
	f.Add(2, 1, 130)
	f.Fuzz(func(t *testing.T, s, c, th int) {
		top := Topology{s, c, th}
		if err := top.Validate(); err != nil {
			return
		}
		if top.CPUs() > 256 {
			t.Fatalf("%v validated with %d CPUs", top, top.CPUs())
		}
		seen := map[uint32]bool{}
		for _, i := range []int{0, top.CPUs() / 2, top.CPUs() - 1} {
			id := top.APICID(i)
			if id > MaxAPICID {
				t.Fatalf("%v: APIC ID %d", top, id)
			}
			es, err := ForVCPU(intelHost(), top, i, Policy{})
			if err != nil {
				t.Fatal(err)
			}
			socket, core, _ := top.Position(i)
			if _, pkg, cr, _ := linuxView(t, es, 0xb); pkg != uint32(socket) || cr != uint32(core) {
				t.Fatalf("%v vCPU %d: package %d core %d, want %d %d", top, i, pkg, cr, socket, core)
			}
		}
		for _, id := range top.APICIDs() {
			if seen[id] {
				t.Fatalf("%v: duplicate APIC ID %d", top, id)
			}
			seen[id] = true
		}
	})
}
