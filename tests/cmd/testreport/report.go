package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// event is one line of `go test -json` (cmd/test2json), including the build events of Go 1.24+.
type event struct {
	Time        time.Time
	Action      string
	Package     string
	Test        string
	Elapsed     float64
	Output      string
	ImportPath  string // build-output, build-fail
	FailedBuild string
}

// skip is one skipped test and why.
type skip struct {
	Stage   string `json:"stage"`
	Package string `json:"package"`
	Test    string `json:"test"`
	Reason  string `json:"reason"`
}

type report struct {
	stage   string
	w       io.Writer
	verbose bool
	start   time.Time

	out     map[string][]string // package + "\x00" + test → output lines so far
	running map[string]bool     // packages started and not finished
	done    int
	tests   int // test results seen (pass, fail, skip)
	failed  bool
	failedT []string
	skipped []skip
}

func newReport(stage string, w io.Writer, verbose bool) *report {
	return &report{stage: stage, w: w, verbose: verbose, start: time.Now(), out: map[string][]string{}, running: map[string]bool{}}
}

func key(pkg, test string) string { return pkg + "\x00" + test }

func (r *report) handle(ev event) {
	switch ev.Action {
	case "build-output":
		fmt.Fprint(r.w, ev.Output)
		return
	case "build-fail":
		r.failed = true
		return
	case "start":
		r.running[ev.Package] = true
		return
	case "output":
		if r.verbose || ev.Package == "" {
			fmt.Fprint(r.w, ev.Output)
		}
		k := key(ev.Package, ev.Test)
		r.out[k] = append(r.out[k], ev.Output)
		return
	case "pass", "fail", "skip":
	default: // run, pause, cont, bench
		return
	}
	k := key(ev.Package, ev.Test)
	lines := r.out[k]
	delete(r.out, k)
	if ev.Test != "" {
		r.tests++
		switch ev.Action {
		case "fail":
			r.failed = true
			r.failedT = append(r.failedT, ev.Package+" "+ev.Test)
			if !r.verbose {
				fmt.Fprint(r.w, strings.Join(lines, ""))
			}
		case "skip":
			r.skipped = append(r.skipped, skip{Stage: r.stage, Package: ev.Package, Test: ev.Test, Reason: skipReason(lines)})
		}
		return
	}
	// The package ended.
	delete(r.running, ev.Package)
	r.done++
	if ev.Action == "fail" {
		r.failed = true
		if !r.verbose {
			// Output outside any test: a panic, a timeout, TestMain, or a build failure.
			fmt.Fprint(r.w, strings.Join(lines, ""))
		}
		fmt.Fprintf(r.w, "FAIL\t%s\t%.1fs\n", ev.Package, ev.Elapsed)
		return
	}
	if r.verbose {
		return // go test -v already printed ok/FAIL
	}
	for _, l := range lines {
		if strings.Contains(l, "[no test files]") {
			return // go test prints "?   pkg [no test files]"; not worth a line
		}
	}
	fmt.Fprintf(r.w, "ok  \t%s\t%.1fs\n", ev.Package, ev.Elapsed)
}

// skipReason is the message the test gave t.Skip: its output lines without the framing ones and
// without the file:line prefix of the first.
func skipReason(lines []string) string {
	var msg []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		if i := strings.Index(t, ".go:"); i > 0 && !strings.Contains(t[:i], " ") {
			if j := strings.Index(t[i+4:], ": "); j >= 0 {
				t = t[i+4+j+2:]
			}
		}
		msg = append(msg, t)
	}
	if len(msg) == 0 {
		return "(no reason given)"
	}
	return msg[len(msg)-1]
}

func (r *report) heartbeat(now time.Time) {
	names := slices.Sorted(maps.Keys(r.running))
	for i, n := range names {
		names[i] = strings.TrimPrefix(n, "github.com/kvirt/kvirt/")
	}
	running := strings.Join(names, ", ")
	if len(names) > 4 {
		running = strings.Join(names[:4], ", ") + fmt.Sprintf(" and %d more", len(names)-4)
	}
	if running == "" {
		running = "building"
	}
	fmt.Fprintf(r.w, "[%s] %s: %d packages done, %d test results; running: %s\n",
		r.stage, now.Sub(r.start).Round(time.Second), r.done, r.tests, running)
}

func (r *report) finish() {
	if r.tests == 0 && r.done == 0 {
		fmt.Fprintf(r.w, "[%s] no test ran: the go test stream held no package or test result\n", r.stage)
		r.failed = true
	}
	if len(r.skipped) > 0 {
		fmt.Fprintf(r.w, "[%s] skipped %d tests:\n", r.stage, len(r.skipped))
		byReason := map[string][]string{}
		for _, s := range r.skipped {
			byReason[s.Reason] = append(byReason[s.Reason], short(s.Package)+"."+s.Test)
		}
		for _, reason := range slices.Sorted(maps.Keys(byReason)) {
			fmt.Fprintf(r.w, "[%s]   %s\n", r.stage, reason)
			fmt.Fprintf(r.w, "[%s]     %s\n", r.stage, strings.Join(byReason[reason], " "))
		}
	}
	verdict := "passed"
	if r.failed {
		verdict = "FAILED"
		if len(r.failedT) > 0 {
			verdict += ": " + strings.Join(r.failedT, ", ")
		}
	}
	fmt.Fprintf(r.w, "[%s] %s in %s (%d test results, %d skipped)\n", r.stage, verdict, time.Since(r.start).Round(time.Second), r.tests, len(r.skipped))
}

func short(pkg string) string { return strings.TrimPrefix(pkg, "github.com/kvirt/kvirt/") }

// summarize turns the skips of a whole run into the clause of CI's closing line: the tests that did not
// run for want of KVM (counted by stage and package, with the probe's reason), then how many others were
// skipped for other reasons (each stage's report lists those above it).
func summarize(recs []skip) string {
	const kvm = "needs KVM:"
	var kvmReason string
	perPkg := map[string]int{}
	nKVM := 0
	other := map[string]int{}
	for _, s := range recs {
		if strings.HasPrefix(s.Reason, kvm) {
			nKVM++
			perPkg[s.Stage+" "+short(s.Package)]++
			kvmReason = cmp.Or(kvmReason, strings.TrimSpace(strings.TrimPrefix(s.Reason, kvm)))
			continue
		}
		other[s.Stage]++
	}
	var line string
	if nKVM > 0 {
		var parts []string
		for _, p := range slices.Sorted(maps.Keys(perPkg)) {
			parts = append(parts, fmt.Sprintf("%s (%d)", p, perPkg[p]))
		}
		line = fmt.Sprintf("NOT RUN for want of KVM (%s): %d tests that boot guests: %s", kvmReason, nKVM, strings.Join(parts, ", "))
	} else {
		line = "every test that boots a guest ran"
	}
	if len(other) > 0 {
		var parts []string
		for _, st := range slices.Sorted(maps.Keys(other)) {
			parts = append(parts, fmt.Sprintf("%d in %s", other[st], st))
		}
		line += "; skipped for other reasons (listed in each stage's report): " + strings.Join(parts, ", ")
	}
	return line
}
