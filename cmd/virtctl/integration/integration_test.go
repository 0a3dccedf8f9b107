package integration_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/kvirt/kvirt/api/client/clientset/versioned"
	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/cmd/virtctl/app"
	"github.com/kvirt/kvirt/lifecycle"
	"github.com/kvirt/kvirt/tests/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.RunShared(m, harness.Options{})) }

var crdOnce sync.Once

type cluster struct {
	t    *testing.T
	cp   *harness.ControlPlane
	ns   string
	kv   versioned.Interface
	kube kubernetes.Interface
}

func setup(t *testing.T) *cluster {
	t.Helper()
	cp := harness.Shared(t)
	crdOnce.Do(func() { installCRDs(t, cp) })
	return newCluster(t, cp)
}

// installCRDs installs kvirt's VM and VMI CRDs from deploy/crds.
func installCRDs(t *testing.T, cp *harness.ControlPlane) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "crds")
	cp.InstallCRDs(t, filepath.Join(dir, "kubevirt.io_virtualmachines.yaml"), filepath.Join(dir, "kubevirt.io_virtualmachineinstances.yaml"))
}

func newCluster(t *testing.T, cp *harness.ControlPlane) *cluster {
	t.Helper()
	kv, err := versioned.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, cp: cp, ns: cp.Namespace(t), kv: kv, kube: cp.Clientset(t)}
}

// virtctl runs one command line against the control plane through the kubeconfig file, like a user.
func (c *cluster) virtctl(before func(), args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	full := append([]string{"--kubeconfig", c.cp.Kubeconfig, "-n", c.ns}, args...)
	code = app.Run(context.Background(), full, app.Options{In: strings.NewReader(""), Out: &out, ErrOut: &errOut, BeforeApply: before})
	return code, out.String(), errOut.String()
}

func template() *v1.VirtualMachineInstanceTemplateSpec {
	return &v1.VirtualMachineInstanceTemplateSpec{Spec: v1.VirtualMachineInstanceSpec{Domain: v1.DomainSpec{
		Resources: v1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}},
	}}}
}

// createVM creates a VM with run strategy rs ("running=true"/"running=false" use the deprecated field).
func (c *cluster) createVM(name, rs string) *v1.VirtualMachine {
	c.t.Helper()
	vm := &v1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.VirtualMachineSpec{Template: template()}}
	switch rs {
	case "running=true", "running=false":
		b := rs == "running=true"
		vm.Spec.Running = &b
	default:
		s := v1.VirtualMachineRunStrategy(rs)
		vm.Spec.RunStrategy = &s
	}
	vm, err := c.kv.KubevirtV1().VirtualMachines(c.ns).Create(context.Background(), vm, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("create VM %s: %v", name, err)
	}
	return vm
}

func (c *cluster) setVMStatus(vm *v1.VirtualMachine, st v1.VirtualMachineStatus) *v1.VirtualMachine {
	c.t.Helper()
	vm.Status = st
	vm, err := c.kv.KubevirtV1().VirtualMachines(c.ns).UpdateStatus(context.Background(), vm, metav1.UpdateOptions{})
	if err != nil {
		c.t.Fatalf("update VM status: %v", err)
	}
	return vm
}

// createVMI creates the VM's instance in the given phase, as the controllers would have left it.
func (c *cluster) createVMI(name string, phase v1.VirtualMachineInstancePhase) *v1.VirtualMachineInstance {
	c.t.Helper()
	ctx := context.Background()
	vmi := &v1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1.VirtualMachineNameLabel: name}},
		Spec:       template().Spec,
	}
	vmi, err := c.kv.KubevirtV1().VirtualMachineInstances(c.ns).Create(ctx, vmi, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("create VMI %s: %v", name, err)
	}
	vmi.Status.Phase = phase
	vmi, err = c.kv.KubevirtV1().VirtualMachineInstances(c.ns).UpdateStatus(ctx, vmi, metav1.UpdateOptions{})
	if err != nil {
		c.t.Fatalf("set VMI %s phase %s: %v", name, phase, err)
	}
	return vmi
}

// createLauncherPod creates a running launcher pod for vmi, bound to a node no kubelet serves (so a
// graceful delete stays visible).
func (c *cluster) createLauncherPod(vmi *v1.VirtualMachineInstance) *corev1.Pod {
	c.t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "virt-launcher-" + vmi.Name + "-", Labels: map[string]string{
			v1.AppLabel: v1.VirtLauncherValue, v1.CreatedByLabel: string(vmi.UID),
			v1.VirtualMachineNameLabel: vmi.Name, v1.VirtualMachineInstanceIDLabel: vmi.Name,
		}},
		Spec: corev1.PodSpec{NodeName: "no-such-node", Containers: []corev1.Container{{Name: lifecycle.LauncherContainer, Image: "kvirt/virt-launcher"}}},
	}
	pod, err := c.kube.CoreV1().Pods(c.ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("create launcher pod: %v", err)
	}
	pod.Status.Phase = corev1.PodRunning
	pod, err = c.kube.CoreV1().Pods(c.ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
	if err != nil {
		c.t.Fatalf("set launcher pod running: %v", err)
	}
	return pod
}

func (c *cluster) getVM(name string) *v1.VirtualMachine {
	c.t.Helper()
	vm, err := c.kv.KubevirtV1().VirtualMachines(c.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatalf("get VM %s: %v", name, err)
	}
	return vm
}

// state renders what start/stop/restart may change: the run strategy (or running), the queued requests
// (VMI UID shown as UID) and whether startFailure is set.
func state(vm *v1.VirtualMachine, vmiUID types.UID) string {
	var parts []string
	if vm.Spec.RunStrategy != nil {
		parts = append(parts, "runStrategy="+string(*vm.Spec.RunStrategy))
	}
	if vm.Spec.Running != nil {
		parts = append(parts, fmt.Sprintf("running=%t", *vm.Spec.Running))
	}
	var reqs []string
	for _, r := range vm.Status.StateChangeRequests {
		s := string(r.Action)
		if r.UID != nil {
			u := string(*r.UID)
			if *r.UID == vmiUID {
				u = "UID"
			}
			s += "/" + u
		}
		if r.Data[v1.StartRequestDataPausedKey] == v1.StartRequestDataPausedTrue {
			s += "+paused"
		}
		reqs = append(reqs, s)
	}
	if len(reqs) > 0 {
		parts = append(parts, "requests="+strings.Join(reqs, ","))
	}
	if vm.Status.StartFailure != nil {
		parts = append(parts, "startFailure")
	}
	return strings.Join(parts, " ")
}

// Every verb on every run strategy, against a real apiserver: the object change or the error.
func TestVerbsOnRunStrategies(t *testing.T) {
	c := setup(t)
	conflict := func(name, msg string) string {
		return fmt.Sprintf(`Operation cannot be fulfilled on virtualmachine.kubevirt.io %q: %s`, name, msg)
	}
	for i, tc := range []struct {
		rs      string
		phase   v1.VirtualMachineInstancePhase // "" = no VMI
		status  bool                           // VM has a status already (printableStatus + startFailure)
		args    []string
		stdout  string // "" = command fails
		stderr  string // with %s for the VM name
		want    string // VM state after
		vmiTGPS string // VMI terminationGracePeriodSeconds after ("" = unset)
	}{
		// start
		{"Always", "", false, []string{"start"}, "", "Error starting VirtualMachine " + conflict("%s", "Always does not support manual start requests"), "runStrategy=Always", ""},
		{"Always", v1.Running, false, []string{"start"}, "", "Error starting VirtualMachine " + conflict("%s", "VM is already running"), "runStrategy=Always", ""},
		{"Halted", "", false, []string{"start"}, "start", "", "runStrategy=Always", ""},
		{"Halted", "", false, []string{"start", "--paused"}, "start", "", "runStrategy=Halted requests=Start+paused", ""},
		{"running=false", "", false, []string{"start"}, "start", "", "running=true", ""},
		{"Manual", "", false, []string{"start"}, "start", "", "runStrategy=Manual requests=Start", ""},
		{"Manual", "", true, []string{"start"}, "start", "", "runStrategy=Manual requests=Start", ""},
		{"Manual", v1.Succeeded, true, []string{"start"}, "start", "", "runStrategy=Manual requests=Stop/UID,Start", ""},
		{"Manual", v1.Running, false, []string{"start"}, "", "Error starting VirtualMachine " + conflict("%s", "VM is already running"), "runStrategy=Manual", ""},
		{"RerunOnFailure", "", false, []string{"start"}, "start", "", "runStrategy=RerunOnFailure requests=Start", ""},
		{"RerunOnFailure", v1.Succeeded, false, []string{"start"}, "start", "", "runStrategy=RerunOnFailure requests=Stop/UID,Start", ""},
		{"RerunOnFailure", v1.Failed, false, []string{"start"}, "", "Error starting VirtualMachine " + conflict("%s", "RerunOnFailure does not support starting VM from failed state"), "runStrategy=RerunOnFailure", ""},
		{"Once", "", false, []string{"start"}, "", "Error starting VirtualMachine " + conflict("%s", "Once does not support manual start requests"), "runStrategy=Once", ""},
		// stop
		{"Always", v1.Running, false, []string{"stop"}, "stop", "", "runStrategy=Halted", ""},
		{"Always", "", false, []string{"stop"}, "stop", "", "runStrategy=Halted", ""},
		{"Always", v1.Running, false, []string{"stop", "--force", "--grace-period=0"}, "stop", "", "runStrategy=Halted", "0"},
		{"running=true", v1.Running, false, []string{"stop"}, "stop", "", "running=false", ""},
		{"Once", v1.Running, false, []string{"stop"}, "stop", "", "runStrategy=Halted", ""},
		{"Manual", v1.Running, false, []string{"stop"}, "stop", "", "runStrategy=Manual requests=Stop/UID", ""},
		{"Manual", v1.Running, true, []string{"stop", "--force", "--grace-period=5"}, "stop", "", "runStrategy=Manual requests=Stop/UID", "5"},
		{"Manual", "", false, []string{"stop"}, "", "error stopping VirtualMachine " + conflict("%s", "VM is not running"), "runStrategy=Manual", ""},
		{"RerunOnFailure", v1.Running, false, []string{"stop"}, "stop", "", "runStrategy=RerunOnFailure requests=Stop/UID", ""},
		{"RerunOnFailure", v1.Failed, false, []string{"stop"}, "", "error stopping VirtualMachine " + conflict("%s", "VM is not running"), "runStrategy=RerunOnFailure", ""},
		{"Halted", "", false, []string{"stop"}, "", "error stopping VirtualMachine " + conflict("%s", "VM is not running"), "runStrategy=Halted", ""},
		{"Halted", v1.Running, false, []string{"stop"}, "", "error stopping VirtualMachine " + conflict("%s", "Halted only supports manual stop requests with a shorter graceperiod"), "runStrategy=Halted", ""},
		{"Halted", v1.Running, false, []string{"stop", "--force", "--grace-period=0"}, "stop", "", "runStrategy=Halted requests=Stop/UID", "0"},
		// restart
		{"Always", v1.Running, false, []string{"restart"}, "restart", "", "runStrategy=Always requests=Stop/UID,Start", ""},
		{"Always", "", false, []string{"restart"}, "", "error restarting VirtualMachine: " + conflict("%s", "VM is not running: Halted"), "runStrategy=Always", ""},
		{"Manual", v1.Running, true, []string{"restart"}, "restart", "", "runStrategy=Manual requests=Stop/UID,Start", ""},
		{"RerunOnFailure", v1.Running, false, []string{"restart"}, "restart", "", "runStrategy=RerunOnFailure requests=Stop/UID,Start", ""},
		{"Halted", v1.Running, false, []string{"restart"}, "", "error restarting VirtualMachine: " + conflict("%s", "RunStategy Halted does not support manual restart requests"), "runStrategy=Halted", ""},
		{"Once", v1.Running, false, []string{"restart"}, "", "error restarting VirtualMachine: " + conflict("%s", "RunStategy Once does not support manual restart requests"), "runStrategy=Once", ""},
		{"Always", v1.Running, false, []string{"restart", "--force", "--grace-period=2"}, "", "error force restarting VirtualMachine: For force restart, only gracePeriod=0 is supported for now", "runStrategy=Always", ""},
		{"Always", v1.Running, false, []string{"restart", "--force"}, "", "Must both use --force=true and set --grace-period.", "runStrategy=Always", ""},
	} {
		name := fmt.Sprintf("vm-%d", i)
		t.Run(fmt.Sprintf("%s_%s_%s_%s", strings.Join(tc.args, "_"), tc.rs, tc.phase, name), func(t *testing.T) {
			c.t = t
			vm := c.createVM(name, tc.rs)
			if tc.status {
				c.setVMStatus(vm, v1.VirtualMachineStatus{PrintableStatus: v1.VirtualMachineStatusStopped,
					StartFailure: &v1.VirtualMachineStartFailure{ConsecutiveFailCount: 1}})
			}
			var uid types.UID
			if tc.phase != "" {
				uid = c.createVMI(name, tc.phase).UID
			}
			code, out, errOut := c.virtctl(nil, append(tc.args, name)...)
			if tc.stdout != "" {
				want := fmt.Sprintf("VM %s was scheduled to %s\n", name, tc.stdout)
				if code != 0 || out != want || errOut != "" {
					t.Fatalf("exit %d stdout %q stderr %q; want 0 %q", code, out, errOut, want)
				}
			} else {
				want := strings.ReplaceAll(tc.stderr, "%s", name) + "\n"
				if code != 1 || out != "" || errOut != want {
					t.Fatalf("exit %d stdout %q stderr %q\nwant 1 stderr %q", code, out, errOut, want)
				}
			}
			if got := state(c.getVM(name), uid); got != tc.want && !(tc.status && got == tc.want+" startFailure" && tc.stdout == "") {
				t.Errorf("VM after: %q, want %q", got, tc.want)
			}
			if tc.phase != "" {
				vmi, err := c.kv.KubevirtV1().VirtualMachineInstances(c.ns).Get(context.Background(), name, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				got := ""
				if g := vmi.Spec.TerminationGracePeriodSeconds; g != nil {
					got = fmt.Sprint(*g)
				}
				if got != tc.vmiTGPS {
					t.Errorf("VMI terminationGracePeriodSeconds %q, want %q", got, tc.vmiTGPS)
				}
			}
		})
	}
}

// --dry-run validates every write on the server and persists nothing.
func TestDryRunChangesNothing(t *testing.T) {
	c := setup(t)
	for i, tc := range []struct {
		rs    string
		phase v1.VirtualMachineInstancePhase
		args  []string
		verb  string
	}{
		{"Halted", "", []string{"start"}, "start"},
		{"Manual", "", []string{"start", "--paused"}, "start"},
		{"Always", v1.Running, []string{"stop", "--force", "--grace-period=0"}, "stop"},
		{"Manual", v1.Running, []string{"stop"}, "stop"},
		{"Always", v1.Running, []string{"restart", "--force", "--grace-period=0"}, "restart"},
	} {
		name := fmt.Sprintf("dry-%d", i)
		t.Run(name, func(t *testing.T) {
			c.t = t
			ctx := context.Background()
			vm := c.createVM(name, tc.rs)
			var vmiRV, podRV string
			var pod *corev1.Pod
			if tc.phase != "" {
				vmi := c.createVMI(name, tc.phase)
				vmiRV = vmi.ResourceVersion
				pod = c.createLauncherPod(vmi)
				podRV = pod.ResourceVersion
			}
			code, out, errOut := c.virtctl(nil, append(append([]string{}, tc.args...), name, "--dry-run")...)
			want := fmt.Sprintf("Dry Run execution\nVM %s was scheduled to %s\n", name, tc.verb)
			if code != 0 || out != want {
				t.Fatalf("exit %d stdout %q stderr %q, want %q", code, out, errOut, want)
			}
			if after := c.getVM(name); after.ResourceVersion != vm.ResourceVersion {
				t.Errorf("dry run changed the VM: %s → %s (%s)", vm.ResourceVersion, after.ResourceVersion, state(after, ""))
			}
			if tc.phase != "" {
				vmi, err := c.kv.KubevirtV1().VirtualMachineInstances(c.ns).Get(ctx, name, metav1.GetOptions{})
				if err != nil || vmi.ResourceVersion != vmiRV {
					t.Errorf("dry run changed the VMI (%v)", err)
				}
				p, err := c.kube.CoreV1().Pods(c.ns).Get(ctx, pod.Name, metav1.GetOptions{})
				if err != nil || p.ResourceVersion != podRV || p.DeletionTimestamp != nil {
					t.Errorf("dry run touched the launcher pod (%v)", err)
				}
			}
		})
	}
}

// Two requests racing on the same VM: the one that read a stale VM loses with KubeVirt's conflict.
func TestConcurrentRequestsConflict(t *testing.T) {
	c := setup(t)
	prefix := func(name string) string {
		return fmt.Sprintf(`Operation cannot be fulfilled on virtualmachine.kubevirt.io %q: `, name)
	}

	// Two starts of a Manual VM: both read an empty queue; the second to write fails its test.
	vm := c.createVM("race-start", "Manual")
	c.setVMStatus(vm, v1.VirtualMachineStatus{PrintableStatus: v1.VirtualMachineStatusStopped})
	var inner struct {
		code     int
		out, err string
	}
	code, _, errOut := c.virtctl(func() {
		inner.code, inner.out, inner.err = c.virtctl(nil, "start", "race-start")
	}, "start", "race-start")
	if inner.code != 0 {
		t.Fatalf("the concurrent start failed: %q", inner.err)
	}
	if code != 1 || errOut != "Error starting VirtualMachine "+prefix("race-start")+"the server rejected our request due to an error in our request\n" {
		t.Fatalf("stale start: exit %d stderr %q", code, errOut)
	}
	if got := state(c.getVM("race-start"), ""); got != "runStrategy=Manual requests=Start" {
		t.Errorf("VM after the race: %q", got)
	}
	// A later start sees the queued request: KubeVirt's 500.
	code, _, errOut = c.virtctl(nil, "start", "race-start")
	if code != 1 || errOut != "Error starting VirtualMachine Internal error occurred: unable to complete request: stop/start already underway\n" {
		t.Errorf("start with a queued Start: exit %d stderr %q", code, errOut)
	}

	// stop racing stop on an Always VM: the loser's runStrategy test fails.
	c.createVM("race-stop", "Always")
	c.createVMI("race-stop", v1.Running)
	code, _, errOut = c.virtctl(func() {
		inner.code, inner.out, inner.err = c.virtctl(nil, "stop", "race-stop")
	}, "stop", "race-stop")
	if inner.code != 0 {
		t.Fatalf("the concurrent stop failed: %q", inner.err)
	}
	if code != 1 || !strings.HasPrefix(errOut, "error stopping VirtualMachine "+prefix("race-stop")) {
		t.Fatalf("stale stop: exit %d stderr %q", code, errOut)
	}

	// start racing stop on a Halted VM that gets switched to Always meanwhile.
	c.createVM("race-mixed", "Halted")
	code, _, errOut = c.virtctl(func() {
		inner.code, _, inner.err = c.virtctl(nil, "start", "race-mixed")
	}, "start", "race-mixed")
	if inner.code != 0 || code != 1 || !strings.HasPrefix(errOut, "Error starting VirtualMachine "+prefix("race-mixed")) {
		t.Fatalf("stale start on Halted: inner %d %q, outer %d %q", inner.code, inner.err, code, errOut)
	}
}

// restart --force --grace-period=0 queues Stop+Start, gives the VMI 1 s and deletes its launcher pod.
func TestForceRestart(t *testing.T) {
	c := setup(t)
	ctx := context.Background()
	c.createVM("fr", "Always")
	vmi := c.createVMI("fr", v1.Running)
	pod := c.createLauncherPod(vmi)
	code, out, errOut := c.virtctl(nil, "restart", "fr", "--force", "--grace-period=0")
	if code != 0 || out != "VM fr was scheduled to restart\n" {
		t.Fatalf("exit %d stdout %q stderr %q", code, out, errOut)
	}
	if got := state(c.getVM("fr"), vmi.UID); got != "runStrategy=Always requests=Stop/UID,Start" {
		t.Errorf("VM after: %q", got)
	}
	vmi, err := c.kv.KubevirtV1().VirtualMachineInstances(c.ns).Get(ctx, "fr", metav1.GetOptions{})
	if err != nil || vmi.Spec.TerminationGracePeriodSeconds == nil || *vmi.Spec.TerminationGracePeriodSeconds != 1 {
		t.Errorf("VMI grace not 1: %v %v", vmi.Spec.TerminationGracePeriodSeconds, err)
	}
	p, err := c.kube.CoreV1().Pods(c.ns).Get(ctx, pod.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		t.Fatal(err)
	case p.DeletionTimestamp == nil || p.DeletionGracePeriodSeconds == nil || *p.DeletionGracePeriodSeconds != 1:
		t.Errorf("launcher pod not deleted with grace 1: %v %v", p.DeletionTimestamp, p.DeletionGracePeriodSeconds)
	}
}

func TestPauseStateChecks(t *testing.T) {
	c := setup(t)
	c.createVM("halted", "Halted")
	code, _, errOut := c.virtctl(nil, "pause", "vm", "halted")
	if code != 1 || errOut != "Error pausing VirtualMachineInstance halted. VirtualMachine halted is not set to run\n" {
		t.Errorf("pause halted: %d %q", code, errOut)
	}
	c.createVM("sched", "Always")
	c.createVMI("sched", v1.Scheduling)
	code, _, errOut = c.virtctl(nil, "pause", "vmi", "sched")
	if code != 1 || errOut != `Error pausing VirtualMachineInstance sched: Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "sched": VM is not running`+"\n" {
		t.Errorf("pause scheduling: %d %q", code, errOut)
	}
	c.createVMI("run", v1.Running)
	code, _, errOut = c.virtctl(nil, "unpause", "vmi", "run")
	if code != 1 || errOut != `Error unpausing VirtualMachineInstance run: Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "run": VMI is not paused`+"\n" {
		t.Errorf("unpause running: %d %q", code, errOut)
	}
}

func TestExposeRenameVersion(t *testing.T) {
	c := setup(t)
	ctx := context.Background()
	c.createVM("web", "Halted")
	code, out, errOut := c.virtctl(nil, "expose", "vm", "web", "--name", "web-http", "--port", "80", "--target-port", "8080")
	if code != 0 || out != "Service web-http successfully created for vm web\n" {
		t.Fatalf("expose: %d %q %q", code, out, errOut)
	}
	svc, err := c.kube.CoreV1().Services(c.ns).Get(ctx, "web-http", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Selector[v1.VirtualMachineInstanceIDLabel] != "web" || svc.Spec.Ports[0].TargetPort.IntValue() != 8080 || svc.Spec.ClusterIP == "" {
		t.Errorf("service %+v", svc.Spec)
	}

	code, out, errOut = c.virtctl(nil, "rename", "vm", "web", "web2")
	if code != 0 || out != "VM web was renamed to web2\n" {
		t.Fatalf("rename: %d %q %q", code, out, errOut)
	}
	if _, err := c.kv.KubevirtV1().VirtualMachines(c.ns).Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("old VM after rename: %v", err)
	}
	c.getVM("web2")
	c.createVM("busy", "Manual")
	c.createVMI("busy", v1.Running)
	code, _, errOut = c.virtctl(nil, "rename", "vm", "busy", "idle")
	if code != 1 || !strings.Contains(errOut, "is not stopped") {
		t.Errorf("rename running: %d %q", code, errOut)
	}
	if _, err := c.kv.KubevirtV1().VirtualMachines(c.ns).Get(ctx, "idle", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("refused rename created the new VM: %v", err)
	}

	code, out, _ = c.virtctl(nil, "version")
	if code != 0 || !strings.Contains(out, "Client Version: version.Info{") || !strings.Contains(out, `Server Version: version.Info{`) || !strings.Contains(out, `GitVersion:"v1.33`) {
		t.Errorf("version: %d %q", code, out)
	}
}

// rename copies the VM as stored: fields kvirt's Go types do not model, which the CRD keeps
// (x-kubernetes-preserve-unknown-fields), are in the renamed VM; a typed copy lost them.
func TestRenameKeepsUnmodelledFields(t *testing.T) {
	c := setup(t)
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(c.cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	const manifest = `
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: plain, labels: {app: web}}
spec:
  runStrategy: Halted
  instancetype: {name: u1.small}
  template:
    spec:
      evictionStrategy: LiveMigrate
      domain:
        memory: {guest: 64Mi}
        features:
          smm: {enabled: true}
        devices:
          tpm: {persistent: true}
`
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(manifest), &obj); err != nil {
		t.Fatal(err)
	}
	vms := dyn.Resource(v1.GroupVersion.WithResource("virtualmachines")).Namespace(c.ns)
	if _, err := vms.Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create VM: %v", err)
	}
	code, out, errOut := c.virtctl(nil, "rename", "vm", "plain", "fancy")
	if code != 0 || out != "VM plain was renamed to fancy\n" {
		t.Fatalf("rename: %d %q %q", code, out, errOut)
	}
	got, err := vms.Get(ctx, "fancy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range [][]string{
		{"spec", "instancetype", "name"},
		{"spec", "template", "spec", "evictionStrategy"},
		{"spec", "template", "spec", "domain", "features", "smm", "enabled"},
		{"spec", "template", "spec", "domain", "devices", "tpm", "persistent"},
	} {
		if _, found, err := unstructured.NestedFieldNoCopy(got.Object, path...); !found || err != nil {
			t.Errorf("field %v lost in the rename (err %v)", path, err)
		}
	}
	if got.GetLabels()["app"] != "web" {
		t.Errorf("labels %v", got.GetLabels())
	}
	if _, err := vms.Get(ctx, "plain", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("old VM after rename: %v", err)
	}
}

// Connection settings come from the same places as kubectl's: KUBECONFIG, the context's namespace,
// --context.
func TestKubeconfigLikeKubectl(t *testing.T) {
	c := setup(t)
	c.createVM("kc", "Halted")
	cfg, err := clientcmd.LoadFromFile(c.cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Contexts[cfg.CurrentContext].Namespace = c.ns
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", path)
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := app.Run(context.Background(), args, app.Options{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		return code, out.String(), errOut.String()
	}
	// No --kubeconfig and no -n: KUBECONFIG and the context's namespace.
	if code, out, errOut := run("start", "kc"); code != 0 || out != "VM kc was scheduled to start\n" {
		t.Fatalf("start via KUBECONFIG: %d %q %q", code, out, errOut)
	}
	if got := state(c.getVM("kc"), ""); got != "runStrategy=Always" {
		t.Errorf("VM after: %q", got)
	}
	if code, _, errOut := run("--context", "bogus", "stop", "kc"); code != 1 || !strings.Contains(errOut, `context "bogus" does not exist`) {
		t.Errorf("bogus context: %d %q", code, errOut)
	}
	if code, _, errOut := run("-n", "default", "stop", "kc"); code != 1 || !strings.Contains(errOut, `virtualmachine.kubevirt.io "kc" not found`) {
		t.Errorf("-n overrides the context namespace: %d %q", code, errOut)
	}
}

// pause and console go through the apiserver's pods/exec for the launcher pod's "compute" container.
// Without a kubelet the apiserver cannot finish the exec, but its answer shows the request was a valid
// exec of that pod (it looked up the pod's node) and virtctl reports it in KubeVirt's form.
func TestExecReachesLauncherPod(t *testing.T) {
	c := setup(t)
	c.createVM("ex", "Always")
	vmi := c.createVMI("ex", v1.Running)
	c.createLauncherPod(vmi)
	code, out, errOut := c.virtctl(nil, "pause", "vm", "ex")
	if code != 1 || out != "" || !strings.HasPrefix(errOut, "Error pausing VirtualMachineInstance ex: Internal error occurred: ") ||
		!strings.Contains(errOut, "no-such-node") {
		t.Errorf("pause without a kubelet: %d %q %q", code, out, errOut)
	}
	code, _, errOut = c.virtctl(nil, "console", "ex", "--timeout=1")
	if code != 1 || !strings.HasPrefix(errOut, "cannot connect to the console of VMI ex (launcher pod virt-launcher-ex-") ||
		!strings.Contains(errOut, "no-such-node") || strings.Contains(errOut, "Successfully connected") {
		t.Errorf("console without a kubelet: %d %q", code, errOut)
	}
}

// virtctl acts with the user's own credentials: RBAC decides, and its refusal reaches the user as is.
func TestUserCredentialsAndRBAC(t *testing.T) {
	c := setup(t)
	ctx := context.Background()
	c.createVM("always", "Always")
	c.createVM("manual", "Manual")
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "vm-spec-only"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{v1.GroupName}, Resources: []string{"virtualmachines", "virtualmachineinstances"},
			Verbs: []string{"get", "list", "patch"}}},
	}
	if _, err := c.kube.RbacV1().Roles(c.ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "bob"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "bob"}},
	}
	if _, err := c.kube.RbacV1().RoleBindings(c.ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	as := func(user string, args ...string) (int, string, string) {
		_, kc, err := c.cp.PKI.UserKubeconfig(c.cp.URL, user, user, nil, filepath.Join(dir, user))
		if err != nil {
			t.Fatal(err)
		}
		var out, errOut bytes.Buffer
		code := app.Run(ctx, append([]string{"--kubeconfig", kc, "-n", c.ns}, args...), app.Options{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		return code, out.String(), errOut.String()
	}
	// Bob may patch VM specs: stop on Always works.
	if code, out, errOut := as("bob", "stop", "always"); code != 0 || out != "VM always was scheduled to stop\n" {
		t.Errorf("bob stop: %d %q %q", code, out, errOut)
	}
	// ... but not the status subresource a Manual start writes.
	code, _, errOut := as("bob", "start", "manual")
	if code != 1 || !strings.HasPrefix(errOut, `Error starting VirtualMachine virtualmachines.kubevirt.io "manual" is forbidden: User "bob" cannot patch resource "virtualmachines/status"`) {
		t.Errorf("bob start manual: %d %q", code, errOut)
	}
	code, _, errOut = as("eve", "start", "manual")
	if code != 1 || !strings.HasPrefix(errOut, `Error starting VirtualMachine virtualmachines.kubevirt.io "manual" is forbidden: User "eve" cannot get resource "virtualmachines"`) {
		t.Errorf("eve start: %d %q", code, errOut)
	}
	if got := state(c.getVM("manual"), ""); got != "runStrategy=Manual" {
		t.Errorf("refused start changed the VM: %q", got)
	}
}

// The kvirt-user ClusterRole shipped in deploy/rbac is enough for every virtctl verb.
func TestKvirtUserRoleSuffices(t *testing.T) {
	c := setup(t)
	ctx := context.Background()
	_, file, _, _ := runtime.Caller(0)
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "rbac", "kvirt-user.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, doc := range strings.Split(string(raw), "\n---") {
		var cr rbacv1.ClusterRole
		if err := yaml.Unmarshal([]byte(doc), &cr); err != nil {
			t.Fatalf("deploy/rbac/kvirt-user.yaml: %v", err)
		}
		if cr.Kind != "ClusterRole" || cr.Name != "kvirt-user" {
			continue
		}
		found = true
		if _, err := c.kube.RbacV1().ClusterRoles().Create(ctx, &cr, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	if !found {
		t.Fatal("deploy/rbac/kvirt-user.yaml has no ClusterRole kvirt-user")
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "alice-vms"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "kvirt-user"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "alice"}},
	}
	if _, err := c.kube.RbacV1().RoleBindings(c.ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, kc, err := c.cp.PKI.UserKubeconfig(c.cp.URL, "alice", "alice", nil, filepath.Join(t.TempDir(), "alice"))
	if err != nil {
		t.Fatal(err)
	}
	alice := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := app.Run(ctx, append([]string{"--kubeconfig", kc, "-n", c.ns}, args...), app.Options{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		return code, out.String(), errOut.String()
	}
	c.createVM("m", "Manual")
	c.createVM("a", "Always")
	vmi := c.createVMI("a", v1.Running)
	c.createLauncherPod(vmi)
	for _, args := range [][]string{
		{"start", "m"},
		{"restart", "a", "--force", "--grace-period=0"},
		{"stop", "a", "--force", "--grace-period=0"},
		{"expose", "vm", "a", "--name", "a-ssh", "--port", "22"},
		{"expose", "vmi", "a", "--name", "a-http", "--port", "80"},
		{"rename", "vm", "m", "m2"}, // m has a Start queued but no VMI: stopped
	} {
		if code, _, errOut := alice(args...); code != 0 {
			t.Errorf("alice %v: %q", args, errOut)
		}
	}
	// pause gets as far as the exec, which only the missing kubelet stops.
	vmi2 := c.createVMI("p", v1.Running)
	c.createLauncherPod(vmi2)
	if code, _, errOut := alice("pause", "vmi", "p"); code != 1 || !strings.Contains(errOut, "no-such-node") || strings.Contains(errOut, "forbidden") {
		t.Errorf("alice pause: %d %q", code, errOut)
	}
}

// console does not wait out its timeout when RBAC refuses it.
func TestConsoleForbiddenFailsFast(t *testing.T) {
	c := setup(t)
	_, kc, err := c.cp.PKI.UserKubeconfig(c.cp.URL, "mallory", "mallory", nil, filepath.Join(t.TempDir(), "mallory"))
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	start := time.Now()
	code := app.Run(context.Background(), []string{"--kubeconfig", kc, "-n", c.ns, "console", "x"}, app.Options{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	if code != 1 || !strings.Contains(errOut.String(), `User "mallory" cannot get resource "virtualmachineinstances"`) {
		t.Errorf("console as mallory: %d %q", code, errOut.String())
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("forbidden console took %s", d)
	}
}

// API warnings reach the user as kubectl shows them ("Warning: …"), not as klog lines.
func TestWarningsPrintedLikeKubectl(t *testing.T) {
	c := setup(t)
	ctx := context.Background()
	_, file, _, _ := runtime.Caller(0)
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "crds", "running-deprecation-policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(raw), "\n---") {
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "ValidatingAdmissionPolicy":
			var p admissionv1.ValidatingAdmissionPolicy
			if err := yaml.Unmarshal([]byte(doc), &p); err != nil {
				t.Fatal(err)
			}
			if _, err := c.kube.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, &p, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		case "ValidatingAdmissionPolicyBinding":
			var b admissionv1.ValidatingAdmissionPolicyBinding
			if err := yaml.Unmarshal([]byte(doc), &b); err != nil {
				t.Fatal(err)
			}
			// Bind the shipped policy to this test's namespace only: the control plane is shared.
			b.Name = "virtctl-test-" + c.ns
			b.Spec.MatchResources = &admissionv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"kubernetes.io/metadata.name": c.ns}}}
			if _, err := c.kube.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, &b, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = c.kube.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(context.Background(), b.Name, metav1.DeleteOptions{})
			})
		}
	}
	c.createVM("old-style", "running=true")
	// A ValidatingAdmissionPolicy prefixes its message ("Validation failed for ValidatingAdmissionPolicy
	// '…' with binding '…': "), so only the start and the end are KubeVirt's.
	const warning = "spec.running is deprecated, please use spec.runStrategy instead.\n"
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, out, errOut := c.virtctl(nil, "stop", "old-style", "--dry-run")
		if code != 0 || out != "Dry Run execution\nVM old-style was scheduled to stop\n" || strings.Contains(errOut, "warnings.go") {
			t.Fatalf("stop: %d %q %q", code, out, errOut)
		}
		if strings.HasPrefix(errOut, "Warning: ") && strings.HasSuffix(errOut, warning) && strings.Count(errOut, "\n") == 1 {
			break
		}
		if errOut != "" || time.Now().After(deadline) {
			t.Fatalf("stderr %q, want %q (the policy should be active within 60s)", errOut, warning)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
