package vmm

import (
	"fmt"

	"github.com/kvirt/kvirt/vmm/cpuid"
)

// topology is the machine's CPU layout (valid after normalize).
func (c *Config) topology() cpuid.Topology {
	return cpuid.Topology{Sockets: c.Sockets, Cores: c.Cores, Threads: c.Threads}
}

// normalizeTopology settles CPUs and Sockets/Cores/Threads: with no topology, CPUs cores in one socket
// (default one vCPU); with a topology, levels left 0 are 1 (as KubeVirt defaults them) and CPUs, if
// given, must equal the product.
func (c *Config) normalizeTopology() error {
	if c.CPUs < 0 || c.Sockets < 0 || c.Cores < 0 || c.Threads < 0 {
		return fmt.Errorf("vmm: negative CPU count or topology (cpus %d, sockets %d, cores %d, threads %d)", c.CPUs, c.Sockets, c.Cores, c.Threads)
	}
	if c.Sockets == 0 && c.Cores == 0 && c.Threads == 0 {
		if c.CPUs == 0 {
			c.CPUs = 1
		}
		if c.CPUs > maxCPUs {
			return fmt.Errorf("vmm: %d vCPUs out of range 1-%d", c.CPUs, maxCPUs)
		}
		c.Sockets, c.Cores, c.Threads = 1, c.CPUs, 1
	} else {
		for _, v := range []*int{&c.Sockets, &c.Cores, &c.Threads} {
			if *v == 0 {
				*v = 1
			}
		}
	}
	t := c.topology()
	if err := t.Validate(); err != nil {
		return fmt.Errorf("vmm: %w", err)
	}
	n := t.CPUs()
	if n > maxCPUs {
		return fmt.Errorf("vmm: CPU topology %v gives %d vCPUs, more than the maximum of %d", t, n, maxCPUs)
	}
	if c.CPUs != 0 && c.CPUs != n {
		return fmt.Errorf("vmm: %d vCPUs requested but the CPU topology %v gives %d: set one or make them agree", c.CPUs, t, n)
	}
	c.CPUs = n
	return nil
}

// apicIDs returns the vCPUs' APIC IDs by index as bytes (MADT and MP table entries; normalize bounds them
// by cpuid.MaxAPICID).
func (c *Config) apicIDs() []uint8 {
	var out []uint8
	for _, id := range c.topology().APICIDs() {
		out = append(out, uint8(id))
	}
	return out
}
