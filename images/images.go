// Package images names kvirt's guest artifacts (built by `just images` into build/images/) and holds the
// kernel command line the launcher and the VMM give the guest kernel. images/README.md explains each
// artifact and the reference QEMU command the benchmarks compare against.
package images

import "strings"

// File names of the artifacts in the images directory (testenv.ImagesDir, $KVIRT_IMAGES_DIR).
const (
	// Vmlinux is the guest kernel as an ELF (with a PVH note); the VMM boots it directly.
	Vmlinux = "vmlinux"
	// BzImage is the same kernel in the bzImage format (LZ4 payload), for loaders that want it.
	BzImage = "bzImage"
	// Initramfs is an uncompressed newc cpio: kvirt-init as /init plus a u-root busybox.
	Initramfs = "initramfs.cpio"
	// TestGuest is the freestanding test guest (ELF64, 64-bit Linux boot protocol entry at 1 MiB).
	TestGuest = "testguest"
)

// BaseCmdline is the guest kernel command line for every host. Word by word:
//
//	console=ttyS0    kernel messages and /dev/console on the first 16550 UART (0x3f8, IRQ 4)
//	reboot=k         reboot through the i8042 keyboard controller (0xFE to port 0x64), which the VMM
//	                 turns into a reboot exit; the default triple-fault path (reboot=t) executes int3,
//	                 which PVM's interpreter lacks
//	panic=-1         reboot at once on a kernel panic, so a crash is seen as a reboot, not a hang
//	tsc=reliable     trust the TSC without the watchdog calibration against other clocks (slow to
//	                 interpret, and unstable under a paused VM)
//	no_timer_check   skip the IO-APIC timer IRQ sanity check (a busy-wait that costs seconds interpreted)
//	lpj=1000000      a fixed loops_per_jiffy instead of calibrating the delay loop at boot
//	mitigations=off  no speculative-execution mitigations: the guest runs one workload and their
//	                 entry/exit code is pure cost when interpreted
//	quiet            only warnings and errors on the console: every printed byte is a trapped UART write
//	rodata=off       no read-only remapping of kernel data at the end of boot (many page-table updates)
const BaseCmdline = "console=ttyS0 reboot=k panic=-1 tsc=reliable no_timer_check lpj=1000000 mitigations=off quiet rodata=off"

// PVMCmdline hides CPU features the PVM instruction interpreter lacks or runs slowly (CPUID masking
// through KVM_SET_CPUID2 does not reach the standard leaves on PVM, so the guest kernel is told directly).
// Added when the host's KVM is PVM (the automatic compatibility policy). Word by word:
//
//	noxsave          no XSAVE/XRSTOR family (missing in the interpreter): the kernel saves FXSAVE state only
//	nopku            no protection keys (needs XSAVE state)
//	nofsgsbase       no RDFSBASE/WRFSBASE family in the kernel
//	nopcid noinvpcid no PCID/INVPCID in TLB management
//	clearcpuid=      further features by X86_FEATURE number (6.1 cpufeatures.h, word*32+bit):
//	                 141 CX16 (lock cmpxchg16b is missing), 297 ERMS and 580 FSRM (interpreted
//	                 `rep movsb` is slow), 151 POPCNT (missing), 158 RDRAND, 306 RDSEED, 59 RDTSCP,
//	                 534 RDPID, 308 SMAP (stac/clac are missing), 514 UMIP, 200 3DNOWPREFETCH,
//	                 311 CLFLUSHOPT, 312 CLWB, 296 BMI2 (shlx is missing), 291 BMI1
const PVMCmdline = "noxsave nopku nofsgsbase nopcid noinvpcid clearcpuid=141,297,580,151,158,306,59,534,308,514,200,311,312,296,291"

// GoCmdline is for guests whose userspace is Go (kvirt-init, u-root): the kernel passes unknown
// KEY=VALUE words to init's environment, and on PVM the guest kernel saves only XMM state, so AVX
// registers may be corrupted across context switches: keep the Go runtime off AVX.
const GoCmdline = "GODEBUG=cpu.avx=off,cpu.avx2=off"

// Cmdline joins BaseCmdline, PVMCmdline (when pvm), GoCmdline and extra words, e.g.
// Cmdline(true, "kvirt.test=nproc,poweroff").
func Cmdline(pvm bool, extra ...string) string {
	words := []string{BaseCmdline}
	if pvm {
		words = append(words, PVMCmdline)
	}
	words = append(words, GoCmdline)
	for _, w := range extra {
		if w = strings.TrimSpace(w); w != "" {
			words = append(words, w)
		}
	}
	return strings.Join(words, " ")
}
