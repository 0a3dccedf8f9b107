package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/controller"
	"github.com/kvirt/kvirt/controller/controllertest"
	"github.com/kvirt/kvirt/tests/testenv"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
)

// events lists the events of one object ("Type Reason: Message"), oldest first.
func (e *env) events(t *testing.T, kind, name string) []string {
	t.Helper()
	l, err := e.kube.CoreV1().Events(e.ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.kind=" + kind + ",involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	// Recorded events are named <object>.<creation time in hex nanoseconds>: by time, then by name.
	slices.SortStableFunc(l.Items, func(a, b corev1.Event) int {
		if c := a.FirstTimestamp.Compare(b.FirstTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	var out []string
	for _, ev := range l.Items {
		out = append(out, ev.Type+" "+ev.Reason+": "+ev.Message)
	}
	return out
}

// hasEvents waits for the VMI's events to include want, in this order.
func (e *env) hasEvents(t *testing.T, vmi string, want ...string) func() (bool, string) {
	return func() (bool, string) {
		got := e.events(t, "VirtualMachineInstance", vmi)
		i := 0
		for _, ev := range got {
			if i < len(want) && strings.HasPrefix(ev, want[i]) {
				i++
			}
		}
		return i == len(want), fmt.Sprintf("events %q, want %q in order", got, want)
	}
}

func (e *env) launcherPod(t *testing.T, vmi *v1.VirtualMachineInstance) *corev1.Pod {
	t.Helper()
	pods, err := e.kube.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: labels.Set{v1.CreatedByLabel: string(vmi.UID)}.String()})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("launcher pods of %s: %v (err %v)", vmi.Name, pods, err)
	}
	return &pods.Items[0]
}

func (e *env) sentOps(name string) []controller.LauncherOp {
	var ops []controller.LauncherOp
	for _, c := range e.status.Commands(e.ns, name) {
		ops = append(ops, c.Op)
	}
	return ops
}

// exitLauncher is the kubelet's report of a launcher that exited (code 0: the guest was stopped).
func (e *env) exitLauncher(t *testing.T, pod *corev1.Pod, code int32, reason string) {
	t.Helper()
	for i := 0; ; i++ {
		p, err := e.kube.CoreV1().Pods(e.ns).Get(context.Background(), pod.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status.Phase = corev1.PodFailed
		if code == 0 {
			p.Status.Phase = corev1.PodSucceeded
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: controller.LauncherContainerName, Image: p.Spec.Containers[0].Image,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason, FinishedAt: metav1.Now()}}}}
		if _, err = e.kube.CoreV1().Pods(e.ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err == nil {
			return
		}
		if i == 10 {
			t.Fatalf("pod status: %v", err)
		}
	}
}

// TestForceStopCutsTheShutdown is the acceptance of issue 17's force stop, with the test as kubelet and
// launcher: a VM with terminationGracePeriodSeconds 600 whose guest ignores the power button is stopped
// (its launcher is asked to shut down with 600 s: ShuttingDown; its pod deleted with 615 s), then force
// stopped as `virtctl stop --force --grace-period=0` does (the VMI's grace period patched to 0): the
// launcher is told to stop the guest now (Deleted "VirtualMachineInstance stopping"), the pod's deletion is
// cut to GraceMargin, and the VMI is gone within 30 s, with KubeVirt's events in order.
func TestForceStopCutsTheShutdown(t *testing.T) {
	e := start(t)
	vm := controllertest.VM("force", v1.RunStrategyAlways)
	g := int64(600)
	vm.Spec.Template.Spec.TerminationGracePeriodSeconds = &g
	vm.Spec.Template.ObjectMeta.Labels[slowKillLabel] = "true"
	e.createVM(t, vm)
	vmi := e.runGuest(t, "force")
	testenv.Eventually(t, "Created then Started", 30*time.Second, e.hasEvents(t, "force",
		"Normal Created: VirtualMachineInstance defined.", "Normal Started: VirtualMachineInstance started."))
	pod := e.launcherPod(t, vmi)
	e.status.Set(e.ns, "force", controller.LauncherState{Phase: controller.GuestRunning, GracePeriodSeconds: &g})

	e.setRunStrategy(t, "force", v1.RunStrategyHalted) // virtctl stop
	testenv.Eventually(t, "graceful shutdown asked for, ShuttingDown", 30*time.Second, func() (bool, string) {
		ok, msg := e.hasEvents(t, "force", "Normal ShuttingDown: Signaled Graceful Shutdown")()
		return ok && slices.Equal(e.sentOps("force"), []controller.LauncherOp{controller.OpShutdown}), fmt.Sprintf("%s; sent %v", msg, e.sentOps("force"))
	})
	testenv.Eventually(t, "pod terminating with its own grace period", 30*time.Second, func() (bool, string) {
		p, err := e.kube.CoreV1().Pods(e.ns).Get(context.Background(), pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.DeletionGracePeriodSeconds != nil && *p.DeletionGracePeriodSeconds == 615, fmt.Sprintf("deletion grace %v", p.DeletionGracePeriodSeconds)
	})
	e.status.Set(e.ns, "force", controller.LauncherState{Phase: controller.GuestRunning, ShuttingDown: true, GracePeriodSeconds: &g})

	forcedAt := time.Now()
	patch := `[{"op":"test","path":"/spec/terminationGracePeriodSeconds","value":600},{"op":"replace","path":"/spec/terminationGracePeriodSeconds","value":0}]`
	if _, err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Patch(context.Background(), "force", types.JSONPatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the launcher told to stop now, pod deletion cut to 15 s", 30*time.Second, func() (bool, string) {
		p, err := e.kube.CoreV1().Pods(e.ns).Get(context.Background(), pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ops := e.sentOps("force")
		return slices.Equal(ops, []controller.LauncherOp{controller.OpShutdown, controller.OpStop}) &&
				p.DeletionGracePeriodSeconds != nil && *p.DeletionGracePeriodSeconds == controller.GraceMargin,
			fmt.Sprintf("sent %v, deletion grace %v", ops, p.DeletionGracePeriodSeconds)
	})
	// The launcher stops the guest and exits 0.
	e.status.Set(e.ns, "force", controller.LauncherState{Phase: controller.GuestSucceeded, Reason: "Destroyed", Message: "stopped at once (grace period 0)"})
	testenv.Eventually(t, "VMI Succeeded", 30*time.Second, e.vmiPhase("force", v1.Succeeded))
	e.exitLauncher(t, pod, 0, "Completed")
	testenv.Eventually(t, "VMI gone", 30*time.Second, e.vmiGone("force"))
	if d := time.Since(forcedAt); d > 30*time.Second {
		t.Fatalf("the force-stopped VMI took %s to go", d)
	}
	testenv.Eventually(t, "virt-handler's events in order", 30*time.Second, e.hasEvents(t, "force",
		"Normal ShuttingDown: Signaled Graceful Shutdown", "Normal Deleted: VirtualMachineInstance stopping", "Normal Deleted: Signaled Deletion",
		"Normal Stopped: The VirtualMachineInstance was shut down."))
	if got := e.sentOps("force"); len(got) != 2 {
		t.Fatalf("launcher requests %v, want each once", got)
	}
}

// A VMI deleted with terminationGracePeriodSeconds 5 whose guest powers off: ShuttingDown, then Deleted.
func TestShuttingDownThenDeleted(t *testing.T) {
	e := start(t)
	vmi := controllertest.VMI("tgps5")
	g := int64(5)
	vmi.Spec.TerminationGracePeriodSeconds = &g
	vmi.Labels = map[string]string{slowKillLabel: "true"}
	if _, err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Create(context.Background(), vmi, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	running := e.runGuest(t, "tgps5")
	pod := e.launcherPod(t, running)
	if err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Delete(context.Background(), "tgps5", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "ShuttingDown", 30*time.Second, e.hasEvents(t, "tgps5", "Normal ShuttingDown: Signaled Graceful Shutdown"))
	if c := e.status.Commands(e.ns, "tgps5"); len(c) != 1 || c[0].Op != controller.OpShutdown || c[0].Grace != 5*time.Second {
		t.Fatalf("launcher requests %+v, want a shutdown with 5 s", c)
	}
	e.status.Set(e.ns, "tgps5", controller.LauncherState{Phase: controller.GuestSucceeded, Reason: "Shutdown"})
	testenv.Eventually(t, "VMI Succeeded", 30*time.Second, e.vmiPhase("tgps5", v1.Succeeded))
	e.exitLauncher(t, pod, 0, "Completed")
	testenv.Eventually(t, "VMI gone", 30*time.Second, e.vmiGone("tgps5"))
	testenv.Eventually(t, "ShuttingDown then Deleted", 30*time.Second, e.hasEvents(t, "tgps5",
		"Normal ShuttingDown: Signaled Graceful Shutdown", "Normal Deleted: Signaled Deletion"))
}

// A launcher killed under a running guest (the kubelet reports its container OOMKilled, exit 137, and the
// launcher never said why): the VMI fails with the container's reason and gets the Warning Stopped.
func TestKilledLauncherStoppedWarning(t *testing.T) {
	e := start(t)
	e.createVM(t, controllertest.VM("killed", v1.RunStrategyManual))
	e.addRequests(t, "killed", []v1.VirtualMachineStateChangeRequest{{Action: v1.StartRequest}})
	vmi := e.runGuest(t, "killed")
	e.exitLauncher(t, e.launcherPod(t, vmi), 137, "OOMKilled")
	testenv.Eventually(t, "VMI Failed with OOMKilled", 30*time.Second, func() (bool, string) {
		v, err := e.getVMI("killed")
		if err != nil {
			return false, err.Error()
		}
		return v.Status.Phase == v1.Failed && v.Status.Reason == "OOMKilled", fmt.Sprintf("phase %s reason %q", v.Status.Phase, v.Status.Reason)
	})
	testenv.Eventually(t, "Warning Stopped", 30*time.Second, e.hasEvents(t, "killed", "Warning Stopped: The VirtualMachineInstance crashed. (OOMKilled)"))
}

// A launcher that cannot be reached: virt-handler's SyncFailed warning with the error, and the VMI's
// deletion goes on without it (the pod's SIGTERM is the launcher's only word).
func TestUnreachableLauncherSyncFailed(t *testing.T) {
	e := start(t)
	if _, err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Create(context.Background(), controllertest.VMI("mute"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.runGuest(t, "mute")
	e.status.FailCommands(errors.New("connection refused"))
	t.Cleanup(func() { e.status.FailCommands(nil) })
	if err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Delete(context.Background(), "mute", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "SyncFailed", 30*time.Second, e.hasEvents(t, "mute", "Warning SyncFailed: launcher Shutdown (grace period 30s): connection refused"))
	testenv.Eventually(t, "VMI gone", 30*time.Second, e.vmiGone("mute"))
	if evs := e.events(t, "VirtualMachineInstance", "mute"); slices.ContainsFunc(evs, func(s string) bool { return strings.Contains(s, "ShuttingDown") }) {
		t.Fatalf("ShuttingDown for a shutdown that did not reach the launcher: %q", evs)
	}
}

// RestartRequired: a template change on a running VM sets it (observedGeneration behind desiredGeneration);
// a restart (virtctl restart: Stop for the VMI's UID, then Start) runs a new VMI from the new template and
// clears it.
func TestRestartRequiredUntilRestart(t *testing.T) {
	e := start(t)
	e.createVM(t, controllertest.VM("rr", v1.RunStrategyAlways))
	old := e.runGuest(t, "rr")
	patch := `{"spec":{"template":{"spec":{"domain":{"memory":{"guest":"128Mi"}}}}}}`
	if _, err := e.kv.KubevirtV1().VirtualMachines(e.ns).Patch(context.Background(), "rr", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "RestartRequired, generations apart", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "rr")
		c := vm.Status.Condition(v1.VirtualMachineRestartRequired)
		return c != nil && c.Status == corev1.ConditionTrue && c.Message == "a non-live-updatable field was changed in the template spec" &&
				vm.Status.DesiredGeneration == vm.Generation && vm.Status.ObservedGeneration < vm.Generation,
			fmt.Sprintf("generation %d status %+v", vm.Generation, vm.Status)
	})
	e.addRequests(t, "rr", []v1.VirtualMachineStateChangeRequest{{Action: v1.StopRequest, UID: &old.UID}, {Action: v1.StartRequest}})
	testenv.Eventually(t, "a new VMI", 30*time.Second, func() (bool, string) {
		v, err := e.getVMI("rr")
		if err != nil {
			return false, err.Error()
		}
		return v.UID != old.UID, "old VMI " + string(v.UID)
	})
	neu := e.runGuest(t, "rr")
	if m := neu.Spec.Domain.Memory; m == nil || m.Guest == nil || m.Guest.Cmp(resource.MustParse("128Mi")) != 0 {
		t.Fatalf("the new VMI's memory %+v, want the template's 128Mi", m)
	}
	testenv.Eventually(t, "RestartRequired cleared, generations equal", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "rr")
		return vm.Status.Condition(v1.VirtualMachineRestartRequired) == nil &&
			vm.Status.ObservedGeneration == vm.Generation && vm.Status.DesiredGeneration == vm.Generation, fmt.Sprintf("generation %d status %+v", vm.Generation, vm.Status)
	})
}
