package bootcmd

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

// TestParseMemoryMatchesKubernetes checks ParseMemory against resource.ParseQuantity (+ Value, positive only).
func TestParseMemoryMatchesKubernetes(t *testing.T) {
	for _, s := range []string{
		"128Mi", "1Gi", "256Mi", "1.5Gi", "0.5Ki", "100", "1k", "1M", "1.5G", "2T", "1Ti", "1e9", "1E6", "1e-3",
		"12e3", "+1Mi", ".5Mi", "1.Mi", "0", "-1Mi", "", "lots", "1Mb", "1 Mi", "Mi", "1e", "1e+3", "1.2.3", "0x10",
		"1m", "1500m", "1n", "1u", "3.333333333333Ki", "1Ei", "7E", "1e30", "1e18", "4Ei", "--1", "1MiB", "1.5e3",
	} {
		want := int64(-1)
		if q, err := resource.ParseQuantity(s); err == nil && q.Sign() > 0 && q.Value() > 0 && q.Value() <= 1<<62 {
			want = q.Value() // beyond 2^62 bytes (or overflowing int64) ParseMemory says "too large"
		}
		got, err := ParseMemory(s)
		if want < 0 {
			if err == nil {
				t.Errorf("ParseMemory(%q) = %d, Kubernetes rejects it (or it is not positive)", s, got)
			}
			continue
		}
		if err != nil || got != uint64(want) {
			t.Errorf("ParseMemory(%q) = %d, %v; Kubernetes says %d", s, got, err, want)
		}
	}
}

func FuzzParseMemory(f *testing.F) {
	for _, s := range []string{"128Mi", "1.5G", "1e9", "-1", ".5Ki", "1e-3", "99999999999999999999Ei"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseMemory(s)
		if i := strings.LastIndexAny(s, "eE"); i >= 0 && len(s)-i > 4 {
			return // resource.ParseQuantity takes minutes on huge exponents (ParseMemory refuses beyond e30)
		}
		q, qerr := resource.ParseQuantity(s)
		if err == nil && got == 0 {
			t.Fatalf("ParseMemory(%q) = 0 without an error", s)
		}
		if err == nil && (qerr != nil || q.Sign() <= 0) {
			t.Fatalf("ParseMemory(%q) = %d, Kubernetes rejects it (%v) or it is not positive", s, got, qerr)
		}
		// Where Kubernetes gives a positive size that fits, both must agree.
		if qerr == nil && q.Sign() > 0 && q.Value() > 0 && q.Value() < 1<<62 && err == nil && uint64(q.Value()) != got {
			t.Fatalf("ParseMemory(%q) = %d, Kubernetes %d", s, got, q.Value())
		}
	})
}
