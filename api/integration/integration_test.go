package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	kvclient "github.com/kvirt/kvirt/api/client/clientset/versioned"
	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/tests/harness"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func TestMain(m *testing.M) { os.Exit(harness.RunShared(m, harness.Options{})) }

func repoFile(parts ...string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(append([]string{filepath.Dir(file), "..", ".."}, parts...)...)
}

var installOnce sync.Mutex

func setup(t *testing.T) (*harness.ControlPlane, string) {
	t.Helper()
	cp := harness.Shared(t)
	installOnce.Lock()
	defer installOnce.Unlock()
	cp.InstallCRDs(t, repoFile("deploy", "crds", "kubevirt.io_virtualmachines.yaml"), repoFile("deploy", "crds", "kubevirt.io_virtualmachineinstances.yaml"))
	return cp, cp.Namespace(t)
}

func ptr[T any](v T) *T { return &v }

func template() *v1.VirtualMachineInstanceTemplateSpec {
	t := &v1.VirtualMachineInstanceTemplateSpec{}
	t.Spec.Domain.Resources.Requests = corev1.ResourceList{"memory": resource.MustParse("64Mi")}
	return t
}

// warnings collects the apiserver's warning headers.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func TestCRDValidationMessages(t *testing.T) {
	cp, ns := setup(t)
	kv, err := kvclient.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, tc := range []struct {
		running *bool
		rs      *v1.VirtualMachineRunStrategy
		want    string // substring of the error; "" = accepted
	}{
		{nil, ptr(v1.RunStrategyAlways), ""},
		{ptr(true), nil, ""},
		{ptr(true), ptr(v1.RunStrategyAlways), `spec.running: Invalid value: "object": Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead`},
		{nil, nil, `spec.running: Invalid value: "object": RunStrategy must be specified`},
		{nil, ptr(v1.VirtualMachineRunStrategy("Sometimes")), `spec.runStrategy: Invalid value: "string": Invalid RunStrategy (Sometimes)`},
	} {
		vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("vm%d", i)},
			Spec: v1.VirtualMachineSpec{Running: tc.running, RunStrategy: tc.rs, Template: template()}}
		_, err := kv.KubevirtV1().VirtualMachines(ns).Create(ctx, vm, metav1.CreateOptions{})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("case %d rejected: %v", i, err)
		case tc.want != "" && (err == nil || !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("case %d: got %v\nwant an Invalid error containing %q", i, err, tc.want)
		}
	}

	vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "nomem"}}
	_, err = kv.KubevirtV1().VirtualMachineInstances(ns).Create(ctx, vmi, metav1.CreateOptions{})
	want := "no memory requested, at least one of 'spec.domain.memory.guest', 'spec.domain.memory.hugepages.pageSize' or 'spec.domain.resources.requests.memory' must be set"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("VMI without memory: %v", err)
	}
	vmi.Spec.Domain.Resources.Requests = corev1.ResourceList{"memory": resource.MustParse("64Mi")}
	if _, err := kv.KubevirtV1().VirtualMachineInstances(ns).Create(ctx, vmi, metav1.CreateOptions{}); err != nil {
		t.Errorf("VMI with memory: %v", err)
	}
}

func TestUnknownFieldsKeptAndV1alpha3(t *testing.T) {
	cp, ns := setup(t)
	cfg := rest.CopyConfig(cp.Config)
	w := &warnings{}
	cfg.WarningHandler = w
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	manifest := `{"apiVersion":"kubevirt.io/v1alpha3","kind":"VirtualMachine","metadata":{"name":"old"},
	  "spec":{"runStrategy":"Halted","dataVolumeTemplates":[],"template":{"metadata":{"labels":{"kubevirt.io/vm":"old"}},
	  "spec":{"domain":{"devices":{"tpm":{}},"resources":{"requests":{"memory":"64Mi"}}}}}}}`
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON([]byte(manifest)); err != nil {
		t.Fatal(err)
	}
	gvr := schema.GroupVersionResource{Group: "kubevirt.io", Version: "v1alpha3", Resource: "virtualmachines"}
	if _, err := dyn.Resource(gvr).Namespace(ns).Create(ctx, obj, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
		t.Fatalf("create v1alpha3 VM with unknown fields (strict field validation, as kubectl apply): %v", err)
	}
	found := false
	for _, m := range w.msgs {
		found = found || strings.Contains(m, "kubevirt.io/v1alpha3 is now deprecated and will be removed in a future release.")
	}
	if !found {
		t.Errorf("no deprecation warning for v1alpha3; warnings: %q", w.msgs)
	}
	got, err := dyn.Resource(v1.VirtualMachineGroupVersionResource).Namespace(ns).Get(ctx, "old", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := unstructured.NestedMap(got.Object, "spec", "template", "spec", "domain", "devices", "tpm"); !ok {
		t.Error("spec.template.spec.domain.devices.tpm was pruned")
	}
	if l, _, _ := unstructured.NestedString(got.Object, "spec", "template", "metadata", "labels", "kubevirt.io/vm"); l != "old" {
		t.Error("template labels were pruned")
	}
	// The status subresource defaults printableStatus.
	patch := []byte(`{"status":{"created":false}}`)
	st, err := dyn.Resource(v1.VirtualMachineGroupVersionResource).Namespace(ns).Patch(ctx, "old", types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		t.Fatal(err)
	}
	if ps, _, _ := unstructured.NestedString(st.Object, "status", "printableStatus"); ps != "Stopped" {
		t.Errorf("printableStatus = %q, want the default Stopped", ps)
	}
}

func TestPrinterColumns(t *testing.T) {
	cp, ns := setup(t)
	kube := cp.Clientset(t)
	kv, err := kvclient.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "cols"}, Spec: v1.VirtualMachineSpec{RunStrategy: ptr(v1.RunStrategyHalted), Template: template()}}
	if _, err := kv.KubevirtV1().VirtualMachines(ns).Create(ctx, vm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		resource string
		want     []string
	}{
		{"virtualmachines", []string{"Name", "Age", "Status", "Ready"}},
		{"virtualmachineinstances", []string{"Name", "Age", "Phase", "IP", "NodeName", "Ready", "Live-Migratable", "Paused"}},
	} {
		raw, err := kube.CoreV1().RESTClient().Get().AbsPath("/apis/kubevirt.io/v1/namespaces", ns, tc.resource).
			SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var table metav1.Table
		if err := json.Unmarshal(raw, &table); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range table.ColumnDefinitions {
			names = append(names, c.Name)
		}
		if strings.Join(names, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s columns %v, want %v", tc.resource, names, tc.want)
		}
	}
}

// applyRBAC creates the objects of deploy/rbac (and the controller's ServiceAccount namespace).
func applyRBAC(t *testing.T, kube kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kubevirt"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, f := range []string{"virt-controller.yaml", "kvirt-user.yaml"} {
		data, err := os.ReadFile(repoFile("deploy", "rbac", f))
		if err != nil {
			t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			var u unstructured.Unstructured
			if err := dec.Decode(&u.Object); err != nil {
				break
			}
			if len(u.Object) == 0 {
				continue
			}
			raw, _ := u.MarshalJSON()
			var err error
			switch u.GetKind() {
			case "ClusterRole":
				var o rbacv1.ClusterRole
				_ = json.Unmarshal(raw, &o)
				_, err = kube.RbacV1().ClusterRoles().Create(ctx, &o, metav1.CreateOptions{})
			case "ClusterRoleBinding":
				var o rbacv1.ClusterRoleBinding
				_ = json.Unmarshal(raw, &o)
				_, err = kube.RbacV1().ClusterRoleBindings().Create(ctx, &o, metav1.CreateOptions{})
			case "Role":
				var o rbacv1.Role
				_ = json.Unmarshal(raw, &o)
				_, err = kube.RbacV1().Roles(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
			case "RoleBinding":
				var o rbacv1.RoleBinding
				_ = json.Unmarshal(raw, &o)
				_, err = kube.RbacV1().RoleBindings(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
			default:
				t.Fatalf("%s: unexpected kind %s", f, u.GetKind())
			}
			if err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("%s: %s %s: %v", f, u.GetKind(), u.GetName(), err)
			}
		}
	}
}

type access struct {
	verb, group, resource, sub, ns string
}

func allowed(t *testing.T, c kubernetes.Interface, a access) bool {
	t.Helper()
	r, err := c.AuthorizationV1().SelfSubjectAccessReviews().Create(context.Background(), &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
			Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.sub, Namespace: a.ns}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return r.Status.Allowed
}

func userClient(t *testing.T, cp *harness.ControlPlane, name, user string, groups []string) *rest.Config {
	t.Helper()
	cfg, _, err := cp.PKI.UserKubeconfig(cp.URL, name, user, groups, filepath.Join(t.TempDir(), name+".kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestRBAC(t *testing.T) {
	cp, ns := setup(t)
	admin := cp.Clientset(t)
	applyRBAC(t, admin)

	ctrlCfg := userClient(t, cp, "virt-controller", "system:serviceaccount:kubevirt:virt-controller", []string{"system:serviceaccounts", "system:serviceaccounts:kubevirt"})
	ctrl := kubernetes.NewForConfigOrDie(ctrlCfg)
	for _, a := range []access{
		{"list", "kubevirt.io", "virtualmachines", "", ""}, {"watch", "kubevirt.io", "virtualmachineinstances", "", ""},
		{"create", "kubevirt.io", "virtualmachineinstances", "", ns}, {"delete", "kubevirt.io", "virtualmachineinstances", "", ns},
		{"get", "kubevirt.io", "virtualmachines", "", ns}, {"patch", "kubevirt.io", "virtualmachines", "", ns},
		{"update", "kubevirt.io", "virtualmachines", "status", ns}, {"update", "kubevirt.io", "virtualmachineinstances", "status", ns},
		{"create", "", "pods", "", ns}, {"delete", "", "pods", "", ns}, {"watch", "", "pods", "", ""},
		{"update", "", "pods", "status", ns}, {"create", "", "pods", "portforward", ns},
		{"create", "", "secrets", "", ns}, {"list", "", "secrets", "", ""},
		{"create", "", "events", "", ns}, {"patch", "", "events", "", ns},
		{"get", "coordination.k8s.io", "leases", "", "kubevirt"}, {"update", "coordination.k8s.io", "leases", "", "kubevirt"},
		{"create", "coordination.k8s.io", "leases", "", "kubevirt"},
	} {
		if !allowed(t, ctrl, a) {
			t.Errorf("virt-controller may not %+v", a)
		}
	}
	for _, a := range []access{
		{"create", "coordination.k8s.io", "leases", "", ns}, {"create", "", "pods", "exec", ns}, {"delete", "", "namespaces", "", ""},
		// Review finding F6: Secrets only as far as the launcher tokens need (no get, update or patch).
		{"get", "", "secrets", "", ns}, {"update", "", "secrets", "", ns}, {"patch", "", "secrets", "", ns},
		{"update", "", "pods", "", ns}, {"patch", "", "pods", "", ns}, {"update", "kubevirt.io", "virtualmachines", "", ns},
	} {
		if allowed(t, ctrl, a) {
			t.Errorf("virt-controller may %+v, which it does not need", a)
		}
	}

	ctx := context.Background()
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "alice-vms"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "kvirt-user"},
		Subjects:   []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "alice"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	aliceCfg := userClient(t, cp, "alice", "alice", nil)
	alice := kubernetes.NewForConfigOrDie(aliceCfg)
	for _, a := range []access{
		{"create", "kubevirt.io", "virtualmachines", "", ns}, {"delete", "kubevirt.io", "virtualmachineinstances", "", ns},
		{"patch", "kubevirt.io", "virtualmachines", "status", ns},
		{"list", "", "pods", "", ns}, {"delete", "", "pods", "", ns},
		{"create", "", "pods", "exec", ns}, {"get", "", "pods", "exec", ns}, {"create", "", "pods", "portforward", ns},
		{"create", "", "services", "", ns},
	} {
		if !allowed(t, alice, a) {
			t.Errorf("kvirt-user may not %+v", a)
		}
	}
	for _, a := range []access{
		{"list", "kubevirt.io", "virtualmachines", "", "default"}, {"update", "kubevirt.io", "virtualmachineinstances", "status", ns},
		{"get", "", "secrets", "", ns},
	} {
		if allowed(t, alice, a) {
			t.Errorf("kvirt-user bound in %s may %+v", ns, a)
		}
	}

	// What virtctl start does on a Manual VM: a status JSON patch that tests and adds the request.
	kvAlice := kvclient.NewForConfigOrDie(aliceCfg)
	vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "manual"}, Spec: v1.VirtualMachineSpec{RunStrategy: ptr(v1.RunStrategyManual), Template: template()}}
	if _, err := kvAlice.KubevirtV1().VirtualMachines(ns).Create(ctx, vm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`[{"op":"test","path":"/status","value":null},{"op":"add","path":"/status","value":{"stateChangeRequests":[{"action":"Start"}]}}]`)
	got, err := kvAlice.KubevirtV1().VirtualMachines(ns).Patch(ctx, "manual", types.JSONPatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		t.Fatalf("kvirt-user status patch: %v", err)
	}
	if len(got.Status.StateChangeRequests) != 1 || got.Status.StateChangeRequests[0].Action != v1.StartRequest {
		t.Errorf("status after patch: %+v", got.Status)
	}
}

func TestRunningDeprecationWarning(t *testing.T) {
	cp, ns := setup(t)
	admin := cp.Clientset(t)
	ctx := context.Background()
	data, err := os.ReadFile(repoFile("deploy", "crds", "running-deprecation-policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var u unstructured.Unstructured
		if err := dec.Decode(&u.Object); err != nil {
			break
		}
		raw, _ := u.MarshalJSON()
		switch u.GetKind() {
		case "ValidatingAdmissionPolicy":
			var p admissionregistrationv1.ValidatingAdmissionPolicy
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatal(err)
			}
			_, err = admin.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, &p, metav1.CreateOptions{})
		case "ValidatingAdmissionPolicyBinding":
			var b admissionregistrationv1.ValidatingAdmissionPolicyBinding
			if err := json.Unmarshal(raw, &b); err != nil {
				t.Fatal(err)
			}
			_, err = admin.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, &b, metav1.CreateOptions{})
		default:
			t.Fatalf("unexpected kind %s", u.GetKind())
		}
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("%s: %v", u.GetKind(), err)
		}
	}

	cfg := rest.CopyConfig(cp.Config)
	w := &warnings{}
	cfg.WarningHandler = w
	kv := kvclient.NewForConfigOrDie(cfg)
	const want = "spec.running is deprecated, please use spec.runStrategy instead."
	has := func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, m := range w.msgs {
			if strings.Contains(m, want) {
				return true
			}
		}
		return false
	}
	// The policy takes effect once the apiserver has loaded it: retry until the deadline.
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; !has(); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("no warning %q after 60s; warnings seen: %q", want, w.msgs)
		}
		vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("legacy%d", i)}, Spec: v1.VirtualMachineSpec{Running: ptr(false), Template: template()}}
		if _, err := kv.KubevirtV1().VirtualMachines(ns).Create(ctx, vm, metav1.CreateOptions{}); err != nil {
			t.Fatalf("a VM using spec.running must be accepted (only warned about): %v", err)
		}
		if !has() {
			time.Sleep(500 * time.Millisecond)
		}
	}
	w.mu.Lock()
	w.msgs = nil
	w.mu.Unlock()
	vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: "modern"}, Spec: v1.VirtualMachineSpec{RunStrategy: ptr(v1.RunStrategyHalted), Template: template()}}
	if _, err := kv.KubevirtV1().VirtualMachines(ns).Create(ctx, vm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if has() {
		t.Error("runStrategy VM got the spec.running warning")
	}
}

// TestKubectl drives the manifests the way a user does: kubectl apply -k deploy/controller (client-side
// apply: the CRDs must fit the last-applied annotation), a KubeVirt manifest with fields kvirt does not
// model (kubectl's default strict field validation must accept it), kubectl get columns and explain.
func TestKubectl(t *testing.T) {
	cp, ns := setup(t)
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed")
	}
	run := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(kubectl, append([]string{"--kubeconfig", cp.Kubeconfig}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("", "apply", "-k", repoFile("deploy", "controller")); err != nil {
		t.Fatalf("kubectl apply -k deploy/controller: %v\n%s", err, out)
	}
	const vm = `
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: testvm
spec:
  runStrategy: Halted
  template:
    metadata:
      labels: {kubevirt.io/domain: testvm}
    spec:
      architecture: amd64
      evictionStrategy: None
      domain:
        features: {acpi: {}}
        devices:
          rng: {}
          disks: [{name: containerdisk, disk: {bus: virtio}}]
          interfaces: [{name: default, masquerade: {}}]
        resources: {requests: {memory: 64M}}
      networks: [{name: default, pod: {}}]
      volumes: [{name: containerdisk, containerDisk: {image: quay.io/kubevirt/cirros-container-disk-demo}}]
`
	if out, err := run(vm, "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatalf("kubectl apply of a KubeVirt manifest: %v\n%s", err, out)
	}
	out, err := run("", "get", "vm", "-n", ns, "testvm")
	if err != nil || !regexp.MustCompile(`NAME\s+AGE\s+STATUS\s+READY`).MatchString(out) {
		t.Errorf("kubectl get vm: %v\n%s", err, out)
	}
	if out, err := run("", "explain", "vm.spec.runStrategy"); err != nil || !strings.Contains(out, "RunStrategy: Always, Halted, Manual, RerunOnFailure or Once.") {
		t.Errorf("kubectl explain vm.spec.runStrategy: %v\n%s", err, out)
	}
	both := strings.Replace(strings.Replace(vm, "testvm", "both", 1), "runStrategy: Halted", "runStrategy: Halted\n  running: false", 1)
	out, err = run(both, "apply", "-n", ns, "-f", "-")
	if err == nil || !strings.Contains(out, "Running and RunStrategy are mutually exclusive. Note that Running is deprecated, please use RunStrategy instead") {
		t.Errorf("kubectl apply with running and runStrategy: %v\n%s", err, out)
	}
}
