// Command bench compares kvirt's VMM with QEMU (-enable-kvm -M microvm) on the same guest kernel and
// initramfs, side by side in one run, and writes section "vmm" of docs/benchmarks.md (tests/benchdoc).
//
// It measures exec → "kvirt-guest: ready" and exec → first console byte (median of -runs boots each,
// interleaved); the VMM memory overhead at the ready marker (process RSS minus the resident part of guest
// RAM); and exec → first KVM_RUN of kvirt-vmm (the binary that boots a VM), median of -starts short starts
// that end right after the first KVM_RUN, with the start-up steps, and the same for `virt-launcher boot`
// (the same command linked into the launcher) for comparison.
//
//	go run ./vmm/bench -vmm build/bin/kvirt-vmm -launcher build/bin/virt-launcher -images build/images
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
	"sync"
	"time"

	"github.com/kvirt/kvirt/tests/benchdoc"
	"github.com/kvirt/kvirt/vmm"
	"github.com/kvirt/kvirt/vmm/cpuid"
	"github.com/kvirt/kvirt/vmm/kvm"
)

type sample struct {
	ready     time.Duration // exec -> "kvirt-guest: ready"
	firstByte time.Duration // exec -> first console byte
	rssKiB    int64
	guestKiB  int64
	// overheadKiB = rssKiB - guestKiB; anonOverheadKiB leaves out file-backed pages (the binary's text,
	// shared libraries) outside guest RAM.
	overheadKiB, anonOverheadKiB int64
}

// vmmOutput is what a kvirt VMM started with --print-start-timing reports on stderr.
type vmmOutput struct {
	mu       sync.Mutex
	steps    map[string]time.Duration // since exec
	order    []string
	guestRAM [][2]uint64 // host address, length
	firstRun chan struct{}
}

func newVMMOutput() *vmmOutput {
	return &vmmOutput{steps: map[string]time.Duration{}, firstRun: make(chan struct{})}
}

// scan reads "kvirt-bench: NAME VALUE [LEN]" lines until EOF.
func (o *vmmOutput) scan(r io.Reader, start time.Time) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[0] != "kvirt-bench:" {
			continue
		}
		o.mu.Lock()
		switch {
		case f[1] == "guest-ram" && len(f) == 4:
			a, err1 := strconv.ParseUint(f[2], 0, 64)
			n, err2 := strconv.ParseUint(f[3], 0, 64)
			if err1 == nil && err2 == nil {
				o.guestRAM = append(o.guestRAM, [2]uint64{a, n})
			}
		default:
			if ns, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				name := strings.TrimPrefix(f[1], "step-")
				if _, seen := o.steps[name]; !seen {
					o.order = append(o.order, name)
				}
				o.steps[name] = time.Unix(0, ns).Sub(start)
				if f[1] == "first-kvm-run" {
					close(o.firstRun)
				}
			}
		}
		o.mu.Unlock()
	}
}

func main() {
	vmmBin := flag.String("vmm", "build/bin/kvirt-vmm", "kvirt-vmm binary (boots the VMs)")
	launcher := flag.String("launcher", "build/bin/virt-launcher", "virt-launcher binary (its boot command is compared)")
	images := flag.String("images", "build/images", "directory with vmlinux and initramfs.cpio")
	doc := flag.String("doc", "docs/benchmarks.md", "benchmark document (section vmm is rewritten)")
	runs := flag.Int("runs", 5, "boots to the ready marker per VMM")
	starts := flag.Int("starts", 20, "short starts (to the first KVM_RUN) per binary")
	memMiB := flag.Int("memory", 128, "guest memory in MiB")
	timeout := flag.Duration("timeout", 5*time.Minute, "per-boot timeout")
	flag.Parse()

	kernel, initrd := *images+"/vmlinux", *images+"/initramfs.cpio"
	for _, f := range []string{*vmmBin, *launcher, kernel, initrd} {
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
	bootArgs := []string{"--print-start-timing", "--kernel", kernel, "--initrd", initrd, "--memory", mem + "Mi", "--cpus", "1", "--append", cmdline}
	kvirtArgs := append([]string{*vmmBin}, bootArgs...)
	launcherArgs := append([]string{*launcher, "boot"}, bootArgs...)
	if kvm.PVM() {
		cmdline += " " + strings.Join(cpuid.PVMPolicy().KernelArgs(), " ")
	}
	qemuArgs := []string{"qemu-system-x86_64", "-enable-kvm", "-M", "microvm,acpi=on,rtc=on", "-cpu", "host,-arch-capabilities",
		"-smp", "1", "-m", mem, "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd, "-append", cmdline}

	// Short starts first (they take milliseconds), interleaved so machine noise hits both binaries alike.
	var vs, ls []*vmmOutput
	for i := 0; i < *starts; i++ {
		for _, c := range []struct {
			args []string
			out  *[]*vmmOutput
		}{{kvirtArgs, &vs}, {launcherArgs, &ls}} {
			o, err := quickStart(c.args)
			if err != nil {
				fatalf("start %s: %v", c.args[0], err)
			}
			*c.out = append(*c.out, o)
		}
	}
	fmt.Printf("bench: exec → first KVM_RUN: kvirt-vmm %.1f ms, virt-launcher boot %.1f ms (medians of %d)\n",
		ms(medianStep(vs, "first-kvm-run")), ms(medianStep(ls, "first-kvm-run")), *starts)
	// The same, for kvirt-vmm and QEMU alike, seen from outside: a thread of the process in KVM_RUN.
	var ko, qo []float64
	for i := 0; i < *starts; i++ {
		for _, c := range []struct {
			args []string
			out  *[]float64
		}{{kvirtArgs, &ko}, {qemuArgs, &qo}} {
			d, err := observedStart(c.args)
			if err != nil {
				fatalf("start %s: %v", c.args[0], err)
			}
			*c.out = append(*c.out, float64(d))
		}
	}
	observed := [2]time.Duration{time.Duration(median(ko)), time.Duration(median(qo))}
	fmt.Printf("bench: exec → thread seen in KVM_RUN: kvirt-vmm %.1f ms, QEMU %.1f ms (medians of %d)\n",
		ms(observed[0]), ms(observed[1]), *starts)

	var ks, qs []sample
	for i := 0; i < *runs; i++ { // interleaved so machine noise hits both alike
		fmt.Printf("bench: run %d/%d: kvirt ...\n", i+1, *runs)
		s, err := boot(kvirtArgs, uint64(*memMiB)<<20, *timeout, true)
		if err != nil {
			fatalf("kvirt boot: %v", err)
		}
		fmt.Printf("bench:   kvirt ready %v, overhead %d KiB (anonymous %d KiB)\n", s.ready.Round(time.Millisecond), s.overheadKiB, s.anonOverheadKiB)
		ks = append(ks, s)
		fmt.Printf("bench: run %d/%d: qemu ...\n", i+1, *runs)
		s, err = boot(qemuArgs, uint64(*memMiB)<<20, *timeout, false)
		if err != nil {
			fatalf("qemu boot: %v", err)
		}
		fmt.Printf("bench:   qemu ready %v, overhead %d KiB (anonymous %d KiB)\n", s.ready.Round(time.Millisecond), s.overheadKiB, s.anonOverheadKiB)
		qs = append(qs, s)
	}
	report := render(ks, qs, vs, ls, observed, *memMiB, *runs, *starts)
	if err := benchdoc.WriteSection(*doc, "vmm", report); err != nil {
		fatalf("write report: %v", err)
	}
	fmt.Print(report)
	fmt.Printf("bench: wrote section vmm of %s\n", *doc)
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// observeFirstRun polls /proc/PID/task/*/syscall until a thread of pid is inside ioctl(_, KVM_RUN) and
// returns the time since start. It works for any VMM (QEMU has no start-up trace of its own); its resolution
// is one polling round (~0.1-0.2 ms), a vCPU thread spends nearly all its time in KVM_RUN, and the polling
// itself takes CPU from the VMM on a busy host, so the figure is for comparing VMMs measured alike.
func observeFirstRun(pid int, start time.Time, limit time.Duration) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	for time.Since(start) < limit {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return 0, err
		}
		for _, e := range ents {
			b, err := os.ReadFile(dir + "/" + e.Name() + "/syscall")
			if err != nil {
				continue // the thread ended
			}
			if f := strings.Fields(string(b)); len(f) >= 3 && f[0] == "16" && f[2] == "0xae80" {
				return time.Since(start), nil
			}
		}
		time.Sleep(100 * time.Microsecond) // leave the CPU to the VMM between rounds
	}
	return 0, fmt.Errorf("no thread in KVM_RUN within %v", limit)
}

// observedStart runs a VMM until a thread is seen in KVM_RUN and kills it.
func observedStart(args []string) (time.Duration, error) {
	cmd := exec.Command(args[0], args[1:]...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	return observeFirstRun(cmd.Process.Pid, start, 30*time.Second)
}

// quickStart runs a kvirt VMM until its first KVM_RUN and kills it.
func quickStart(args []string) (*vmmOutput, error) {
	cmd := exec.Command(args[0], args[1:]...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	o := newVMMOutput()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	done := make(chan struct{})
	go func() { o.scan(stderr, start); close(done) }()
	select {
	case <-o.firstRun:
		return o, nil
	case <-done:
		return nil, fmt.Errorf("exited before its first KVM_RUN")
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("no first KVM_RUN within 30 s")
	}
}

// boot runs one VMM until the ready marker, samples its memory, and kills it. kvirt VMMs report where guest
// RAM is mapped; for others guest RAM is the read-write mapping closest to the guest size.
func boot(args []string, guestBytes uint64, timeout time.Duration, kvirt bool) (sample, error) {
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
	o := newVMMOutput()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return s, err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	go o.scan(stderr, start)
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
	var ranges [][2]uint64
	if kvirt {
		o.mu.Lock()
		ranges = append(ranges, o.guestRAM...)
		o.mu.Unlock()
		if len(ranges) == 0 {
			return s, fmt.Errorf("%s did not report where guest RAM is (kvirt-bench: guest-ram)", args[0])
		}
	}
	u, err := readSmaps(cmd.Process.Pid, guestBytes, ranges)
	if err != nil {
		return s, err
	}
	s.rssKiB, s.guestKiB = u.rss, u.guestRSS
	s.overheadKiB, s.anonOverheadKiB = u.rss-u.guestRSS, u.anon-u.guestAnon
	return s, nil
}

type usage struct{ rss, anon, guestRSS, guestAnon int64 }

// readSmaps sums the process's RSS and anonymous memory from /proc/PID/smaps, and the part of both inside
// guest RAM. Guest RAM is the given host address ranges (every mapping inside them counts, including
// kernel/initrd file pages mapped there), or, without ranges, the read-write mapping of at least guestBytes
// closest to that size (runtimes keep larger PROT_NONE reservations).
func readSmaps(pid int, guestBytes uint64, ranges [][2]uint64) (usage, error) {
	var u usage
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return u, err
	}
	defer f.Close()
	inGuest := func(lo, hi uint64) bool {
		for _, r := range ranges {
			if lo >= r[0] && hi <= r[0]+r[1] {
				return true
			}
		}
		return false
	}
	sc := bufio.NewScanner(f)
	var size, best, bestRSS, bestAnon int64
	var rss int64
	rw, cur := false, false
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) == 0 {
			continue
		}
		if len(fs) >= 2 && strings.Contains(fs[0], "-") && len(fs[1]) == 4 {
			rw = strings.HasPrefix(fs[1], "rw")
			lohi := strings.SplitN(fs[0], "-", 2)
			lo, _ := strconv.ParseUint(lohi[0], 16, 64)
			hi, _ := strconv.ParseUint(lohi[1], 16, 64)
			cur = ranges != nil && inGuest(lo, hi)
			continue
		}
		switch fs[0] {
		case "Size:":
			size, _ = strconv.ParseInt(fs[1], 10, 64)
		case "Rss:":
			rss, _ = strconv.ParseInt(fs[1], 10, 64)
			u.rss += rss
			if cur {
				u.guestRSS += rss
			}
		case "Anonymous:":
			a, _ := strconv.ParseInt(fs[1], 10, 64)
			u.anon += a
			if cur {
				u.guestAnon += a
			}
			if ranges == nil && rw && uint64(size)<<10 >= guestBytes && (best == 0 || size < best) {
				best, bestRSS, bestAnon = size, rss, a
			}
		}
	}
	if ranges == nil {
		u.guestRSS, u.guestAnon = bestRSS, bestAnon
	}
	return u, sc.Err()
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = append([]float64(nil), v...)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func medianOf(xs []sample, get func(sample) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = get(x)
	}
	return median(v)
}

func medianStep(outs []*vmmOutput, step string) time.Duration {
	var v []float64
	for _, o := range outs {
		if d, ok := o.steps[step]; ok {
			v = append(v, float64(d))
		}
	}
	return time.Duration(median(v))
}

func render(ks, qs []sample, vs, ls []*vmmOutput, observed [2]time.Duration, memMiB, runs, starts int) string {
	sec := func(d time.Duration) float64 { return d.Seconds() }
	kr, qr := medianOf(ks, func(s sample) float64 { return sec(s.ready) }), medianOf(qs, func(s sample) float64 { return sec(s.ready) })
	kf, qf := medianOf(ks, func(s sample) float64 { return sec(s.firstByte) }), medianOf(qs, func(s sample) float64 { return sec(s.firstByte) })
	ko, qo := medianOf(ks, func(s sample) float64 { return float64(s.overheadKiB) }), medianOf(qs, func(s sample) float64 { return float64(s.overheadKiB) })
	ka, qa := medianOf(ks, func(s sample) float64 { return float64(s.anonOverheadKiB) }), medianOf(qs, func(s sample) float64 { return float64(s.anonOverheadKiB) })
	kv, kl := ms(medianStep(vs, "first-kvm-run")), ms(medianStep(ls, "first-kvm-run"))
	var b strings.Builder
	fmt.Fprintf(&b, "## VMM: kvirt vs QEMU microvm\n\n")
	fmt.Fprintf(&b, "Written by `just bench-vmm` (vmm/bench) on %s. Same kernel (build/images/vmlinux) and initramfs,\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "%d MiB, 1 vCPU, the same command line (kvirt.test=wait), %d boots each, interleaved; medians.\n", memMiB, runs)
	fmt.Fprintf(&b, "kvirt: `kvirt-vmm` (the boot command; `virt-launcher boot` runs the same code inside the launcher binary).\n")
	fmt.Fprintf(&b, "QEMU: `-enable-kvm -M microvm,acpi=on,rtc=on -cpu host,-arch-capabilities`.\n")
	fmt.Fprintf(&b, "Absolute times on PVM hosts (guest ring 0 interpreted) say little about real KVM; the ratios are the result.\n\n")
	fmt.Fprintf(&b, "| metric | kvirt | QEMU | kvirt / QEMU | target |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| exec → `kvirt-guest: ready` | %.2f s | %.2f s | %.2f | ≤ 1 |\n", kr, qr, kr/qr)
	fmt.Fprintf(&b, "| exec → first console byte | %.3f s | %.3f s | %.2f | |\n", kf, qf, kf/qf)
	fmt.Fprintf(&b, "| exec → first KVM_RUN (`kvirt-vmm`'s own timestamp, median of %d starts) | %.1f ms | | | ≤ 10 ms |\n", starts, kv)
	fmt.Fprintf(&b, "| … the same command as `virt-launcher boot` (full launcher binary) | %.1f ms | | | |\n", kl)
	fmt.Fprintf(&b, "| exec → a thread seen in KVM_RUN (/proc polling, same method for both; median of %d) | %.1f ms | %.1f ms | %.2f | |\n",
		starts, ms(observed[0]), ms(observed[1]), float64(observed[0])/float64(observed[1]))
	fmt.Fprintf(&b, "| VMM memory overhead (RSS − resident guest RAM) | %.1f MiB | %.1f MiB | %.2f | ≤ 10 MiB |\n", ko/1024, qo/1024, ko/qo)
	fmt.Fprintf(&b, "| … of it anonymous (without the binary's and libraries' file pages) | %.1f MiB | %.1f MiB | %.2f | |\n\n", ka/1024, qa/1024, ka/qa)
	fmt.Fprintf(&b, "Start-up steps of `kvirt-vmm` and `virt-launcher boot` (median ms since exec; from KVM_CREATE_VM on, two\n")
	fmt.Fprintf(&b, "goroutines overlap: the kernel and initramfs are mapped into guest RAM while KVM builds the VM):\n\n")
	fmt.Fprintf(&b, "| step | kvirt-vmm | virt-launcher boot |\n|---|---|---|\n")
	labels := map[string]string{
		"main": "runtime and package initialisation done", "run": "flags parsed", "kvm-open": "/dev/kvm opened",
		"supported-cpuid": "KVM_GET_SUPPORTED_CPUID", "guest-memory": "guest RAM mapped", "devices": "legacy devices",
		"create-vm": "KVM_CREATE_VM", "memslots": "memory slots", "irqchip-pit": "irqchip + PIT",
		"load-kernel": "kernel mapped", "load-initrd": "initramfs mapped", "boot-tables": "ACPI/SMBIOS/zero page written",
		"vcpus": "vCPUs created and set up", "first-kvm-run": "first KVM_RUN",
	}
	if len(vs) > 0 {
		order := append([]string(nil), vs[0].order...)
		sort.SliceStable(order, func(i, j int) bool { return medianStep(vs, order[i]) < medianStep(vs, order[j]) })
		for _, st := range order {
			l := labels[st]
			if l == "" {
				l = st
			}
			fmt.Fprintf(&b, "| %s | %.2f | %.2f |\n", l, ms(medianStep(vs, st)), ms(medianStep(ls, st)))
		}
	}
	fmt.Fprintf(&b, "\nMemory overhead is measured at the ready marker from /proc/PID/smaps: guest RAM is every mapping inside the\n")
	fmt.Fprintf(&b, "RAM ranges the VMM reports (for kvirt that includes the kernel and initramfs file pages mapped copy-on-write\n")
	fmt.Fprintf(&b, "into guest RAM: they are guest memory), for QEMU its RAM block.\n\n")
	fmt.Fprintf(&b, "Per run (ready s / overhead MiB): kvirt")
	for _, s := range ks {
		fmt.Fprintf(&b, " %.2f/%.1f", sec(s.ready), float64(s.overheadKiB)/1024)
	}
	fmt.Fprintf(&b, "; QEMU")
	for _, s := range qs {
		fmt.Fprintf(&b, " %.2f/%.1f", sec(s.ready), float64(s.overheadKiB)/1024)
	}
	fmt.Fprintf(&b, ".\n")
	return b.String()
}
