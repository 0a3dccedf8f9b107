package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kvirt/kvirt/tests/testenv"
	"github.com/kvirt/kvirt/vmm"
)

// Guests that need no power button run testguest=hang (halted: no CPU); testguest=button polls its
// power-button register and keeps a host CPU busy while it waits.

// vmSpec renders a VirtualMachine. strategy is the line under spec: ("runStrategy: Always",
// "running: false"). kernel is "testguest" (kvirt's freestanding guest: boots in well under a second)
// or "linux" (kvirt's Linux guest with kvirt-init; ~25 s of boot on PVM hosts); args are its kernel
// arguments (testguest=..., or kvirt-init's kvirt.test=... after the default command line).
type vmSpec struct {
	name, strategy, kernel, args string
	masquerade                   bool
	ports                        []int  // masquerade: forward only these TCP ports (default every port)
	apiVersion                   string // default kubevirt.io/v1
	grace                        int64  // terminationGracePeriodSeconds (default 10)
}

func (s vmSpec) String() string {
	api := s.apiVersion
	if api == "" {
		api = "kubevirt.io/v1"
	}
	image, kernelPath, initrd, memory := "docker-archive:/usr/share/kvirt/e2e/testguest-kernel.tar", "/boot/testguest", "", "64Mi"
	grace := s.grace
	if grace == 0 {
		grace = 10
	}
	args := s.args
	if s.kernel == "linux" {
		image, kernelPath, memory = "docker-archive:/usr/share/kvirt/e2e/linux-kernel.tar", "/boot/vmlinux", "128Mi"
		initrd = "\n              initrdPath: /boot/initramfs.cpio"
		args = vmm.DefaultCmdline + " " + args
	}
	net := "        devices: {autoattachPodInterface: false}\n"
	if s.masquerade {
		var ports []string
		for _, p := range s.ports {
			ports = append(ports, fmt.Sprintf("{port: %d}", p))
		}
		listed := ""
		if len(ports) > 0 {
			listed = ", ports: [" + strings.Join(ports, ", ") + "]"
		}
		net = "        devices:\n          interfaces: [{name: default, masquerade: {}" + listed + "}]\n      networks: [{name: default, pod: {}}]\n"
	}
	return fmt.Sprintf(`apiVersion: %s
kind: VirtualMachine
metadata: {name: %s}
spec:
  %s
  template:
    metadata:
      labels: {e2e.kvirt.io/vm: %s}
    spec:
      terminationGracePeriodSeconds: %d
      domain:
        resources: {requests: {memory: %s}}
        firmware:
          kernelBoot:
            kernelArgs: %q
            container:
              image: %s
              kernelPath: %s%s
%s`, api, s.name, s.strategy, s.name, grace, memory, args, image, kernelPath, initrd, net)
}

// phaseWatch records every (uid, phase) a VMI goes through (kubectl get -w), so short-lived phases
// such as Failed before an Always VM replaces the VMI are seen.
type phaseWatch struct {
	cmd *exec.Cmd
	out testenv.SyncBuffer
}

func (e *env) watchPhases(vmi string) *phaseWatch {
	e.t.Helper()
	w := &phaseWatch{}
	w.cmd = exec.Command(kubectl, "--kubeconfig", e.kubeconfig, "-n", e.ns, "get", "vmi", "--watch",
		"--field-selector", "metadata.name="+vmi, "-o", `jsonpath={.metadata.uid} {.status.phase}{"\n"}`)
	w.cmd.Stdout, w.cmd.Stderr = &w.out, &w.out
	if err := w.cmd.Start(); err != nil {
		e.t.Fatalf("kubectl get -w: %v", err)
	}
	e.t.Cleanup(func() { _ = w.cmd.Process.Kill(); _ = w.cmd.Wait() })
	return w
}

// saw reports whether the VMI with uid was seen in phase.
func (w *phaseWatch) saw(uid, phase string) bool {
	sc := bufio.NewScanner(strings.NewReader(w.out.String()))
	for sc.Scan() {
		if sc.Text() == uid+" "+phase {
			return true
		}
	}
	return false
}

func (e *env) vmiUID(name string) string {
	e.t.Helper()
	uid, err := e.jsonpath("vmi/"+name, "{.metadata.uid}")
	if err != nil || uid == "" {
		e.t.Fatalf("vmi/%s has no UID: %v %s", name, err, uid)
	}
	return uid
}

// waitNewRunning waits for a VMI named name with a UID other than old in phase Running.
func (e *env) waitNewRunning(name, old string, d time.Duration) string {
	e.t.Helper()
	var uid string
	e.eventually(fmt.Sprintf("a new VMI %s (not %s) Running", name, old), d, func() (bool, string) {
		out, err := e.jsonpath("vmi/"+name, "{.metadata.uid} {.status.phase}")
		f := strings.Fields(out)
		if err != nil || len(f) != 2 || f[0] == old {
			return false, out
		}
		uid = f[0]
		return f[1] == "Running", out
	})
	return uid
}

// stillNoVMI checks for a while that the VM has no VMI (it does not restart).
func (e *env) stillNoVMI(name string, d time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if out, _ := e.run(kubectl, "get", "vmi", name, "--ignore-not-found", "-o", "name"); strings.TrimSpace(out) != "" {
			e.t.Fatalf("vm/%s was restarted: %s", name, out)
		}
		time.Sleep(time.Second)
	}
}

// The guest powers off by itself (kvirt-init kvirt.test=poweroff: ACPI S5 after booting) under each run
// strategy; the outcomes are KubeVirt's (BEHAVIOUR.md §1): Always and running (set by virtctl start) →
// the Succeeded VMI is replaced; RerunOnFailure → deleted, stays stopped; Manual and Once → the
// Succeeded VMI is kept and the VM shows Stopped.
func TestGuestPoweroffPerRunStrategy(t *testing.T) {
	t.Parallel()
	const linuxBoot = 6 * time.Minute // Linux on PVM, several booting at once on two shared cores
	cases := []struct {
		name, strategy string
		virtctlStart   bool
		check          func(e *env, name, uid string, w *phaseWatch)
	}{
		{"always", "runStrategy: Always", false, restarted},
		{"running", "running: false", true, restarted},
		{"rerunonfailure", "runStrategy: RerunOnFailure", false, func(e *env, name, uid string, w *phaseWatch) {
			e.waitGone("vmi/"+name, linuxBoot)
			e.waitField("vm/"+name, "{.status.printableStatus}", "Stopped", time.Minute)
			e.stillNoVMI(name, 15*time.Second)
			if !w.saw(uid, "Succeeded") {
				e.t.Errorf("VMI %s was not seen Succeeded before its delete:\n%s", uid, w.out.String())
			}
		}},
		{"manual", "runStrategy: Manual", true, kept},
		{"once", "runStrategy: Once", false, kept},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := setupGuest(t)
			name := "off-" + c.name
			w := e.watchPhases(name)
			e.apply(vmSpec{name: name, strategy: c.strategy, kernel: "linux", args: "kvirt.test=poweroff"}.String())
			if c.virtctlStart {
				e.waitField("vm/"+name, "{.status.printableStatus}", "Stopped", time.Minute)
				e.virtctlOK("start", name)
			}
			e.waitField("vmi/"+name, "{.status.phase}", "Running", 3*time.Minute)
			uid := e.vmiUID(name)
			if c.name == "running" {
				if got, _ := e.jsonpath("vm/"+name, "{.spec.running}"); got != "true" {
					t.Errorf("virtctl start left spec.running %q, want true", got)
				}
			}
			c.check(e, name, uid, w)
		})
	}
}

// restarted: the VMI Succeeded and a new one runs in its place.
func restarted(e *env, name, uid string, w *phaseWatch) {
	e.t.Helper()
	e.waitNewRunning(name, uid, 6*time.Minute)
	if !w.saw(uid, "Succeeded") {
		e.t.Errorf("VMI %s was not seen Succeeded before it was replaced:\n%s", uid, w.out.String())
	}
	e.kubectl("delete", "vm", name, "--wait=false") // the new guest powers off too: stop the loop
}

// kept: the VMI Succeeded and stays; the VM is Stopped and does not start it again.
func kept(e *env, name, uid string, _ *phaseWatch) {
	e.t.Helper()
	e.waitField("vmi/"+name, "{.status.phase}", "Succeeded", 6*time.Minute)
	e.waitField("vm/"+name, "{.status.printableStatus}", "Stopped", time.Minute)
	time.Sleep(10 * time.Second)
	if got, _ := e.jsonpath("vmi/"+name, "{.metadata.uid} {.status.phase}"); got != uid+" Succeeded" {
		e.t.Fatalf("the Succeeded VMI changed: %q, want %q", got, uid+" Succeeded")
	}
}

// The launcher pod is force-deleted under a running guest: the VMI fails (the pod is gone), then
// Always and RerunOnFailure start a new VMI while Manual and Once keep the Failed one.
func TestLauncherPodKilled(t *testing.T) {
	t.Parallel()
	for _, strategy := range []string{"Always", "RerunOnFailure", "Manual", "Once"} {
		t.Run(strategy, func(t *testing.T) {
			t.Parallel()
			e := setupGuest(t)
			name := "kill-" + strings.ToLower(strategy)
			w := e.watchPhases(name)
			e.apply(vmSpec{name: name, strategy: "runStrategy: " + strategy, kernel: "testguest", args: "testguest=hang"}.String())
			if strategy == "Manual" {
				e.waitField("vm/"+name, "{.status.printableStatus}", "Stopped", time.Minute)
				e.virtctlOK("start", name)
			}
			e.waitField("vmi/"+name, "{.status.phase}", "Running", 3*time.Minute)
			uid := e.vmiUID(name)
			e.kubectl("delete", "pod", "-l", "vm.kubevirt.io/name="+name, "--grace-period=0", "--force")
			switch strategy {
			case "Always", "RerunOnFailure":
				e.waitNewRunning(name, uid, 3*time.Minute)
				if !w.saw(uid, "Failed") {
					t.Errorf("VMI %s was not seen Failed before it was replaced:\n%s", uid, w.out.String())
				}
				e.waitField("vm/"+name, "{.status.printableStatus}", "Running", time.Minute)
			default:
				e.waitField("vmi/"+name, "{.status.phase}", "Failed", 2*time.Minute)
				e.waitField("vm/"+name, "{.status.printableStatus}", "Stopped", time.Minute)
				time.Sleep(10 * time.Second)
				if got, _ := e.jsonpath("vmi/"+name, "{.metadata.uid} {.status.phase}"); got != uid+" Failed" {
					t.Fatalf("the Failed VMI changed: %q, want %q", got, uid+" Failed")
				}
			}
		})
	}
}

// A guest that crashes at once under Always: the VM shows CrashLoopBackOff with a start-failure record;
// fixing the template's kernelArgs (an offline change) is picked up by the next start after the backoff,
// which runs, and the record is cleared.
func TestCrashLoopBackOffThenTemplateFix(t *testing.T) {
	t.Parallel()
	e := setupGuest(t)
	e.apply(vmSpec{name: "crashy", strategy: "runStrategy: Always", kernel: "testguest", args: "testguest=crash"}.String())
	e.waitField("vm/crashy", "{.status.printableStatus}", "CrashLoopBackOff", 3*time.Minute)
	if n, _ := e.jsonpath("vm/crashy", "{.status.startFailure.consecutiveFailCount}"); n == "" || n == "0" {
		t.Fatalf("CrashLoopBackOff without a startFailure count: %q", n)
	}
	e.kubectl("patch", "vm", "crashy", "--type=json", "-p",
		`[{"op":"replace","path":"/spec/template/spec/domain/firmware/kernelBoot/kernelArgs","value":"testguest=hang"}]`)
	// Backoff: 10-15 s after the first failure, 40-60 s after the second, 90-135 s after the third.
	e.eventually("a VMI with the fixed kernelArgs Running", 4*time.Minute, func() (bool, string) {
		out, err := e.jsonpath("vmi/crashy", "{.spec.domain.firmware.kernelBoot.kernelArgs} {.status.phase}")
		return err == nil && out == "testguest=hang Running", out
	})
	e.waitField("vm/crashy", "{.status.printableStatus}", "Running", time.Minute)
	e.waitField("vm/crashy", "{.status.startFailure}", "", time.Minute)
}

// kubectl delete vm --cascade=orphan keeps the VMI; creating the VM again adopts that same VMI (same
// UID, same launcher pod, owner reference to the new VM) instead of starting a second one.
func TestOrphanedVMIAdoptedByRecreatedVM(t *testing.T) {
	t.Parallel()
	e := setupGuest(t)
	manifest := vmSpec{name: "adopt", strategy: "runStrategy: Always", kernel: "testguest", args: "testguest=hang"}.String()
	e.apply(manifest)
	e.waitField("vmi/adopt", "{.status.phase}", "Running", 3*time.Minute)
	uid := e.vmiUID("adopt")
	pod := e.launcherPods("adopt")
	if len(pod) != 1 {
		t.Fatalf("launcher pods %v, want one", pod)
	}
	e.kubectl("delete", "vm", "adopt", "--cascade=orphan")
	e.waitGone("vm/adopt", time.Minute)
	e.waitField("vmi/adopt", "{.metadata.ownerReferences}", "", time.Minute)

	e.apply(manifest)
	vmUID, _ := e.jsonpath("vm/adopt", "{.metadata.uid}")
	e.waitField("vmi/adopt", "{.metadata.ownerReferences[0].uid}", vmUID, time.Minute)
	e.waitField("vm/adopt", "{.status.printableStatus}", "Running", time.Minute)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if got := e.vmiUID("adopt"); got != uid {
			t.Fatalf("VMI replaced (%s, was %s) instead of adopted", got, uid)
		}
		if pods := e.launcherPods("adopt"); len(pods) != 1 || pods[0] != pod[0] {
			t.Fatalf("launcher pods %v, want only %s", pods, pod[0])
		}
		time.Sleep(time.Second)
	}
	e.kubectl("delete", "vm", "adopt")
	e.waitGone("vmi/adopt", 2*time.Minute)
}

func (e *env) launcherPods(vm string) []string {
	e.t.Helper()
	out, err := e.run(kubectl, "get", "pods", "-l", "vm.kubevirt.io/name="+vm, "-o", "name")
	if err != nil {
		e.t.Fatalf("kubectl get pods: %v: %s", err, out)
	}
	return strings.Fields(out)
}

// virtctl expose makes Services (ClusterIP and NodePort, and one without --port that takes the port the
// VM declares) whose endpoint is the launcher pod, and a connection from this host to the ClusterIP or
// the node port reaches a server in the guest through the masquerade binding (kvirt-init's serve action
// answers one fixed line). The Services belong to the VM: deleting it deletes them.
func TestExposeReachesGuestThroughService(t *testing.T) {
	t.Parallel()
	e := setupGuest(t)
	e.apply(vmSpec{name: "web", strategy: "runStrategy: Always", kernel: "linux", args: "kvirt.test=net,serve:8080", masquerade: true, ports: []int{8080}}.String())
	e.waitField("vmi/web", "{.status.phase}", "Running", 3*time.Minute)
	e.virtctlOK("expose", "vm", "web", "--name", "web-cip", "--port", "80", "--target-port", "8080")
	e.virtctlOK("expose", "vm", "web", "--name", "web-np", "--port", "8080", "--type", "NodePort")
	if out := e.virtctlOK("expose", "vm", "web", "--name", "web-auto"); !strings.Contains(out, "Service web-auto successfully created for vm web\n") {
		t.Fatalf("expose without --port: %q", out)
	}
	e.eventually("the guest serves on :8080", 6*time.Minute, func() (bool, string) {
		out, err := e.run(kubectl, "logs", "-l", "vm.kubevirt.io/name=web", "-c", "compute", "--tail=-1")
		if strings.Contains(out, "kvirt-guest: error") {
			e.t.Fatalf("guest action failed:\n%s", out)
		}
		return err == nil && strings.Contains(out, "kvirt-guest: serving on :8080"), tailLines(out, 5)
	})
	pods := e.launcherPods("web")
	if len(pods) != 1 {
		t.Fatalf("launcher pods %v, want one", pods)
	}
	podIP, _ := e.jsonpath(pods[0], "{.status.podIP}")
	for _, svc := range []string{"web-cip", "web-np", "web-auto"} {
		e.waitField("endpointslices", fmt.Sprintf(`{.items[?(@.metadata.labels.kubernetes\.io/service-name=="%s")].endpoints[*].addresses[*]}`, svc), podIP, time.Minute)
	}
	clusterIP, _ := e.jsonpath("service/web-cip", "{.spec.clusterIP}")
	nodePort, _ := e.jsonpath("service/web-np", "{.spec.ports[0].nodePort}")
	autoIP, _ := e.jsonpath("service/web-auto", "{.spec.clusterIP}")
	for _, addr := range []string{net.JoinHostPort(clusterIP, "80"), net.JoinHostPort("127.0.0.1", nodePort), net.JoinHostPort(autoIP, "8080")} {
		e.eventually("the guest answers through "+addr, 2*time.Minute, func() (bool, string) {
			line, err := readLine(addr)
			if err != nil {
				return false, err.Error()
			}
			return line == "kvirt-guest: hello from the guest", line
		})
	}
	e.kubectl("delete", "vm", "web", "--wait=false")
	for _, svc := range []string{"web-cip", "web-np", "web-auto"} {
		e.waitGone("service/"+svc, 2*time.Minute)
	}
}

func readLine(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

func tailLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// kvirt runs as deployed by kustomize: the leading virt-controller is a pod on the pod network (not
// hostNetwork) that reaches the apiserver through the kubernetes Service, and holds the Lease.
func TestControllerRunsInCluster(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const podsPath = `jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.status.conditions[?(@.type=="Ready")].status} {.spec.hostNetwork} {.status.containerStatuses[0].restartCount}{"\n"}{end}`
	var pods string
	// The leader can be between Leases (a restarted pod syncs its caches before it is Ready again), so
	// wait for a Ready pod on the pod network that holds the Lease.
	e.eventually("a Ready virt-controller pod on the pod network holds the Lease", 2*time.Minute, func() (bool, string) {
		out, err := e.run(kubectl, "-n", "kubevirt", "get", "pods", "-l", "app.kubernetes.io/name=virt-controller", "-o", podsPath)
		if err != nil {
			return false, out
		}
		pods = out
		holder, err := e.run(kubectl, "-n", "kubevirt", "get", "lease", "virt-controller", "-o", "jsonpath={.spec.holderIdentity}")
		if err != nil {
			return false, holder
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 3 {
				continue
			}
			if len(f) > 3 && f[3] == "true" {
				t.Fatalf("virt-controller pod %s uses hostNetwork", f[0])
			}
			if strings.HasPrefix(holder, f[0]+"_") && f[2] == "True" && strings.HasPrefix(f[1], "10.244.") {
				return true, ""
			}
		}
		return false, fmt.Sprintf("holder %q; pods (name IP Ready hostNetwork restarts):\n%s", holder, out)
	})
	// A restart under the suite's load is worth seeing (why: the last state and the previous log).
	for _, line := range strings.Split(strings.TrimSpace(pods), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] != "0" {
			last, _ := e.run(kubectl, "-n", "kubevirt", "get", "pod", f[0], "-o", "jsonpath={.status.containerStatuses[0].lastState}")
			prev, _ := e.run(kubectl, "-n", "kubevirt", "logs", f[0], "--previous", "--tail=15")
			t.Logf("virt-controller pod %s restarted %s times; last state %s; previous log:\n%s", f[0], f[len(f)-1], last, prev)
		}
	}
}
