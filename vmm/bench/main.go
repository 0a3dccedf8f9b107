// Command bench compares kvirt's VMM with QEMU (-enable-kvm -M microvm) on the same guest kernel and
// initramfs, side by side in one run: time from exec to "kvirt-guest: ready" (median of N), time from exec
// to the first KVM_RUN (kvirt) or the first console byte (both), and the VMM's memory overhead (process RSS
// minus the resident part of guest RAM) at the ready marker. It writes a Markdown report.
//
//	go run ./vmm/bench -launcher build/bin/virt-launcher -images build/images -out docs/benchmarks.md
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kvirt/kvirt/vmm"
	"github.com/kvirt/kvirt/vmm/cpuid"
	"github.com/kvirt/kvirt/vmm/kvm"
)

type sample struct {
	ready      time.Duration // exec -> "kvirt-guest: ready"
	firstByte  time.Duration // exec -> first console byte
	firstRun   time.Duration // exec -> first KVM_RUN (kvirt only)
	rssKiB     int64
	guestKiB   int64
	overheadKB int64
	// anonOverheadKB leaves out file-backed pages (the binary's text, shared libraries).
	anonOverheadKB int64
}

func main() {
	launcher := flag.String("launcher", "build/bin/virt-launcher", "virt-launcher binary")
	images := flag.String("images", "build/images", "directory with vmlinux and initramfs.cpio")
	out := flag.String("out", "docs/benchmarks.md", "report file")
	runs := flag.Int("runs", 5, "boots per VMM")
	memMiB := flag.Int("memory", 128, "guest memory in MiB")
	timeout := flag.Duration("timeout", 5*time.Minute, "per-boot timeout")
	flag.Parse()

	kernel, initrd := *images+"/vmlinux", *images+"/initramfs.cpio"
	for _, f := range []string{*launcher, kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			fatalf("%v: run `just build images` first", err)
		}
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		fatalf("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
	}
	cmdline := vmm.DefaultCmdline + " kvirt.test=wait"
	mem := strconv.Itoa(*memMiB)
	// kvirt appends the PVM words itself (automatic compatibility policy); QEMU is given the same words.
	kvirtArgs := []string{*launcher, "boot", "--print-start-timing", "--kernel", kernel, "--initrd", initrd,
		"--memory", mem + "Mi", "--cpus", "1", "--append", cmdline}
	if kvm.PVM() {
		cmdline += " " + strings.Join(cpuid.PVMPolicy().KernelArgs(), " ")
	}
	qemuArgs := []string{"qemu-system-x86_64", "-enable-kvm", "-M", "microvm,acpi=on,rtc=on", "-cpu", "host,-arch-capabilities",
		"-smp", "1", "-m", mem, "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline}

	var ks, qs []sample
	for i := 0; i < *runs; i++ { // interleaved so machine noise hits both alike
		fmt.Printf("bench: run %d/%d: kvirt ...\n", i+1, *runs)
		s, err := boot(kvirtArgs, uint64(*memMiB)<<20, *timeout)
		if err != nil {
			fatalf("kvirt boot: %v", err)
		}
		fmt.Printf("bench:   kvirt ready %v, first KVM_RUN %v, overhead %d KiB\n", s.ready.Round(time.Millisecond), s.firstRun, s.overheadKB)
		ks = append(ks, s)
		fmt.Printf("bench: run %d/%d: qemu ...\n", i+1, *runs)
		s, err = boot(qemuArgs, uint64(*memMiB)<<20, *timeout)
		if err != nil {
			fatalf("qemu boot: %v", err)
		}
		fmt.Printf("bench:   qemu ready %v, overhead %d KiB\n", s.ready.Round(time.Millisecond), s.overheadKB)
		qs = append(qs, s)
	}
	report := render(ks, qs, *memMiB, *runs)
	if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
		fatalf("write report: %v", err)
	}
	fmt.Print(report)
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

// boot runs one VMM until the ready marker, samples its memory, and kills it.
func boot(args []string, guestBytes uint64, timeout time.Duration) (sample, error) {
	var s sample
	cmd := exec.Command(args[0], args[1:]...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return s, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return s, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return s, err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	firstRun := make(chan time.Duration, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "kvirt-bench:" && f[1] == "first-kvm-run" {
				ns, _ := strconv.ParseInt(f[2], 10, 64)
				firstRun <- time.Unix(0, ns).Sub(start)
			}
		}
	}()
	ready := make(chan error, 1)
	go func() {
		r := bufio.NewReader(stdout)
		var line []byte
		gotFirst := false
		for {
			b, err := r.ReadByte()
			if err != nil {
				ready <- fmt.Errorf("console closed before ready: %w", err)
				return
			}
			if !gotFirst {
				s.firstByte, gotFirst = time.Since(start), true
			}
			if b == '\n' {
				if strings.Contains(string(line), "kvirt-guest: ready") {
					s.ready = time.Since(start)
					ready <- nil
					_, _ = io.Copy(io.Discard, r)
					return
				}
				line = line[:0]
			} else {
				line = append(line, b)
			}
		}
	}()
	select {
	case err := <-ready:
		if err != nil {
			return s, err
		}
	case <-time.After(timeout):
		return s, fmt.Errorf("no ready marker within %v", timeout)
	}
	select {
	case d := <-firstRun:
		s.firstRun = d
	default:
	}
	rss, guest, anon, guestAnon, err := memory(cmd.Process.Pid, guestBytes)
	if err != nil {
		return s, err
	}
	s.rssKiB, s.guestKiB, s.overheadKB, s.anonOverheadKB = rss, guest, rss-guest, anon-guestAnon
	return s, nil
}

// memory returns the process RSS and the RSS of its guest-RAM mapping in KiB, from /proc/PID/smaps. The
// guest RAM is the read-write mapping of at least guestBytes that is closest to that size (runtimes keep
// larger PROT_NONE reservations).
func memory(pid int, guestBytes uint64) (rss, guest, anon, guestAnon int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var size, best int64
	rw, cur := false, false
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 {
			continue
		}
		if len(fs) >= 2 && strings.Contains(fs[0], "-") && len(fs[1]) == 4 {
			rw = strings.HasPrefix(fs[1], "rw")
			continue
		}
		switch fs[0] {
		case "Size:":
			size, _ = strconv.ParseInt(fs[1], 10, 64)
		case "Rss:":
			r, _ := strconv.ParseInt(fs[1], 10, 64)
			rss += r
			cur = false
			if rw && uint64(size)<<10 >= guestBytes && (best == 0 || size < best) {
				best, guest, cur = size, r, true
			}
		case "Anonymous:":
			a, _ := strconv.ParseInt(fs[1], 10, 64)
			anon += a
			if cur {
				guestAnon = a
			}
		}
	}
	return rss, guest, anon, guestAnon, sc.Err()
}

func median(xs []sample, get func(sample) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = get(x)
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func render(ks, qs []sample, memMiB, runs int) string {
	sec := func(d time.Duration) float64 { return d.Seconds() }
	kr, qr := median(ks, func(s sample) float64 { return sec(s.ready) }), median(qs, func(s sample) float64 { return sec(s.ready) })
	kf, qf := median(ks, func(s sample) float64 { return sec(s.firstByte) }), median(qs, func(s sample) float64 { return sec(s.firstByte) })
	kk := median(ks, func(s sample) float64 { return sec(s.firstRun) })
	ko, qo := median(ks, func(s sample) float64 { return float64(s.overheadKB) }), median(qs, func(s sample) float64 { return float64(s.overheadKB) })
	ka, qa := median(ks, func(s sample) float64 { return float64(s.anonOverheadKB) }), median(qs, func(s sample) float64 { return float64(s.anonOverheadKB) })
	var b strings.Builder
	fmt.Fprintf(&b, "# VMM benchmarks: kvirt vs QEMU microvm\n\n")
	fmt.Fprintf(&b, "Written by `just bench` (vmm/bench) on %s. Same kernel (build/images/vmlinux) and initramfs,\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "%d MiB, 1 vCPU, the same command line (kvirt.test=wait), %d boots each, interleaved; medians.\n", memMiB, runs)
	fmt.Fprintf(&b, "QEMU: `-enable-kvm -M microvm,acpi=on,rtc=on -cpu host,-arch-capabilities`.\n")
	fmt.Fprintf(&b, "Absolute times on PVM hosts (guest ring 0 interpreted) say little about real KVM; the ratios are the result.\n\n")
	fmt.Fprintf(&b, "| metric | kvirt | QEMU | kvirt / QEMU | target |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| exec → `kvirt-guest: ready` | %.2f s | %.2f s | %.2f | ≤ 1 |\n", kr, qr, kr/qr)
	fmt.Fprintf(&b, "| exec → first console byte | %.3f s | %.3f s | %.2f | |\n", kf, qf, kf/qf)
	fmt.Fprintf(&b, "| exec → first KVM_RUN | %.1f ms | n/a | | ≤ 10 ms |\n", kk*1000)
	fmt.Fprintf(&b, "| VMM memory overhead (RSS − resident guest RAM) | %.1f MiB | %.1f MiB | %.2f | ≤ 10 MiB |\n", ko/1024, qo/1024, ko/qo)
	fmt.Fprintf(&b, "| … of it anonymous (without the binary's and libraries' file pages) | %.1f MiB | %.1f MiB | %.2f | |\n\n", ka/1024, qa/1024, ka/qa)
	fmt.Fprintf(&b, "exec → first KVM_RUN includes the Go runtime and package initialisation of the whole virt-launcher binary\n")
	fmt.Fprintf(&b, "(the launcher, Kubernetes API types), opening /dev/kvm, creating the VM and vCPUs, and loading the kernel and\n")
	fmt.Fprintf(&b, "initramfs into guest memory (done concurrently with the KVM setup).\n\n")
	fmt.Fprintf(&b, "Per run (ready s / overhead MiB): kvirt")
	for _, s := range ks {
		fmt.Fprintf(&b, " %.2f/%.1f", sec(s.ready), float64(s.overheadKB)/1024)
	}
	fmt.Fprintf(&b, "; QEMU")
	for _, s := range qs {
		fmt.Fprintf(&b, " %.2f/%.1f", sec(s.ready), float64(s.overheadKB)/1024)
	}
	fmt.Fprintf(&b, ".\n")
	return b.String()
}
