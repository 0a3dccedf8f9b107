package controller_test

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// controllerRules are the rules of deploy/rbac/virt-controller.yaml (its ClusterRole and its Role).
func controllerRules(t testing.TB) []rbacv1.PolicyRule {
	t.Helper()
	b, err := os.ReadFile("../deploy/rbac/virt-controller.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules []rbacv1.PolicyRule
	for _, doc := range bytes.Split(b, []byte("\n---\n")) {
		var o struct {
			Kind  string              `json:"kind"`
			Rules []rbacv1.PolicyRule `json:"rules"`
		}
		if err := yaml.Unmarshal(doc, &o); err != nil {
			t.Fatalf("deploy/rbac/virt-controller.yaml: %v", err)
		}
		if o.Kind == "ClusterRole" || o.Kind == "Role" {
			rules = append(rules, o.Rules...)
		}
	}
	return rules
}

// controllerGrants are the role's permissions as "verb group/resource[/subresource]".
func controllerGrants(t testing.TB) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, r := range controllerRules(t) {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out[v+" "+g+"/"+res] = true
				}
			}
		}
	}
	return out
}

// controllerAPICalls is every API call the controller's code makes, and where: deploy/rbac must grant
// exactly these. The sync-once tests (newFixture's checkGranted) fail when a sync makes a call the role
// lacks, and controller/integration runs the controller with only the role's permissions; this table is
// the other direction: a grant no code path needs is an error here (review finding F6: every Secret in
// the cluster could be read, updated and deleted).
var controllerAPICalls = map[string]string{
	"list kubevirt.io/virtualmachines":                      "VM informer (manager.go)",
	"watch kubevirt.io/virtualmachines":                     "VM informer",
	"get kubevirt.io/virtualmachines":                       "fresh read before adopting, raw template read (vm.go)",
	"patch kubevirt.io/virtualmachines":                     "template MACs, stateChangeRequests (vm.go patchVM)",
	"update kubevirt.io/virtualmachines/status":             "VM status (vm.go)",
	"update kubevirt.io/virtualmachines/finalizers":         "blockOwnerDeletion on the VMI's owner reference",
	"list kubevirt.io/virtualmachineinstances":              "VMI informer",
	"watch kubevirt.io/virtualmachineinstances":             "VMI informer",
	"create kubevirt.io/virtualmachineinstances":            "VM controller starts a VMI",
	"patch kubevirt.io/virtualmachineinstances":             "adoption, finalizers, node label (patchVMI)",
	"delete kubevirt.io/virtualmachineinstances":            "VM controller stops a VMI",
	"update kubevirt.io/virtualmachineinstances/status":     "VMI status (vmi.go)",
	"update kubevirt.io/virtualmachineinstances/finalizers": "blockOwnerDeletion on the launcher pod's and token secret's owner reference",
	"list /pods":                        "launcher pod informer (label-scoped)",
	"watch /pods":                       "launcher pod informer",
	"create /pods":                      "createPod",
	"delete /pods":                      "deletePod",
	"update /pods/status":               "the unpaused readiness gate (setUnpausedGate)",
	"create /pods/portforward":          "--launcher-connect=portforward (controlstatus.go)",
	"list /secrets":                     "token secret informer (label-scoped)",
	"watch /secrets":                    "token secret informer",
	"create /secrets":                   "ensureTokenSecret",
	"delete /secrets":                   "ensureTokenSecret: a token kvirt made for an earlier VMI of the same name",
	"list /persistentvolumeclaims":      "PVC informer",
	"watch /persistentvolumeclaims":     "PVC informer",
	"list /nodes":                       "node informer: a lost node's VMIs are Unknown (node.go)",
	"watch /nodes":                      "node informer",
	"create /events":                    "event recorder",
	"patch /events":                     "event recorder: a repeated event",
	"get coordination.k8s.io/leases":    "leader election (LeaseLock)",
	"create coordination.k8s.io/leases": "leader election",
	"update coordination.k8s.io/leases": "leader election",
}

func TestRBACGrantsWhatTheCodeCalls(t *testing.T) {
	grants := controllerGrants(t)
	for g := range grants {
		if _, ok := controllerAPICalls[g]; !ok {
			t.Errorf("deploy/rbac/virt-controller.yaml grants %q, which no code path calls", g)
		}
	}
	for c, where := range controllerAPICalls {
		if !grants[c] {
			t.Errorf("the controller calls %q (%s), which deploy/rbac/virt-controller.yaml does not grant", c, where)
		}
	}
	for _, r := range controllerRules(t) {
		if len(r.ResourceNames) > 0 || slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") || slices.ContainsFunc(r.APIGroups, func(g string) bool { return strings.Contains(g, "*") }) {
			t.Errorf("rule %+v: no wildcards (and no resourceNames, which this table does not model)", r)
		}
	}
}
