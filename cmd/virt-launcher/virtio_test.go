package main

import (
	"errors"
	"strings"
	"testing"
)

func TestVirtioFlags(t *testing.T) {
	for _, tc := range []struct {
		f    virtioFlags
		want string // "" = valid
	}{
		{virtioFlags{disks: []string{"/a.img", "/b.img,ro,serial=B"}, taps: []string{"tap0,mac=52:54:00:00:00:01"}}, ""},
		{virtioFlags{disks: []string{"/a.img,rw"}}, "--disk"},
		{virtioFlags{disks: []string{""}}, "--disk"},
		{virtioFlags{taps: []string{"tap0,mac=nope"}}, "--tap"},
	} {
		_, err := buildConfig(bootFlags{kernel: "k", memory: "256Mi", cpus: 1, onReboot: "reset", compat: "auto", virtio: tc.f})
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.f, err)
			}
			continue
		}
		var ee exitError
		if !errors.As(err, &ee) || ee.code != ExitUsage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want a usage error mentioning %s", tc.f, err, tc.want)
		}
	}
}
