package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestBusyboxName(t *testing.T) {
	d := t.TempDir()
	for _, dir := range []string{"bin", "bbin"} {
		if err := os.Mkdir(filepath.Join(d, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(d, "bbin", "bb"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{"bbin/gosh": "bb", "bbin/dhclient": "bb", "bin/sh": "../bbin/gosh"}
	for l, target := range links {
		if err := os.Symlink(target, filepath.Join(d, l)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ path, name, want string }{
		{"bin/sh", "sh", "gosh"},
		{"bbin/dhclient", "dhclient", "dhclient"},
		{"bbin/bb", "bb", "bb"},
	} {
		if got := busyboxName(filepath.Join(d, tc.path), tc.name); got != tc.want {
			t.Errorf("busyboxName(%s) = %q, want %q", tc.path, got, tc.want)
		}
	}
}
