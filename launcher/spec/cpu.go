package spec

import (
	"cmp"
	"fmt"

	"github.com/kvirt/kvirt/vmm/cpuid"
	"k8s.io/apimachinery/pkg/api/resource"
)

// cpu translates spec.domain.cpu: the topology, the CPU model and the feature policy.
//
// Topology, as KubeVirt computes it (pkg/virt-launcher/virtwrap/converter GetCPUTopology, and the same
// defaults in its VMI mutating webhook):
//   - sockets, cores and threads left 0 are 1;
//   - with none of the three set, the vCPUs are sockets (one core, one thread each), as many as
//     resources.limits.cpu, else resources.requests.cpu, rounded up to a whole CPU ("1500m" → 2 sockets);
//     with neither, one vCPU. Once any of sockets/cores/threads is set, the CPU request and limit only
//     size the pod, never the guest.
//
// The guest sees the layout in CPUID and the ACPI MADT (vmm/cpuid.Topology).
func (t *translator) cpu(m *Machine) {
	d := &t.vmi.Spec.Domain
	cp := t.root.Child("domain", "cpu")
	m.Sockets, m.Cores, m.Threads = 1, 1, 1
	c := d.CPU
	clamp := func(v int64) int { return int(min(max(v, 1), MaxVCPUs+1)) } // no overflow in the product
	if c != nil && (c.Sockets != 0 || c.Cores != 0 || c.Threads != 0) {
		m.Sockets, m.Cores, m.Threads = clamp(int64(c.Sockets)), clamp(int64(c.Cores)), clamp(int64(c.Threads))
	} else if q, field, ok := cpuQuantity(d.Resources.Limits["cpu"], d.Resources.Requests["cpu"]); ok {
		qp := t.root.Child("domain", "resources", field, "cpu")
		switch {
		case q.Sign() < 0:
			t.fail(qp, q.String(), "must not be negative")
		case q.CmpInt64(MaxVCPUs) > 0: // also catches values too large for Value
			t.fail(qp, q.String(), fmt.Sprintf("with no spec.domain.cpu topology this is the vCPU count (as sockets), which would exceed kvirt's maximum of %d", MaxVCPUs))
		default:
			m.Sockets = clamp(q.Value()) // Value rounds up to a whole CPU
		}
	}
	if n := m.VCPUs(); n > MaxVCPUs {
		t.fail(cp, n, fmt.Sprintf("%d vCPUs (sockets × cores × threads) exceed kvirt's maximum of %d", n, MaxVCPUs))
	} else if err := (cpuid.Topology{Sockets: m.Sockets, Cores: m.Cores, Threads: m.Threads}).Validate(); err != nil {
		t.fail(cp, fmt.Sprintf("sockets %d, cores %d, threads %d", m.Sockets, m.Cores, m.Threads), err.Error())
	}
	if c == nil {
		return
	}
	switch c.Model {
	case "", "host-model", "host-passthrough":
	default:
		t.unsupported(cp.Child("model"), fmt.Sprintf("named CPU models (%q) are not supported: use host-model or host-passthrough and cpu.features to disable features", c.Model))
	}
	if c.DedicatedCPUPlacement {
		t.warn(cp.Child("dedicatedCpuPlacement"), "not enforced by the launcher: vCPU threads are not pinned")
	}
	for i, f := range c.Features {
		fp := cp.Child("features").Index(i)
		if f.Name == "" {
			t.fail(fp.Child("name"), f.Name, "empty feature name")
			continue
		}
		switch f.Policy {
		case "disable", "forbid":
			m.CPUDisable = append(m.CPUDisable, f.Name)
		case "", "require", "force", "optional":
			t.warn(fp, fmt.Sprintf("policy %q for %s is not enforced: kvirt can only hide CPU features (disable/forbid)", cmp.Or(f.Policy, "require"), f.Name))
		}
	}
}

// cpuQuantity picks the CPU limit, else the request (zero quantities count as absent, as a missing map
// entry reads), and names the field it came from.
func cpuQuantity(limit, request resource.Quantity) (resource.Quantity, string, bool) {
	switch {
	case !limit.IsZero():
		return limit, "limits", true
	case !request.IsZero():
		return request, "requests", true
	}
	return resource.Quantity{}, "", false
}
