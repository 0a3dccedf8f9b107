package net

import (
	"strings"
	"testing"
)

func TestParseTapSpec(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"tap0", "tap0", ""},
		{"tap0,mac=52:54:00:12:34:56", "tap0,mac=52:54:00:12:34:56", ""},
		{"", "", "want NAME"},
		{"a/b", "", "want NAME"},
		{"averyveryverylongname", "", "want NAME"},
		{"tap0,mac=zz", "", "not a 6-byte"},
		{"tap0,mac=01:00:5e:00:00:01", "", "multicast"},
		{"tap0,mtu=9000", "", "unknown"},
		{"tap0,mac=52:54:00:12:34:56,mac=52:54:00:12:34:57", "", "repeated"},
	} {
		got, err := ParseTapSpec(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("%q: %v %v, want %q", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseTapSpec(f *testing.F) {
	f.Add("tap0,mac=52:54:00:12:34:56")
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := ParseTapSpec(s)
		if err != nil {
			return
		}
		again, err := ParseTapSpec(spec.String())
		if err != nil || again.String() != spec.String() {
			t.Fatalf("round trip %q → %q: %v", s, spec.String(), err)
		}
	})
}
