package v1

import (
	"strings"
	"testing"

	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
)

func TestNameLabelValue(t *testing.T) {
	// Expected values computed independently: python3, name[:54] + "-" + sha1(name).hexdigest()[:8].
	for _, tc := range []struct{ name, in, want string }{
		{"short name unchanged", "testvm", "testvm"},
		{"63 characters unchanged", strings.Repeat("b", 63), strings.Repeat("b", 63)},
		{"70 characters hashed", strings.Repeat("a", 70), strings.Repeat("a", 54) + "-ed6c69d9"},
		{"dot at the cut", "vm-" + strings.Repeat("x", 60) + "-tail.end", "vm-" + strings.Repeat("x", 51) + "-046ab222"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := NameLabelValue(tc.in)
			if got != tc.want {
				t.Fatalf("NameLabelValue(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if errs := k8svalidation.IsValidLabelValue(got); len(errs) > 0 {
				t.Fatalf("%q is not a label value: %v", got, errs)
			}
		})
	}
	// A name cut right after a dash or dot still gives a valid value: the hash ends it.
	for _, sep := range []string{"-", "."} {
		name := strings.Repeat("c", 53) + sep + strings.Repeat("d", 20)
		if errs := k8svalidation.IsValidLabelValue(NameLabelValue(name)); len(errs) > 0 {
			t.Errorf("%q: %v", NameLabelValue(name), errs)
		}
	}
	if NameLabelValue(strings.Repeat("a", 70)) == NameLabelValue(strings.Repeat("a", 71)) {
		t.Error("two long names with one prefix share a label value")
	}
}

func TestShortenedName(t *testing.T) {
	const suffix = "-launcher-token"
	if got := ShortenedName("vm", suffix, 253); got != "vm-launcher-token" {
		t.Errorf("short: %q", got)
	}
	long := strings.Repeat("s", 240)
	got := ShortenedName(long, suffix, 253)
	want := strings.Repeat("s", 229) + "-920d9117" + suffix // python3: sha1("s"*240)[:8]
	if got != want || len(got) != 253 {
		t.Errorf("long: %q (%d), want %q", got, len(got), want)
	}
	if errs := k8svalidation.IsDNS1123Subdomain(got); len(errs) > 0 {
		t.Errorf("%q: %v", got, errs)
	}
}
