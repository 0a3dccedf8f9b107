package cpuid

import (
	"slices"
	"strings"
	"testing"

	"github.com/kvirt/kvirt/vmm/kvm"
)

func find(es []kvm.CPUIDEntry, fn, idx uint32) kvm.CPUIDEntry {
	for _, e := range es {
		if e.Function == fn && e.Index == idx {
			return e
		}
	}
	return kvm.CPUIDEntry{}
}

func supported() []kvm.CPUIDEntry {
	return []kvm.CPUIDEntry{
		{Function: 1, EBX: 0x00000800, ECX: 1<<13 | 1<<23 | 1<<26 | 1<<28, EDX: 1},
		{Function: 7, Flags: kvm.CPUIDFlagSignificantIndex, EBX: 1<<9 | 1<<20 | 1},
		{Function: 0xb, Index: 0, Flags: kvm.CPUIDFlagSignificantIndex},
		{Function: 0xb, Index: 1, Flags: kvm.CPUIDFlagSignificantIndex},
		{Function: 0x40000001, EAX: 0xffff},
	}
}

func TestPolicy(t *testing.T) {
	p := PVMPolicy()
	out, err := ForVCPU(supported(), Topology{1, 1, 1}, 0, p)
	if err != nil {
		t.Fatal(err)
	}
	l1 := find(out, 1, 0)
	if l1.ECX&(1<<13|1<<23|1<<26|1<<28) != 0 {
		t.Fatalf("cx16/popcnt/xsave/avx not cleared: %#x", l1.ECX)
	}
	if l7 := find(out, 7, 0); l7.EBX != 0 {
		t.Fatalf("erms/smap/fsgsbase not cleared: %#x", l7.EBX)
	}
	kv := find(out, 0x40000001, 0).EAX
	for _, b := range p.ClearKVMBits {
		if kv&(1<<b) != 0 {
			t.Fatalf("KVM bit %d not cleared", b)
		}
	}
	if kv&1 == 0 {
		t.Fatal("kvmclock must stay")
	}
	args := strings.Join(p.KernelArgs(), " ")
	for _, w := range []string{"noxsave", "nopku", "nofsgsbase", "nopcid", "noinvpcid", "clearcpuid="} {
		if !strings.Contains(args, w) {
			t.Errorf("kernel args %q lack %s", args, w)
		}
	}
	// Guest user space kept off AVX: init's environment and systemd's services.
	for _, w := range []string{"GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX,-AVX2,", "systemd.setenv=GLIBC_TUNABLES=", "OPENSSL_ia32cap=~", "systemd.setenv=GODEBUG=cpu.avx=off"} {
		if !strings.Contains(args, w) {
			t.Errorf("kernel args %q lack %s", args, w)
		}
	}
	if strings.Contains(strings.Join(Policy{Disable: []string{"erms"}}.KernelArgs(), " "), "GLIBC_TUNABLES") {
		t.Errorf("user space kept off AVX although xsave stays on")
	}
	cc := args[strings.Index(args, "clearcpuid=")+len("clearcpuid="):]
	cc, _, _ = strings.Cut(cc, " ")
	for _, n := range strings.Split("141,297,580,151,158,306,59,534,308,514,200,311,312,296,291", ",") {
		if !slices.Contains(strings.Split(cc, ","), n) {
			t.Errorf("clearcpuid lacks %s (PLATFORM.md list): %s", n, cc)
		}
	}
	if err := (Policy{Disable: []string{"nosuch"}}).Validate(); err == nil {
		t.Fatal("unknown feature accepted")
	}
	if m := (Policy{Disable: []string{"avx"}}).Merge(p); !slices.Contains(m.Disable, "avx") || len(m.Disable) != len(p.Disable)+1 {
		t.Fatal("merge wrong")
	}
}
