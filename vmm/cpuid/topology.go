package cpuid

import (
	"fmt"
	"math/bits"
	"slices"

	"github.com/kvirt/kvirt/vmm/kvm"
)

// Topology is the guest's CPU layout: Sockets packages of Cores cores of Threads hardware threads each
// (KubeVirt's spec.domain.cpu.{sockets,cores,threads}). The vCPU count is the product.
//
// vCPUs are numbered socket-major: index i is thread i%Threads of core (i/Threads)%Cores of socket
// i/(Threads*Cores). Each gets the x2APIC-style ID the Intel SDM describes (§ "Identification of the
// processor topology"): the thread number in the low ThreadBits bits, the core number in the next CoreBits
// bits, the socket number above them. Field widths are rounded up to powers of two, so IDs can have gaps
// (3 cores per socket: socket 1 starts at APIC ID 4).
type Topology struct {
	Sockets, Cores, Threads int
}

// MaxAPICID is the largest APIC ID a vCPU may get: the guest may run without x2APIC, and the xAPIC ID is
// 8 bits with 0xff meaning broadcast (the MADT's local-APIC entries and the MP table also hold 8 bits).
const MaxAPICID = 0xfe

// CPUs is Sockets × Cores × Threads.
func (t Topology) CPUs() int { return t.Sockets * t.Cores * t.Threads }

// Validate checks that every level is at least 1 and that the APIC IDs fit in 8 bits.
func (t Topology) Validate() error {
	if t.Sockets < 1 || t.Cores < 1 || t.Threads < 1 {
		return fmt.Errorf("cpuid: CPU topology %s: sockets, cores and threads must each be at least 1", t)
	}
	// Bound each level before multiplying so the product cannot overflow.
	if t.Sockets > MaxAPICID+1 || t.Cores > MaxAPICID+1 || t.Threads > MaxAPICID+1 {
		return fmt.Errorf("cpuid: CPU topology %s: more than %d at one level", t, MaxAPICID+1)
	}
	if id := t.APICID(t.CPUs() - 1); id > MaxAPICID {
		return fmt.Errorf("cpuid: CPU topology %s needs APIC IDs up to %d (each level is rounded up to a power of two); the limit is %d: use fewer sockets or powers of two for cores and threads", t, id, MaxAPICID)
	}
	return nil
}

func (t Topology) String() string {
	return fmt.Sprintf("%d socket(s) × %d core(s) × %d thread(s)", t.Sockets, t.Cores, t.Threads)
}

// width is the number of bits needed to number n items (0 for n ≤ 1).
func width(n int) uint32 {
	if n <= 1 {
		return 0
	}
	return uint32(bits.Len(uint(n - 1)))
}

// ThreadBits is the width of the thread field of an APIC ID (the SMT level's shift).
func (t Topology) ThreadBits() uint32 { return width(t.Threads) }

// CoreBits is the width of the core field of an APIC ID.
func (t Topology) CoreBits() uint32 { return width(t.Cores) }

// PackageShift is how far an APIC ID is shifted right to give the socket number (the core level's shift).
func (t Topology) PackageShift() uint32 { return t.ThreadBits() + t.CoreBits() }

// Position returns the socket, core (within the socket) and thread (within the core) of vCPU index i.
func (t Topology) Position(i int) (socket, core, thread int) {
	return i / (t.Threads * t.Cores), (i / t.Threads) % t.Cores, i % t.Threads
}

// APICID returns the APIC ID of vCPU index i.
func (t Topology) APICID(i int) uint32 {
	s, c, th := t.Position(i)
	return uint32(s)<<t.PackageShift() | uint32(c)<<t.ThreadBits() | uint32(th)
}

// APICIDs returns the APIC IDs of every vCPU, by index.
func (t Topology) APICIDs() []uint32 {
	out := make([]uint32, t.CPUs())
	for i := range out {
		out[i] = t.APICID(i)
	}
	return out
}

// CPUID vendor signatures (leaf 0 EBX) of the vendors whose topology leaves live in the 0x8000xxxx range.
const (
	vendorAMD   = 0x68747541 // "Auth" of AuthenticAMD
	vendorHygon = 0x6f677948 // "Hygo" of HygonGenuine
)

// Level types of leaves 0xB and 0x1F (ECX[15:8]).
const (
	levelInvalid = 0
	levelSMT     = 1
	levelCore    = 2
)

// cacheSharing is the "threads sharing this cache - 1" field (EAX[25:14]) of leaves 4 and 0x8000001D for
// the cache whose EAX is given: L1 and L2 belong to one core's threads, L3 and beyond to the package.
func cacheSharing(t Topology, eax uint32) uint32 {
	if (eax>>5)&7 >= 3 {
		return uint32(1)<<t.PackageShift() - 1
	}
	return uint32(1)<<t.ThreadBits() - 1
}

// setTopology rewrites the leaves that describe the topology for vCPU index of t: leaf 1 (initial APIC ID,
// addressable logical processors, HTT), leaf 4 (cores per package, threads sharing each cache), leaves 0xB
// and 0x1F (SMT and core levels, x2APIC ID) when the host lists them, and on AMD/Hygon hosts 0x80000008
// (threads per package, APIC ID width), 0x8000001D (threads sharing each cache) and 0x8000001E (extended
// APIC ID, core and node). The guest kernel
// derives physical_package_id and core_id from these (Linux: detect_extended_topology, amd_get_topology).
func setTopology(es []kvm.CPUIDEntry, t Topology, index int) []kvm.CPUIDEntry {
	apic := t.APICID(index)
	socket, core, _ := t.Position(index)
	perPackage := t.Cores * t.Threads
	amd := false
	has := map[uint32]bool{}
	for _, e := range es {
		has[e.Function] = true
		if e.Function == 0 {
			amd = e.EBX == vendorAMD || e.EBX == vendorHygon
		}
	}
	for i := range es {
		e := &es[i]
		switch e.Function {
		case 1:
			addressable := min(uint32(1)<<t.PackageShift(), 0xff)
			e.EBX = e.EBX&0x0000ffff | apic<<24 | addressable<<16
			if perPackage > 1 {
				e.EDX |= 1 << 28 // HTT: EBX[23:16] counts more than one logical processor
			} else {
				e.EDX &^= 1 << 28
			}
		case 4:
			if e.EAX&0x1f == 0 { // no cache at this subleaf
				continue
			}
			e.EAX = e.EAX&0x00003fff | (uint32(1)<<t.CoreBits()-1)<<26 | cacheSharing(t, e.EAX)<<14
		case 0x80000008:
			if amd {
				e.ECX = e.ECX&^0xf0ff | t.PackageShift()<<12 | uint32(perPackage-1)&0xff
			}
		case 0x8000001d: // AMD's cache leaf: threads sharing each cache, as in leaf 4
			if amd && e.EAX&0x1f != 0 {
				e.EAX = e.EAX&^(0xfff<<14) | cacheSharing(t, e.EAX)<<14
			}
		case 0x8000001e:
			if amd {
				e.EAX = apic
				e.EBX = e.EBX&^0xffff | uint32(t.Threads-1)<<8 | uint32(core)&0xff
				e.ECX = e.ECX&^0x7ff | uint32(socket)&0xff // node = socket, one node per package
			}
		}
	}
	// Leaves 0xB and 0x1F are rebuilt whole: hosts list only the subleaves of their own topology.
	for _, fn := range []uint32{0xb, 0x1f} {
		if !has[fn] {
			continue
		}
		es = slices.DeleteFunc(es, func(e kvm.CPUIDEntry) bool { return e.Function == fn })
		sub := func(i, shift, count, typ uint32) kvm.CPUIDEntry {
			return kvm.CPUIDEntry{Function: fn, Index: i, Flags: kvm.CPUIDFlagSignificantIndex,
				EAX: shift, EBX: count, ECX: typ<<8 | i, EDX: apic}
		}
		es = append(es,
			sub(0, t.ThreadBits(), uint32(t.Threads), levelSMT),
			sub(1, t.PackageShift(), uint32(perPackage), levelCore),
			sub(2, 0, 0, levelInvalid))
	}
	return es
}
