package main

import (
	"slices"
	"testing"
)

func TestExpandCPUs(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []int
	}{
		{"0\n", []int{0}},
		{"0-1", []int{0, 1}},
		{"0-2,5,7-8\n", []int{0, 1, 2, 5, 7, 8}},
	} {
		got, err := expandCPUs(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("expandCPUs(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "x", "3-1", "1,,2", "-1"} {
		if got, err := expandCPUs(bad); err == nil {
			t.Errorf("expandCPUs(%q) = %v, want an error", bad, got)
		}
	}
}
