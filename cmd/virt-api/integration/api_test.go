package integration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/cmd/virt-api/app"
	"github.com/kvirt/kvirt/version"
)

// put sends one subresource request exactly as kubecli does: PUT with the options marshalled to JSON.
func put(c *rest.RESTClient, ns, resource, name, sub string, opts any) error {
	body, err := json.Marshal(opts)
	if err != nil {
		return err
	}
	return c.Put().AbsPath("/apis/subresources.kubevirt.io/v1").Namespace(ns).Resource(resource).Name(name).
		SubResource(sub).Body(body).Do(context.Background()).Error()
}

// putStatus is put returning the HTTP status code too.
func putStatus(c *rest.RESTClient, ns, resource, name, sub string, body []byte) (int, error) {
	var code int
	req := c.Put().AbsPath("/apis/subresources.kubevirt.io/v1").Namespace(ns).Resource(resource).Name(name).SubResource(sub)
	if body != nil {
		req = req.Body(body)
	}
	err := req.Do(context.Background()).StatusCode(&code).Error()
	return code, err
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// The discovery documents KubeVirt's clients read, and GET version and healthz.
func TestDiscoveryVersionHealthz(t *testing.T) {
	e := setup(t)
	c := e.kubecli(t, "")
	ctx := context.Background()

	// kubecli's ServerVersion: the group's preferred version from /apis/subresources.kubevirt.io (the
	// aggregator's document), then GET /apis/<that>/version (virt-api's).
	raw, err := c.Get().AbsPath("/apis/subresources.kubevirt.io").DoRaw(ctx)
	if err != nil {
		t.Fatalf("GET group: %v", err)
	}
	var group metav1.APIGroup
	if err := json.Unmarshal(raw, &group); err != nil || group.PreferredVersion.GroupVersion != "subresources.kubevirt.io/v1" {
		t.Fatalf("group %s: preferred %q, %v", raw, group.PreferredVersion.GroupVersion, err)
	}
	raw, err = c.Get().AbsPath("/apis/" + group.PreferredVersion.GroupVersion + "/version").DoRaw(ctx)
	if err != nil {
		t.Fatalf("GET version: %v", err)
	}
	var info map[string]string
	if err := json.Unmarshal(raw, &info); err != nil {
		t.Fatal(err)
	}
	want := version.Get()
	if info["gitVersion"] != want.GitVersion || info["goVersion"] != want.GoVersion || info["platform"] != want.Platform {
		t.Errorf("version %s, want kvirt's %+v", raw, want)
	}

	raw, err = c.Get().AbsPath("/apis/subresources.kubevirt.io/v1/healthz").DoRaw(ctx)
	if err != nil || !strings.Contains(string(raw), `"connectivity":"ok"`) {
		t.Errorf("healthz: %s, %v", raw, err)
	}

	// The version's resource list as KubeVirt's virt-api serves it, through the aggregator.
	raw, err = c.Get().AbsPath("/apis/subresources.kubevirt.io/v1").DoRaw(ctx)
	if err != nil {
		t.Fatalf("GET resource list: %v", err)
	}
	var list metav1.APIResourceList
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range list.APIResources {
		if !r.Namespaced {
			t.Errorf("%s not namespaced", r.Name)
		}
		names = append(names, r.Name)
	}
	wantNames := "virtualmachineinstances/pause virtualmachineinstances/unpause virtualmachines/start virtualmachines/stop virtualmachines/restart"
	if strings.Join(names, " ") != wantNames {
		t.Errorf("resources %q, want %q", names, wantNames)
	}

	// The apiserver's merged (aggregated) discovery lists them too, so kubectl api-resources sees them.
	dc, err := discovery.NewDiscoveryClientForConfig(e.cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	_, lists, err := dc.ServerGroupsAndResources()
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	var found []string
	for _, l := range lists {
		if l.GroupVersion == app.GroupVersion {
			for _, r := range l.APIResources {
				found = append(found, r.Name)
			}
		}
	}
	if len(found) != 5 {
		t.Errorf("aggregated discovery of %s: %q, want the 5 subresources", app.GroupVersion, found)
	}

	// A path virt-api does not serve is the apiserver's 404; a GET of a subresource is a 405.
	if err := c.Get().AbsPath("/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/x/migrate").Do(ctx).Error(); !apierrors.IsNotFound(err) {
		t.Errorf("unserved subresource: %v, want 404", err)
	}
	if err := c.Get().AbsPath("/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/x/start").Do(ctx).Error(); !apierrors.IsMethodNotSupported(err) {
		t.Errorf("GET start: %v, want 405", err)
	}
}

// requests renders a VM's state change requests as "Action[/uid][+paused]".
func requests(vm *v1.VirtualMachine, uid types.UID) string {
	var parts []string
	for _, r := range vm.Status.StateChangeRequests {
		s := string(r.Action)
		if r.UID != nil {
			s += "/" + strings.Replace(string(*r.UID), string(uid), "UID", 1)
		}
		if r.Data[v1.StartRequestDataPausedKey] == v1.StartRequestDataPausedTrue {
			s += "+paused"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ",")
}

func runStrategy(vm *v1.VirtualMachine) string {
	if vm.Spec.RunStrategy == nil {
		return ""
	}
	return string(*vm.Spec.RunStrategy)
}

func conflict(kind, name, msg string) string {
	return fmt.Sprintf("Operation cannot be fulfilled on %s.kubevirt.io %q: %s", kind, name, msg)
}

// Start, stop and restart through virt-api: KubeVirt's status codes, messages and changes.
func TestStartStopRestart(t *testing.T) {
	e := setup(t)
	c := e.kubecli(t, "")
	ns := e.cp.Namespace(t)
	zero, five := int64(0), int64(5)

	t.Run("start Halted", func(t *testing.T) {
		e.createVM(t, ns, "halted", v1.RunStrategyHalted)
		code, err := putStatus(c, ns, "virtualmachines", "halted", "start", []byte(`{}`))
		if err != nil || code != http.StatusAccepted {
			t.Fatalf("start: %d %v, want 202", code, err)
		}
		if rs := runStrategy(e.getVM(t, ns, "halted")); rs != "Always" {
			t.Errorf("runStrategy %s, want Always", rs)
		}
		// No body at all is no options, as in KubeVirt.
		e.createVM(t, ns, "halted-nobody", v1.RunStrategyHalted)
		if code, err := putStatus(c, ns, "virtualmachines", "halted-nobody", "start", nil); err != nil || code != http.StatusAccepted {
			t.Errorf("start without body: %d %v", code, err)
		}
	})
	t.Run("start Manual paused", func(t *testing.T) {
		e.createVM(t, ns, "manual", v1.RunStrategyManual)
		if err := put(c, ns, "virtualmachines", "manual", "start", app.StartOptions{Paused: true}); err != nil {
			t.Fatal(err)
		}
		if r := requests(e.getVM(t, ns, "manual"), ""); r != "Start+paused" {
			t.Errorf("requests %q, want Start+paused", r)
		}
		// A second start while one is queued: KubeVirt's 500.
		err := put(c, ns, "virtualmachines", "manual", "start", app.StartOptions{})
		if want := "Internal error occurred: unable to complete request: stop/start already underway"; errText(err) != want {
			t.Errorf("second start: %v, want %q", err, want)
		}
		if !apierrors.IsInternalError(err) {
			t.Errorf("second start: %v is not a 500", err)
		}
	})
	t.Run("start running VM", func(t *testing.T) {
		e.createVM(t, ns, "running", v1.RunStrategyManual)
		e.createVMI(t, ns, "running", v1.Running, false)
		err := put(c, ns, "virtualmachines", "running", "start", app.StartOptions{})
		if !apierrors.IsConflict(err) || err.Error() != conflict("virtualmachine", "running", "VM is already running") {
			t.Errorf("start: %v, want 409 VM is already running", err)
		}
	})
	t.Run("start Always", func(t *testing.T) {
		e.createVM(t, ns, "always", v1.RunStrategyAlways)
		err := put(c, ns, "virtualmachines", "always", "start", app.StartOptions{})
		if errText(err) != conflict("virtualmachine", "always", "Always does not support manual start requests") {
			t.Errorf("start: %v", err)
		}
	})
	t.Run("not found", func(t *testing.T) {
		for _, sub := range []string{"start", "stop", "restart"} {
			err := put(c, ns, "virtualmachines", "nope", sub, struct{}{})
			if !apierrors.IsNotFound(err) || err.Error() != `virtualmachine.kubevirt.io "nope" not found` {
				t.Errorf("%s: %v, want 404 virtualmachine.kubevirt.io \"nope\" not found", sub, err)
			}
		}
	})
	t.Run("dry run changes nothing", func(t *testing.T) {
		vm := e.createVM(t, ns, "dry", v1.RunStrategyHalted)
		if err := put(c, ns, "virtualmachines", "dry", "start", app.StartOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatal(err)
		}
		e.createVM(t, ns, "dry-manual", v1.RunStrategyManual)
		vmi := e.createVMI(t, ns, "dry-manual", v1.Running, false)
		if err := put(c, ns, "virtualmachines", "dry-manual", "stop", app.StopOptions{GracePeriod: &zero, DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatal(err)
		}
		if err := put(c, ns, "virtualmachines", "dry-manual", "restart", app.RestartOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatal(err)
		}
		if got := e.getVM(t, ns, "dry"); got.ResourceVersion != vm.ResourceVersion || runStrategy(got) != "Halted" {
			t.Errorf("dry-run start changed the VM: %s rv %s→%s", runStrategy(got), vm.ResourceVersion, got.ResourceVersion)
		}
		if r := requests(e.getVM(t, ns, "dry-manual"), vmi.UID); r != "" {
			t.Errorf("dry-run stop/restart queued %q", r)
		}
		got, _ := e.kv.KubevirtV1().VirtualMachineInstances(ns).Get(context.Background(), "dry-manual", metav1.GetOptions{})
		if got.ResourceVersion != vmi.ResourceVersion {
			t.Errorf("dry-run stop changed the VMI")
		}
	})
	t.Run("stop", func(t *testing.T) {
		e.createVM(t, ns, "stop-always", v1.RunStrategyAlways)
		if code, err := putStatus(c, ns, "virtualmachines", "stop-always", "stop", []byte(`{}`)); err != nil || code != http.StatusAccepted {
			t.Fatalf("stop: %d %v", code, err)
		}
		if rs := runStrategy(e.getVM(t, ns, "stop-always")); rs != "Halted" {
			t.Errorf("runStrategy %s, want Halted", rs)
		}
		e.createVM(t, ns, "stop-manual", v1.RunStrategyManual)
		err := put(c, ns, "virtualmachines", "stop-manual", "stop", app.StopOptions{})
		if errText(err) != conflict("virtualmachine", "stop-manual", "VM is not running") {
			t.Errorf("stop without VMI: %v", err)
		}
		vmi := e.createVMI(t, ns, "stop-manual", v1.Running, false)
		if err := put(c, ns, "virtualmachines", "stop-manual", "stop", app.StopOptions{GracePeriod: &five}); err != nil {
			t.Fatal(err)
		}
		if r := requests(e.getVM(t, ns, "stop-manual"), vmi.UID); r != "Stop/UID" {
			t.Errorf("requests %q, want Stop/UID", r)
		}
		got, _ := e.kv.KubevirtV1().VirtualMachineInstances(ns).Get(context.Background(), "stop-manual", metav1.GetOptions{})
		if g := got.Spec.TerminationGracePeriodSeconds; g == nil || *g != 5 {
			t.Errorf("VMI grace %v, want 5", g)
		}
	})
	t.Run("restart", func(t *testing.T) {
		e.createVM(t, ns, "restart", v1.RunStrategyAlways)
		err := put(c, ns, "virtualmachines", "restart", "restart", app.RestartOptions{})
		if errText(err) != conflict("virtualmachine", "restart", "VM is not running: Halted") {
			t.Errorf("restart without VMI: %v", err)
		}
		vmi := e.createVMI(t, ns, "restart", v1.Running, false)
		pod := e.createLauncherPod(t, vmi, nil)
		err = put(c, ns, "virtualmachines", "restart", "restart", app.RestartOptions{GracePeriodSeconds: &five})
		if !apierrors.IsBadRequest(err) || err.Error() != "For force restart, only gracePeriod=0 is supported for now" {
			t.Errorf("restart grace 5: %v, want 400", err)
		}
		if err := put(c, ns, "virtualmachines", "restart", "restart", app.RestartOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatalf("force restart: %v", err)
		}
		if r := requests(e.getVM(t, ns, "restart"), vmi.UID); r != "Stop/UID,Start" {
			t.Errorf("requests %q, want Stop/UID,Start", r)
		}
		got, _ := e.kv.KubevirtV1().VirtualMachineInstances(ns).Get(context.Background(), "restart", metav1.GetOptions{})
		if g := got.Spec.TerminationGracePeriodSeconds; g == nil || *g != 1 {
			t.Errorf("VMI grace %v, want 1", g)
		}
		// The pod's node has no kubelet: a graceful delete leaves it terminating.
		p, err := e.kube.CoreV1().Pods(ns).Get(context.Background(), pod.Name, metav1.GetOptions{})
		if err != nil || p.DeletionTimestamp == nil || p.DeletionGracePeriodSeconds == nil || *p.DeletionGracePeriodSeconds != 1 {
			t.Errorf("launcher pod not deleted with grace 1: %v", err)
		}
		e.createVM(t, ns, "restart-halted", v1.RunStrategyHalted)
		err = put(c, ns, "virtualmachines", "restart-halted", "restart", app.RestartOptions{})
		if errText(err) != conflict("virtualmachine", "restart-halted", "RunStategy Halted does not support manual restart requests") {
			t.Errorf("restart Halted: %v", err)
		}
	})
	t.Run("bad body", func(t *testing.T) {
		e.createVM(t, ns, "body", v1.RunStrategyHalted)
		_, err := putStatus(c, ns, "virtualmachines", "body", "start", []byte(`{"paused": "yes"}`))
		if !apierrors.IsBadRequest(err) || !strings.HasPrefix(err.Error(), "Can not unmarshal Request body to struct, error: ") {
			t.Errorf("bad body: %v, want KubeVirt's 400", err)
		}
		if rs := runStrategy(e.getVM(t, ns, "body")); rs != "Halted" {
			t.Errorf("a refused start changed the VM: %s", rs)
		}
	})
}

// Pause and unpause reach the launcher of the VMI's pod; the state checks are KubeVirt's.
func TestPauseUnpause(t *testing.T) {
	e := setup(t)
	c := e.kubecli(t, "")
	ns := e.cp.Namespace(t)

	vmi := e.createVMI(t, ns, "guest", v1.Running, false)
	guest := &fakeGuest{}
	pod := e.createLauncherPod(t, vmi, guest)

	if code, err := putStatus(c, ns, "virtualmachineinstances", "guest", "pause", []byte(`{"dryRun":["All"]}`)); err != nil || code != http.StatusOK {
		t.Fatalf("dry-run pause: %d %v", code, err)
	}
	if guest.isPaused() || len(e.exec.requests(pod.Name)) != 0 {
		t.Fatalf("dry-run pause reached the launcher: %q", e.exec.requests(pod.Name))
	}
	if code, err := putStatus(c, ns, "virtualmachineinstances", "guest", "pause", []byte(`{}`)); err != nil || code != http.StatusOK {
		t.Fatalf("pause: %d %v, want 200", code, err)
	}
	if !guest.isPaused() {
		t.Fatal("the guest was not paused")
	}
	if r := e.exec.requests(pod.Name); strings.Join(r, ";") != "virt-launcher pause" {
		t.Errorf("exec %q, want virt-launcher pause in the launcher pod", r)
	}
	err := put(c, ns, "virtualmachineinstances", "guest", "unpause", app.PauseOptions{})
	if errText(err) != conflict("virtualmachineinstance", "guest", "VMI is not paused") {
		t.Errorf("unpause before the controller saw the pause: %v", err)
	}
	// The controller writes Paused=True from the launcher's report; then unpause goes through.
	vmi, _ = e.kv.KubevirtV1().VirtualMachineInstances(ns).Get(context.Background(), "guest", metav1.GetOptions{})
	vmi.Status.Conditions = []v1.VirtualMachineInstanceCondition{{Type: v1.VirtualMachineInstancePaused, Status: corev1.ConditionTrue}}
	if _, err := e.kv.KubevirtV1().VirtualMachineInstances(ns).UpdateStatus(context.Background(), vmi, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = put(c, ns, "virtualmachineinstances", "guest", "pause", app.PauseOptions{})
	if !apierrors.IsConflict(err) || err.Error() != conflict("virtualmachineinstance", "guest", "VMI is already paused") {
		t.Errorf("pause of a paused VMI: %v", err)
	}
	if err := put(c, ns, "virtualmachineinstances", "guest", "unpause", app.PauseOptions{}); err != nil {
		t.Fatalf("unpause: %v", err)
	}
	if guest.isPaused() {
		t.Error("the guest was not resumed")
	}

	for _, tc := range []struct {
		name, sub string
		phase     v1.VirtualMachineInstancePhase
		want      string
	}{
		{"scheduling", "pause", v1.Scheduling, conflict("virtualmachineinstance", "scheduling", "VM is not running")},
		{"succeeded", "unpause", v1.Succeeded, conflict("virtualmachineinstance", "succeeded", "VMI is not running")},
		{"no-pod", "pause", v1.Running, conflict("virtualmachineinstance", "no-pod", "VMI has no running launcher pod")},
	} {
		e.createVMI(t, ns, tc.name, tc.phase, false)
		if err := put(c, ns, "virtualmachineinstances", tc.name, tc.sub, app.PauseOptions{}); errText(err) != tc.want {
			t.Errorf("%s %s: %v, want %q", tc.sub, tc.name, err, tc.want)
		}
	}
	err = put(c, ns, "virtualmachineinstances", "nope", "pause", app.PauseOptions{})
	if !apierrors.IsNotFound(err) || err.Error() != `virtualmachineinstance.kubevirt.io "nope" not found` {
		t.Errorf("pause of a missing VMI: %v", err)
	}
	// A launcher that cannot be reached is a 500 with the reason.
	broken := e.createVMI(t, ns, "unreachable", v1.Running, false)
	e.createLauncherPod(t, broken, nil)
	err = put(c, ns, "virtualmachineinstances", "unreachable", "pause", app.PauseOptions{})
	if !apierrors.IsInternalError(err) || !strings.Contains(err.Error(), "no launcher listens") {
		t.Errorf("pause with an unreachable launcher: %v", err)
	}
}

// RBAC on the subresources decides: kubevirt.io:edit may start and pause, kubevirt.io:view may not, and
// every authenticated user may read the version (kubevirt.io:default).
func TestRBAC(t *testing.T) {
	e := setup(t)
	ns := e.cp.Namespace(t)
	ctx := context.Background()
	for user, role := range map[string]string{"alice": "kubevirt.io:edit", "bob": "kubevirt.io:view"} {
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: user}}}
		if _, err := e.kube.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	e.createVM(t, ns, "vm", v1.RunStrategyHalted)
	vmi := e.createVMI(t, ns, "paused", v1.Running, false)
	guest := &fakeGuest{}
	e.createLauncherPod(t, vmi, guest)

	for _, user := range []string{"bob", "carol"} {
		c := e.kubecli(t, user)
		err := put(c, ns, "virtualmachines", "vm", "start", app.StartOptions{})
		want := fmt.Sprintf(`virtualmachines.subresources.kubevirt.io "vm" is forbidden: User %q cannot update resource "virtualmachines/start" in API group "subresources.kubevirt.io" in the namespace %q`, user, ns)
		if !apierrors.IsForbidden(err) || err.Error() != want {
			t.Errorf("%s start: %v\nwant 403 %s", user, err, want)
		}
		if err := put(c, ns, "virtualmachineinstances", "paused", "pause", app.PauseOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("%s pause: %v, want 403", user, err)
		}
		if err := c.Get().AbsPath("/apis/subresources.kubevirt.io/v1/version").Do(ctx).Error(); err != nil {
			t.Errorf("%s version: %v", user, err)
		}
	}
	if rs := runStrategy(e.getVM(t, ns, "vm")); rs != "Halted" || guest.isPaused() {
		t.Fatalf("a refused request acted: runStrategy %s, paused %t", rs, guest.isPaused())
	}
	alice := e.kubecli(t, "alice")
	if err := put(alice, ns, "virtualmachines", "vm", "start", app.StartOptions{}); err != nil {
		t.Errorf("alice start: %v", err)
	}
	if err := put(alice, ns, "virtualmachineinstances", "paused", "pause", app.PauseOptions{}); err != nil {
		t.Errorf("alice pause: %v", err)
	}
	if rs := runStrategy(e.getVM(t, ns, "vm")); rs != "Always" || !guest.isPaused() {
		t.Errorf("alice's requests did not act: runStrategy %s, paused %t", rs, guest.isPaused())
	}
}
