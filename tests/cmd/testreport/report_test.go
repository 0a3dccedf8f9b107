package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// run feeds a real `go test -json` run of testdata/fixture through a report.
func run(t *testing.T, fail bool) (*report, string) {
	t.Helper()
	cmd := exec.Command("go", "test", "-json", "-count=1", ".")
	cmd.Dir = filepath.Join("testdata", "fixture")
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	if fail {
		cmd.Env = append(cmd.Env, "FIXTURE_FAIL=1")
	}
	stream, _ := cmd.Output() // a failing run exits 1; the stream is what matters
	if len(stream) == 0 {
		t.Fatalf("go test -json printed nothing")
	}
	var out bytes.Buffer
	r := newReport("unit", &out, false)
	events := make(chan event)
	go func() {
		if err := decode(bytes.NewReader(stream), events); err != nil {
			t.Error(err)
		}
	}()
	for ev := range events {
		r.handle(ev)
	}
	r.finish()
	return r, out.String()
}

func TestReportPassingRun(t *testing.T) {
	r, out := run(t, false)
	if r.failed {
		t.Fatalf("a passing run reported failed:\n%s", out)
	}
	if !strings.Contains(out, "ok  \tfixture") || !strings.Contains(out, "[unit] passed") {
		t.Errorf("no package result or verdict:\n%s", out)
	}
	if strings.Contains(out, "passing") {
		t.Errorf("a passing test's log was printed without -v:\n%s", out)
	}
	want := map[string]string{"TestNeedsKVM": "needs KVM: no /dev/kvm on this host", "TestOtherSkip": "benchmark: set X=1"}
	if len(r.skipped) != len(want) {
		t.Fatalf("skipped = %+v, want %v", r.skipped, want)
	}
	for _, s := range r.skipped {
		if want[s.Test] != s.Reason || s.Package != "fixture" || s.Stage != "unit" {
			t.Errorf("skip %+v, want reason %q", s, want[s.Test])
		}
	}
	line := summarize(r.skipped)
	for _, w := range []string{"NOT RUN for want of KVM (no /dev/kvm on this host): 1 tests", "unit fixture (1)", "1 in unit"} {
		if !strings.Contains(line, w) {
			t.Errorf("summary %q lacks %q", line, w)
		}
	}
}

func TestReportFailingRun(t *testing.T) {
	r, out := run(t, true)
	if !r.failed {
		t.Fatalf("a failing run reported passed:\n%s", out)
	}
	for _, w := range []string{"the failure message", "FAIL\tfixture", "[unit] FAILED: fixture TestMaybeFail"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestReportEmptyStreamFails(t *testing.T) {
	var out bytes.Buffer
	r := newReport("e2e", &out, false)
	r.finish()
	if !r.failed || !strings.Contains(out.String(), "no test ran") {
		t.Errorf("an empty stream passed: %s", out.String())
	}
}

func TestSkipsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ci", "skips.jsonl")
	a := []skip{{Stage: "unit", Package: "github.com/kvirt/kvirt/vmm", Test: "TestBoot", Reason: "needs KVM: no /dev/kvm"}}
	b := []skip{{Stage: "e2e", Package: "github.com/kvirt/kvirt/tests/e2e", Test: "TestX", Reason: "needs KVM: no node"}}
	if err := appendSkips(path, a); err != nil {
		t.Fatal(err)
	}
	if err := appendSkips(path, b); err != nil {
		t.Fatal(err)
	}
	got, err := readSkips(path)
	if err != nil || len(got) != 2 || got[0] != a[0] || got[1] != b[0] {
		t.Fatalf("readSkips = %+v, %v", got, err)
	}
	if line := summarize(got); !strings.Contains(line, "2 tests that boot guests: e2e tests/e2e (1), unit vmm (1)") {
		t.Errorf("summary %q", line)
	}
	if line := summarize(nil); line != "every test that boots a guest ran" {
		t.Errorf("summary of no skips %q", line)
	}
}
