package e2e

import (
	"strings"
	"testing"
	"time"
)

// vmiEventReasons lists the reasons of the VMI's events, oldest first.
func (e *env) vmiEventReasons(name string) string {
	out, _ := e.run(kubectl, "get", "events", "--field-selector", "involvedObject.kind=VirtualMachineInstance,involvedObject.name="+name,
		"--sort-by=.metadata.creationTimestamp", "-o", `jsonpath={range .items[*]}{.reason}:{.message}{"\n"}{end}`)
	return out
}

// inOrder reports whether lines holds each of want (a prefix of a line) in this order.
func inOrder(lines string, want ...string) bool {
	i := 0
	for _, l := range strings.Split(lines, "\n") {
		if i < len(want) && strings.HasPrefix(l, want[i]) {
			i++
		}
	}
	return i == len(want)
}

// Issue 17's acceptance: terminationGracePeriodSeconds 600, a guest that ignores the power button
// (testguest=hang), `virtctl stop --force --grace-period=0`: the VMI is gone within 30 s (the controller
// tells the launcher to stop the guest now and cuts the pod's deletion), with virt-handler's Deleted event.
func TestForceStopWithinThirtySeconds(t *testing.T) {
	t.Parallel()
	e := setupGuest(t)
	e.apply(vmSpec{name: "force", strategy: "runStrategy: Always", kernel: "testguest", args: "testguest=hang", grace: 600}.String())
	e.waitField("vmi/force", "{.status.phase}", "Running", 3*time.Minute)
	e.virtctlOK("stop", "force")
	e.eventually("graceful shutdown signalled (the guest ignores it)", time.Minute, func() (bool, string) {
		evs := e.vmiEventReasons("force")
		return inOrder(evs, "ShuttingDown:Signaled Graceful Shutdown"), evs
	})
	start := time.Now()
	e.virtctlOK("stop", "force", "--force", "--grace-period=0")
	e.waitGone("vmi/force", 30*time.Second)
	t.Logf("force-stopped VMI gone after %s", time.Since(start).Round(time.Second))
	e.eventually("ShuttingDown, then Deleted (stopping)", 30*time.Second, func() (bool, string) {
		evs := e.vmiEventReasons("force")
		return inOrder(evs, "ShuttingDown:Signaled Graceful Shutdown", "Deleted:VirtualMachineInstance stopping"), evs
	})
	e.waitField("vm/force", "{.status.printableStatus}", "Stopped", time.Minute)
}

// A VMI deleted with terminationGracePeriodSeconds 5 whose guest honours the power button
// (testguest=button): `kubectl get events` shows ShuttingDown, then Deleted; Created and Started came first.
func TestShuttingDownThenDeletedEvents(t *testing.T) {
	t.Parallel()
	e := setupGuest(t)
	e.apply(vmSpec{name: "tgps5", strategy: "runStrategy: Manual", kernel: "testguest", args: "testguest=button", grace: 5}.String())
	e.waitField("vm/tgps5", "{.status.printableStatus}", "Stopped", time.Minute)
	e.virtctlOK("start", "tgps5")
	e.waitField("vmi/tgps5", "{.status.phase}", "Running", 3*time.Minute)
	e.kubectl("delete", "vmi", "tgps5", "--wait=false")
	e.waitGone("vmi/tgps5", time.Minute)
	e.eventually("Created, Started, ShuttingDown, Deleted", 30*time.Second, func() (bool, string) {
		evs := e.vmiEventReasons("tgps5")
		return inOrder(evs, "Created:VirtualMachineInstance defined.", "Started:", "ShuttingDown:Signaled Graceful Shutdown", "Deleted:"), evs
	})
}

// A template change on a running VM sets RestartRequired (observedGeneration behind desiredGeneration);
// `virtctl restart` runs a new VMI with the change and clears it.
func TestRestartRequiredClearedByRestart(t *testing.T) {
	t.Parallel()
	e := setupGuest(t)
	e.apply(vmSpec{name: "rr", strategy: "runStrategy: Always", kernel: "testguest", args: "testguest=hang"}.String())
	e.waitField("vmi/rr", "{.status.phase}", "Running", 3*time.Minute)
	old := e.vmiUID("rr")
	e.waitField("vm/rr", `{.status.conditions[?(@.type=="RestartRequired")].status}`, "", time.Minute)
	e.kubectl("patch", "vm", "rr", "--type=json", "-p",
		`[{"op":"replace","path":"/spec/template/spec/domain/firmware/kernelBoot/kernelArgs","value":"testguest=hang rr=1"}]`)
	e.waitField("vm/rr", `{.status.conditions[?(@.type=="RestartRequired")].status}`, "True", time.Minute)
	e.eventually("observedGeneration behind desiredGeneration", time.Minute, func() (bool, string) {
		out, err := e.jsonpath("vm/rr", "{.status.observedGeneration} {.status.desiredGeneration} {.metadata.generation}")
		f := strings.Fields(out)
		return err == nil && len(f) == 3 && f[0] != f[1] && f[1] == f[2], out
	})
	e.virtctlOK("restart", "rr")
	e.waitNewRunning("rr", old, 3*time.Minute)
	e.waitField("vmi/rr", "{.spec.domain.firmware.kernelBoot.kernelArgs}", "testguest=hang rr=1", time.Minute)
	e.waitField("vm/rr", `{.status.conditions[?(@.type=="RestartRequired")].status}`, "", time.Minute)
	e.eventually("observedGeneration == desiredGeneration == generation", time.Minute, func() (bool, string) {
		out, err := e.jsonpath("vm/rr", "{.status.observedGeneration} {.status.desiredGeneration} {.metadata.generation}")
		f := strings.Fields(out)
		return err == nil && len(f) == 3 && f[0] == f[1] && f[1] == f[2], out
	})
}
