// Package cpuid turns KVM's supported CPUID into the CPUID each vCPU sees: topology and APIC ids per vCPU,
// the hypervisor bit, a feature policy (features to disable, by name, as in KubeVirt's
// spec.domain.cpu.features with policy "disable"), and KVM paravirtual features the host cannot serve
// removed from leaf 0x40000001. It also knows the Linux command-line words that disable the same
// features inside the guest kernel, for hosts where CPUID masking does not reach guest ring 0 (PVM).
package cpuid

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/kvirt/kvirt/vmm/kvm"
)

// Reg names a CPUID output register.
type Reg int

// CPUID output registers.
const (
	EAX Reg = iota
	EBX
	ECX
	EDX
)

// Feature is one CPUID feature bit.
type Feature struct {
	Name      string
	Leaf      uint32
	Subleaf   uint32
	Reg       Reg
	Bit       uint
	LinuxBit  int    // X86_FEATURE_* number (word*32+bit) for clearcpuid=, -1 if none
	LinuxFlag string // dedicated kernel parameter that disables it ("noxsave"), if any
}

// Features lists the features the policy knows by name (Linux /proc/cpuinfo spelling, as KubeVirt uses).
var Features = []Feature{
	{"cx16", 1, 0, ECX, 13, 4*32 + 13, ""},
	{"popcnt", 1, 0, ECX, 23, 4*32 + 23, ""},
	{"xsave", 1, 0, ECX, 26, 4*32 + 26, "noxsave"},
	{"avx", 1, 0, ECX, 28, 4*32 + 28, ""},
	{"rdrand", 1, 0, ECX, 30, 4*32 + 30, ""},
	{"pcid", 1, 0, ECX, 17, 4*32 + 17, "nopcid"},
	{"x2apic", 1, 0, ECX, 21, 4*32 + 21, ""},
	{"fsgsbase", 7, 0, EBX, 0, 9*32 + 0, "nofsgsbase"},
	{"bmi1", 7, 0, EBX, 3, 9*32 + 3, ""},
	{"avx2", 7, 0, EBX, 5, 9*32 + 5, ""},
	{"bmi2", 7, 0, EBX, 8, 9*32 + 8, ""},
	{"erms", 7, 0, EBX, 9, 9*32 + 9, ""},
	{"invpcid", 7, 0, EBX, 10, 9*32 + 10, "noinvpcid"},
	{"rdseed", 7, 0, EBX, 18, 9*32 + 18, ""},
	{"smap", 7, 0, EBX, 20, 9*32 + 20, ""},
	{"clflushopt", 7, 0, EBX, 23, 9*32 + 23, ""},
	{"clwb", 7, 0, EBX, 24, 9*32 + 24, ""},
	{"umip", 7, 0, ECX, 2, 16*32 + 2, ""},
	{"pku", 7, 0, ECX, 3, 16*32 + 3, "nopku"},
	{"rdpid", 7, 0, ECX, 22, 16*32 + 22, ""},
	{"fsrm", 7, 0, EDX, 4, 18*32 + 4, ""},
	{"rdtscp", 0x80000001, 0, EDX, 27, 1*32 + 27, ""},
	{"3dnowprefetch", 0x80000001, 0, ECX, 8, 6*32 + 8, ""},
}

// Lookup finds a feature by name.
func Lookup(name string) (Feature, bool) {
	for _, f := range Features {
		if f.Name == name {
			return f, true
		}
	}
	return Feature{}, false
}

// KVM paravirtual feature bits in leaf 0x40000001 EAX.
const (
	KVMFeatureAsyncPF       = 4
	KVMFeatureStealTime     = 5
	KVMFeaturePVUnhalt      = 7
	KVMFeaturePVTLBFlush    = 9
	KVMFeatureAsyncPFVMExit = 10
	KVMFeaturePVSendIPI     = 11
	KVMFeaturePollControl   = 12
	KVMFeaturePVSchedYield  = 13
	KVMFeatureAsyncPFInt    = 14
)

// Policy says what to change in the supported CPUID.
type Policy struct {
	Disable      []string // feature names to clear
	ClearKVMBits []uint   // bits to clear in leaf 0x40000001 EAX
}

// PVMPolicy is the compatibility policy for PVM hosts (PLATFORM.md): instructions the ring-0 interpreter
// lacks or runs slowly, and the KVM PV features whose hypercalls hang there.
func PVMPolicy() Policy {
	return Policy{
		Disable: []string{"cx16", "erms", "fsrm", "popcnt", "rdrand", "rdseed", "rdtscp", "rdpid", "smap", "umip",
			"3dnowprefetch", "clflushopt", "clwb", "bmi2", "bmi1", "xsave", "pku", "fsgsbase", "pcid", "invpcid"},
		ClearKVMBits: []uint{KVMFeatureAsyncPF, KVMFeatureStealTime, KVMFeaturePVUnhalt, KVMFeaturePVTLBFlush,
			KVMFeatureAsyncPFVMExit, KVMFeaturePVSendIPI, KVMFeaturePollControl, KVMFeaturePVSchedYield,
			KVMFeatureAsyncPFInt},
	}
}

// Merge returns the union of two policies.
func (p Policy) Merge(q Policy) Policy {
	out := Policy{Disable: slices.Clone(p.Disable), ClearKVMBits: slices.Clone(p.ClearKVMBits)}
	for _, d := range q.Disable {
		if !slices.Contains(out.Disable, d) {
			out.Disable = append(out.Disable, d)
		}
	}
	for _, b := range q.ClearKVMBits {
		if !slices.Contains(out.ClearKVMBits, b) {
			out.ClearKVMBits = append(out.ClearKVMBits, b)
		}
	}
	return out
}

// Validate reports unknown feature names.
func (p Policy) Validate() error {
	var bad []string
	for _, d := range p.Disable {
		if _, ok := Lookup(d); !ok {
			bad = append(bad, d)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("cpuid: unknown CPU feature(s) %s (known: %s)", strings.Join(bad, ", "), knownNames())
	}
	return nil
}

func knownNames() string {
	var n []string
	for _, f := range Features {
		n = append(n, f.Name)
	}
	return strings.Join(n, " ")
}

// KernelArgs returns the Linux command-line words that disable the policy's features inside the guest:
// dedicated flags first, then one clearcpuid= list.
func (p Policy) KernelArgs() []string {
	var flags []string
	var bits []string
	for _, d := range p.Disable {
		f, ok := Lookup(d)
		if !ok {
			continue
		}
		if f.LinuxFlag != "" {
			flags = append(flags, f.LinuxFlag)
		} else if f.LinuxBit >= 0 {
			bits = append(bits, strconv.Itoa(f.LinuxBit))
		}
	}
	if len(bits) > 0 {
		flags = append(flags, "clearcpuid="+strings.Join(bits, ","))
	}
	if slices.Contains(p.Disable, "xsave") {
		flags = append(flags, UserlandNoAVX()...)
	}
	return flags
}

// Without xsave the guest kernel switches only the legacy FPU/SSE state between processes, while guest user
// space may still see AVX (on PVM, ring-3 CPUID is the host's and cannot be masked): two processes using
// the upper halves of the vector registers corrupt each other's. These words keep the common runtimes of a
// distribution off AVX, FMA and AVX-512: glibc's string and math functions (GLIBC_TUNABLES), OpenSSL's
// crypto (OPENSSL_ia32cap: CPUID.1:ECX AVX bit 60 and OSXSAVE bit 59; CPUID.7:EBX AVX2 bit 5, AVX512F bit
// 16) and Go programs (GODEBUG). The kernel hands KEY=VALUE words to init's environment (systemd, or any
// init); systemd.setenv= puts them into the environment of every service systemd starts. Processes that
// clear their environment (an SSH login session) fall back to CPUID; docs/boot.md says what an image
// needs for those.
const (
	glibcNoAVX   = "glibc.cpu.hwcaps=-AVX,-AVX2,-FMA,-FMA4,-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD,-AVX_Fast_Unaligned_Load"
	opensslNoAVX = "~0x1800000000000000:~0x10020"
	goNoAVX      = "cpu.avx=off,cpu.avx2=off"
)

// UserlandNoAVX returns the kernel command-line words that keep guest user space off the AVX state.
func UserlandNoAVX() []string {
	env := []string{"GLIBC_TUNABLES=" + glibcNoAVX, "OPENSSL_ia32cap=" + opensslNoAVX, "GODEBUG=" + goNoAVX}
	words := slices.Clone(env)
	for _, e := range env {
		words = append(words, "systemd.setenv="+e)
	}
	return words
}

func reg(e *kvm.CPUIDEntry, r Reg) *uint32 {
	switch r {
	case EAX:
		return &e.EAX
	case EBX:
		return &e.EBX
	case ECX:
		return &e.ECX
	}
	return &e.EDX
}

// ForVCPU returns the CPUID for vCPU index of topology t with p applied: the topology leaves (see
// topology.go) describe t and carry the vCPU's APIC ID, the hypervisor bit is set, and the policy's
// features and KVM paravirtual bits are cleared.
func ForVCPU(supported []kvm.CPUIDEntry, t Topology, index int, p Policy) ([]kvm.CPUIDEntry, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if index < 0 || index >= t.CPUs() {
		return nil, fmt.Errorf("cpuid: vCPU %d of %d out of range", index, t.CPUs())
	}
	out := setTopology(slices.Clone(supported), t, index)
	for i := range out {
		e := &out[i]
		switch e.Function {
		case 1:
			e.ECX |= 1 << 31 // running on a hypervisor
		case 0x40000001:
			for _, b := range p.ClearKVMBits {
				e.EAX &^= 1 << b
			}
		}
	}
	for _, name := range p.Disable {
		f, _ := Lookup(name)
		for i := range out {
			if out[i].Function == f.Leaf && (out[i].Index == f.Subleaf || out[i].Flags&kvm.CPUIDFlagSignificantIndex == 0) {
				*reg(&out[i], f.Reg) &^= 1 << f.Bit
			}
		}
	}
	// Disabling xsave also hides the osxsave-dependent AVX family.
	if slices.Contains(p.Disable, "xsave") {
		for i := range out {
			if out[i].Function == 1 {
				out[i].ECX &^= 1<<26 | 1<<27 | 1<<28 | 1<<29 | 1<<12
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Function != out[j].Function {
			return out[i].Function < out[j].Function
		}
		return out[i].Index < out[j].Index
	})
	return out, nil
}
