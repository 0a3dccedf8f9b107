package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// topology prints, on one line, the socket and core Linux assigned to each online CPU, read from
// /sys/devices/system/cpu/cpuN/topology: "kvirt-guest: topology cpu0=0/0 cpu1=1/0" (package/core), so
// a test can check the VMM's sockets × cores × threads reached the guest.
func topology() error {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return err
	}
	cpus, err := expandCPUs(string(b))
	if err != nil {
		return err
	}
	var parts []string
	for _, n := range cpus {
		dir := filepath.Join("/sys/devices/system/cpu", fmt.Sprintf("cpu%d", n), "topology")
		pkg, err := os.ReadFile(filepath.Join(dir, "physical_package_id"))
		if err != nil {
			return fmt.Errorf("%w (is the guest kernel built with CONFIG_SMP?)", err)
		}
		core, err := os.ReadFile(filepath.Join(dir, "core_id"))
		if err != nil {
			return err
		}
		parts = append(parts, fmt.Sprintf("cpu%d=%s/%s", n, firstLine(string(pkg)), firstLine(string(core))))
	}
	say("topology %s", strings.Join(parts, " "))
	return nil
}

// expandCPUs lists the CPUs of a Linux CPU list such as "0-3,5" (countCPUs checks the same syntax).
func expandCPUs(list string) ([]int, error) {
	if _, err := countCPUs(list); err != nil {
		return nil, err
	}
	var out []int
	for _, part := range strings.Split(strings.TrimSpace(list), ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		var a, b int
		fmt.Sscan(lo, &a)
		b = a
		if isRange {
			fmt.Sscan(hi, &b)
		}
		for n := a; n <= b; n++ {
			out = append(out, n)
		}
	}
	return out, nil
}
