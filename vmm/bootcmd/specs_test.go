package bootcmd

import (
	"strings"
	"testing"
)

func TestParseDiskSpec(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want DiskSpec
		err  string
	}{
		{"/a.img", DiskSpec{Path: "/a.img"}, ""},
		{"/a.img,ro", DiskSpec{Path: "/a.img", ReadOnly: true}, ""},
		{"/a.img,serial=abc,ro,direct", DiskSpec{Path: "/a.img", ReadOnly: true, Serial: "abc", Direct: true}, ""},
		{"", DiskSpec{}, "empty path"},
		{",ro", DiskSpec{}, "empty path"},
		{"/a,rw", DiskSpec{}, "unknown option"},
		{"/a,ro,ro", DiskSpec{}, "twice"},
		{"/a,serial=", DiskSpec{}, "serial must be"},
		{"/a,serial=123456789012345678901", DiskSpec{}, "serial must be"},
		{"/a,serial=a\x01", DiskSpec{}, "printable"},
		{"/a,ro=1", DiskSpec{}, "unknown option"},
	} {
		got, err := ParseDiskSpec(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v %v, want %+v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseDiskSpec(f *testing.F) {
	f.Add("/a.img,ro,serial=x")
	f.Add("/a,direct")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDiskSpec(s)
		if err != nil {
			return
		}
		d2, err := ParseDiskSpec(d.String())
		if err != nil || d2 != d {
			t.Fatalf("round trip %q → %+v → %q → %+v %v", s, d, d.String(), d2, err)
		}
	})
}

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
