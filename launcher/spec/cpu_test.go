package spec

import (
	"strings"
	"testing"
)

// TestTranslateCPUTopology follows KubeVirt's GetCPUTopology: given levels win, missing ones are 1, and
// without any the CPU limit (else request), rounded up, becomes sockets.
func TestTranslateCPUTopology(t *testing.T) {
	const head = "\nmetadata: {name: x, uid: 11111111-2222-3333-4444-555555555555}\nspec:\n  domain:\n"
	for _, c := range []struct {
		name, domain string
		s, co, th    int
	}{
		{"nothing", "    resources: {requests: {memory: 64Mi}}\n", 1, 1, 1},
		{"request rounds up to sockets", "    resources: {requests: {memory: 64Mi, cpu: 1500m}}\n", 2, 1, 1},
		{"limit before request", "    resources: {requests: {memory: 64Mi, cpu: 1}, limits: {cpu: 3}}\n", 3, 1, 1},
		{"cores only", "    resources: {requests: {memory: 64Mi}}\n    cpu: {cores: 4}\n", 1, 4, 1},
		{"sockets and threads", "    resources: {requests: {memory: 64Mi}}\n    cpu: {sockets: 2, threads: 2}\n", 2, 1, 2},
		{"topology beats the request", "    resources: {requests: {memory: 64Mi, cpu: 8}}\n    cpu: {sockets: 2}\n", 2, 1, 1},
		{"model only: request still counts", "    resources: {requests: {memory: 64Mi, cpu: 2}}\n    cpu: {model: host-passthrough}\n", 2, 1, 1},
	} {
		m, _, err := Translate(parse(t, head+c.domain))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if m.Sockets != c.s || m.Cores != c.co || m.Threads != c.th || m.VCPUs() != c.s*c.co*c.th {
			t.Errorf("%s: sockets/cores/threads %d/%d/%d, want %d/%d/%d", c.name, m.Sockets, m.Cores, m.Threads, c.s, c.co, c.th)
		}
	}
	for _, c := range []struct{ name, domain, want string }{
		{"too many", "    resources: {requests: {memory: 64Mi}}\n    cpu: {sockets: 8, cores: 4, threads: 4}\n", "spec.domain.cpu: Invalid value: 128: 128 vCPUs (sockets × cores × threads) exceed kvirt's maximum of 64"},
		{"huge request", "    resources: {requests: {memory: 64Mi, cpu: 1e20}}\n", "spec.domain.resources.requests.cpu: Invalid value: \"100E\": with no spec.domain.cpu topology this is the vCPU count (as sockets), which would exceed kvirt's maximum of 64"},
		{"limit just above", "    resources: {requests: {memory: 64Mi}, limits: {cpu: 64001m}}\n", "spec.domain.resources.limits.cpu"},
		{"negative request", "    resources: {requests: {memory: 64Mi, cpu: -2}}\n", "spec.domain.resources.requests.cpu: Invalid value: \"-2\": must not be negative"},
	} {
		_, _, err := Translate(parse(t, head+c.domain))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}
