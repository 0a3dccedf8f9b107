// Package e2e drives a real cluster (`just cluster-up`) the way a user does: kubectl and our virtctl
// against build/cluster/kubeconfig, with kvirt deployed by `kubectl apply -k tests/e2e/deploy`. `just e2e`
// does all of it. The tests run only with KVIRT_E2E=1 (they create namespaces and VMs in whatever cluster
// the kubeconfig names); without a cluster they skip, or fail under KVIRT_REQUIRE_CLUSTER=1.
package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvirt/kvirt/tests/harness"
	"github.com/kvirt/kvirt/tests/testenv"
)

// kubectl is the kubectl on PATH (.ci/install builds one when the machine has none).
const kubectl = "kubectl"

// env is one test's view of the cluster: its kubeconfig, a fresh namespace and the virtctl binary.
type env struct {
	t          *testing.T
	kubeconfig string
	ns         string
	virtctl    string
}

var (
	virtctlOnce sync.Once
	virtctlPath string
	virtctlErr  error
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// setupGuest is setup for a test that boots a guest: it needs a node that advertises
// devices.kubevirt.io/kvm. Without one the test skips, saying so (testenv.SkipNeedsKVM), or fails under
// KVIRT_REQUIRE_KVM=1.
func setupGuest(t *testing.T) *env {
	t.Helper()
	e := setup(t)
	guestNodesOnce.Do(func() { guestNodesErr = guestNodes(e) })
	if guestNodesErr != nil {
		if testenv.Required() {
			t.Fatalf("%v although KVIRT_REQUIRE_KVM=1", guestNodesErr)
		}
		t.Skipf("%s %v", testenv.SkipNeedsKVM, guestNodesErr)
	}
	return e
}

var (
	guestNodesOnce sync.Once
	guestNodesErr  error
)

// guestNodes returns an error unless some node of the cluster advertises a kvm device.
func guestNodes(e *env) error {
	out, err := e.run(kubectl, "get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.allocatable.devices\.kubevirt\.io/kvm}{" "}{end}`)
	if err != nil {
		return fmt.Errorf("kubectl get nodes: %v: %s", err, out)
	}
	for _, f := range strings.Fields(out) {
		if _, n, _ := strings.Cut(f, "="); n != "" && n != "0" {
			return nil
		}
	}
	return fmt.Errorf("no node advertises devices.kubevirt.io/kvm (nodes: %s): the cluster's hosts have no usable /dev/kvm", strings.TrimSpace(out))
}

func setup(t *testing.T) *env {
	t.Helper()
	if os.Getenv("KVIRT_E2E") != "1" {
		t.Skip("end-to-end test: set KVIRT_E2E=1 (or run `just e2e`) against a cluster from `just cluster-up`")
	}
	_, kubeconfig := harness.RunningCluster(t)
	virtctlOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kvirt-e2e-")
		if err != nil {
			virtctlErr = err
			return
		}
		virtctlPath = filepath.Join(dir, "virtctl")
		cmd := exec.Command("go", "build", "-o", virtctlPath, "./cmd/virtctl")
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			virtctlErr = fmt.Errorf("go build ./cmd/virtctl: %v\n%s", err, out)
		}
	})
	if virtctlErr != nil {
		t.Fatal(virtctlErr)
	}
	e := &env{t: t, kubeconfig: kubeconfig, virtctl: virtctlPath, ns: namespaceFor(t.Name(), time.Now().UnixNano())}
	e.kubectl("create", "namespace", e.ns)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := e.run(kubectl, "get", "vm,vmi,pods,events", "-o", "wide")
			t.Logf("namespace %s at failure:\n%s", e.ns, out)
			// Last, as CI keeps the tail of a failure: the VMIs' phase history and the controller's log
			// lines about this namespace.
			out, _ = e.run(kubectl, "get", "vmi", "-o", `jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.phase} {.status.reason} {.status.phaseTransitionTimestamps}{"\n"}{end}`)
			t.Logf("VMIs: %s", out)
			logs, _ := e.run(kubectl, "logs", "-n", "kubevirt", "-l", "kubevirt.io=virt-controller", "--tail=-1")
			var mine []string
			for _, l := range strings.Split(logs, "\n") {
				if strings.Contains(l, e.ns) {
					mine = append(mine, l)
				}
			}
			if len(mine) > 60 {
				mine = mine[len(mine)-60:]
			}
			t.Logf("virt-controller log lines for %s:\n%s", e.ns, strings.Join(mine, "\n"))
		}
		e.run(kubectl, "delete", "namespace", e.ns, "--wait=false")
	})
	return e
}

// namespaceFor makes a valid, unique namespace name (DNS label) from a test name.
func namespaceFor(test string, n int64) string {
	b := []byte(strings.ToLower(test))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			b[i] = '-'
		}
	}
	name := string(b)
	if len(name) > 50 {
		name = name[len(name)-50:]
	}
	return strings.Trim(fmt.Sprintf("e2e-%s-%d", strings.Trim(name, "-"), n%100000), "-")
}

// run runs a command with the kubeconfig and namespace; it returns the combined output.
func (e *env) run(bin string, args ...string) (string, error) {
	full := append([]string{"--kubeconfig", e.kubeconfig, "-n", e.ns}, args...)
	cmd := exec.Command(bin, full...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (e *env) kubectl(args ...string) string {
	e.t.Helper()
	out, err := e.run(kubectl, args...)
	if err != nil {
		e.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) virtctlOK(args ...string) string {
	e.t.Helper()
	out, err := e.run(e.virtctl, args...)
	if err != nil {
		e.t.Fatalf("virtctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) apply(manifest string) {
	e.t.Helper()
	cmd := exec.Command(kubectl, "--kubeconfig", e.kubeconfig, "-n", e.ns, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		e.t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

// jsonpath returns `kubectl get <obj> -o jsonpath=<path>` (empty and the error text when it fails).
func (e *env) jsonpath(obj, path string) (string, error) {
	out, err := e.run(kubectl, "get", obj, "-o", "jsonpath="+path)
	return strings.TrimSpace(out), err
}

// eventually polls cond (every second) until it returns true or d passes; what names the wait.
func (e *env) eventually(what string, d time.Duration, cond func() (bool, string)) {
	e.t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	last := ""
	for {
		ok, state := cond()
		if ok {
			e.t.Logf("%s (after %s)", what, time.Since(start).Round(time.Second))
			return
		}
		last = state
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not within %v; last seen: %s", what, d, last)
		}
		time.Sleep(time.Second)
	}
}

func (e *env) waitField(obj, path, want string, d time.Duration) {
	e.t.Helper()
	e.eventually(fmt.Sprintf("%s %s == %q", obj, path, want), d, func() (bool, string) {
		got, err := e.jsonpath(obj, path)
		if err != nil {
			return false, got
		}
		return got == want, got
	})
}

func (e *env) waitGone(obj string, d time.Duration) {
	e.t.Helper()
	e.eventually(obj+" gone", d, func() (bool, string) {
		out, err := e.run(kubectl, "get", obj, "--ignore-not-found", "-o", "name")
		return err == nil && strings.TrimSpace(out) == "", out
	})
}

// The classic example, created stopped, makes no VMI; its printable status is Stopped.
func TestExampleVMStoppedHasNoVMI(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"vm.yaml", "vm-v1alpha3.yaml"} {
		t.Run(f, func(t *testing.T) {
			t.Parallel()
			e := setup(t)
			e.kubectl("apply", "-f", filepath.Join(repoRoot(), "examples", f))
			name := "testvm"
			if f == "vm-v1alpha3.yaml" {
				name = "testvm-v1alpha3"
			}
			e.waitField("vm/"+name, "{.status.printableStatus}", "Stopped", 60*time.Second)
			if out, _ := e.run(kubectl, "get", "vmi", name, "--ignore-not-found", "-o", "name"); strings.TrimSpace(out) != "" {
				t.Fatalf("a stopped VM has a VMI: %s", out)
			}
			if out := e.kubectl("get", "vms"); !strings.Contains(out, name) || !strings.Contains(out, "Stopped") {
				t.Fatalf("kubectl get vms:\n%s", out)
			}
		})
	}
}

// testGuestVM boots kvirt's freestanding test guest (prints `kvirt-guest: ready`, waits for the ACPI
// power button, powers off) from an image archive inside the e2e launcher image (no registry needed).
const testGuestVM = `apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: %s}
spec:
  running: false
  template:
    spec:
      terminationGracePeriodSeconds: 30
      domain:
        resources: {requests: {memory: 64Mi}}
        firmware:
          kernelBoot:
            kernelArgs: testguest=button
            container:
              image: docker-archive:/usr/share/kvirt/e2e/testguest-kernel.tar
              kernelPath: /boot/testguest
        devices: {autoattachPodInterface: false}
`

// start → Running and Ready with the guest's boot line in the launcher's log; pause → Paused; unpause →
// Running; stop → VMI gone, VM Stopped. The same with the manifest in kubevirt.io/v1alpha3.
func TestVMStartPauseUnpauseStop(t *testing.T) {
	t.Parallel()
	for _, api := range []string{"v1", "v1alpha3"} {
		t.Run(api, func(t *testing.T) {
			t.Parallel()
			startPauseUnpauseStop(t, strings.Replace(fmt.Sprintf(testGuestVM, "tg"), "kubevirt.io/v1\n", "kubevirt.io/"+api+"\n", 1))
		})
	}
}

func startPauseUnpauseStop(t *testing.T, manifest string) {
	e := setupGuest(t)
	e.apply(manifest)
	if api, _ := e.jsonpath("vm/tg", "{.apiVersion}"); api == "" {
		t.Fatalf("vm/tg not readable after apply")
	}
	e.waitField("vm/tg", "{.status.printableStatus}", "Stopped", 60*time.Second)

	e.virtctlOK("start", "tg")
	e.waitField("vmi/tg", "{.status.phase}", "Running", 3*time.Minute)
	e.waitField("vm/tg", "{.status.printableStatus}", "Running", time.Minute)
	e.waitField("vm/tg", `{.status.conditions[?(@.type=="Ready")].status}`, "True", time.Minute)
	e.eventually("launcher pod log shows the guest's boot line", time.Minute, func() (bool, string) {
		out, err := e.run(kubectl, "logs", "-l", "vm.kubevirt.io/name=tg", "-c", "compute", "--tail=-1")
		return err == nil && strings.Contains(out, "kvirt-guest: ready"), out
	})
	if out := e.kubectl("get", "vms"); !strings.Contains(out, "Running") {
		t.Errorf("kubectl get vms does not say Running:\n%s", out)
	}

	e.virtctlOK("pause", "vm", "tg")
	e.waitField("vmi/tg", `{.status.conditions[?(@.type=="Paused")].status}`, "True", time.Minute)
	e.waitField("vm/tg", "{.status.printableStatus}", "Paused", time.Minute)
	e.virtctlOK("unpause", "vm", "tg")
	e.waitField("vm/tg", "{.status.printableStatus}", "Running", time.Minute)

	e.virtctlOK("stop", "tg")
	e.waitGone("vmi/tg", 2*time.Minute)
	e.waitField("vm/tg", "{.status.printableStatus}", "Stopped", time.Minute)
}

// runStrategy Always: deleting the VMI makes the VM controller create a new one (a new UID).
func TestAlwaysRecreatesDeletedVMI(t *testing.T) {
	t.Parallel()
	e := setupGuest(t)
	e.apply(strings.Replace(fmt.Sprintf(testGuestVM, "tga"), "running: false", "running: true", 1))
	e.waitField("vmi/tga", "{.status.phase}", "Running", 3*time.Minute)
	uid, _ := e.jsonpath("vmi/tga", "{.metadata.uid}")
	e.kubectl("delete", "vmi", "tga", "--wait=false")
	e.eventually("a new VMI runs", 3*time.Minute, func() (bool, string) {
		out, err := e.jsonpath("vmi/tga", "{.metadata.uid} {.status.phase}")
		return err == nil && out != "" && !strings.HasPrefix(out, uid) && strings.HasSuffix(out, "Running"), out
	})
	e.kubectl("delete", "vm", "tga")
	e.waitGone("vmi/tga", 2*time.Minute)
}

func TestNamespaceFor(t *testing.T) {
	for _, name := range []string{"TestExampleVMStoppedHasNoVMI/vm-v1alpha3.yaml", "T", strings.Repeat("Long_Name/", 20)} {
		ns := namespaceFor(name, 1234567)
		if len(ns) > 63 || strings.Trim(ns, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" || strings.HasPrefix(ns, "-") || strings.HasSuffix(ns, "-") {
			t.Errorf("namespaceFor(%q) = %q: not a DNS label", name, ns)
		}
	}
}

// virtctl console reaches the guest's serial console through kubelet exec into the launcher; a
// graceful `virtctl stop` shows on it (the test guest prints the power button) and ends the session.
func TestConsoleSeesGracefulStop(t *testing.T) {
	t.Parallel()
	e := setupGuest(t)
	e.apply(strings.Replace(fmt.Sprintf(testGuestVM, "tgc"), "running: false", "running: true", 1))
	e.waitField("vmi/tgc", "{.status.phase}", "Running", 3*time.Minute)
	e.waitField("vmi/tgc", `{.status.conditions[?(@.type=="Ready")].status}`, "True", time.Minute)
	cmd := exec.Command(e.virtctl, "--kubeconfig", e.kubeconfig, "-n", e.ns, "console", "tgc")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	}()
	e.eventually("virtctl console connected", time.Minute, func() (bool, string) {
		return strings.Contains(out.String(), "Successfully connected to tgc console"), out.String()
	})
	e.virtctlOK("stop", "tgc")
	e.eventually("the console shows the guest's graceful shutdown", time.Minute, func() (bool, string) {
		return strings.Contains(out.String(), "kvirt-testguest: power button"), out.String()
	})
	select {
	case <-exited:
	case <-time.After(time.Minute):
		t.Fatalf("virtctl console still attached a minute after the guest powered off:\n%s", out.String())
	}
	e.waitGone("vmi/tgc", 2*time.Minute)
}

// kubectl delete vm --cascade=orphan leaves the VMI running without its owner; a foreground delete of a
// running VM removes its VMI first.
func TestDeleteCascadeOrphanAndForeground(t *testing.T) {
	t.Parallel()
	e := setupGuest(t)
	e.apply(strings.Replace(fmt.Sprintf(testGuestVM, "tgo"), "running: false", "running: true", 1))
	e.waitField("vmi/tgo", "{.status.phase}", "Running", 3*time.Minute)
	e.kubectl("delete", "vm", "tgo", "--cascade=orphan")
	e.waitGone("vm/tgo", time.Minute)
	e.waitField("vmi/tgo", "{.metadata.ownerReferences}", "", time.Minute)
	if phase, _ := e.jsonpath("vmi/tgo", "{.status.phase}"); phase != "Running" {
		t.Fatalf("orphaned VMI phase %q, want Running", phase)
	}
	e.kubectl("delete", "vmi", "tgo")
	e.waitGone("vmi/tgo", 2*time.Minute)

	e.apply(strings.Replace(fmt.Sprintf(testGuestVM, "tgf"), "running: false", "running: true", 1))
	e.waitField("vmi/tgf", "{.status.phase}", "Running", 3*time.Minute)
	e.kubectl("delete", "vm", "tgf", "--cascade=foreground", "--timeout=2m")
	e.waitGone("vmi/tgf", time.Minute)
	e.waitGone("vm/tgf", time.Minute)
}
// A VM whose pod no node can hold shows KubeVirt's ErrorUnschedulable with the scheduler's reason on the
// VMI's PodScheduled condition, and stops cleanly. It boots no guest, so it runs on hosts without KVM.
func TestUnschedulableVMShowsErrorUnschedulable(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.apply(strings.NewReplacer("running: false", "running: true", "memory: 64Mi", "memory: 64Ti").Replace(fmt.Sprintf(testGuestVM, "big")))
	e.waitField("vm/big", "{.status.printableStatus}", "ErrorUnschedulable", 2*time.Minute)
	e.waitField("vmi/big", "{.status.phase}", "Scheduling", time.Minute)
	e.waitField("vmi/big", `{.status.conditions[?(@.type=="PodScheduled")].reason}`, "Unschedulable", time.Minute)
	if msg, _ := e.jsonpath("vmi/big", `{.status.conditions[?(@.type=="PodScheduled")].message}`); !strings.Contains(msg, "Insufficient memory") {
		t.Errorf("PodScheduled message %q does not give the scheduler's reason (Insufficient memory)", msg)
	}
	if out := e.kubectl("get", "vms"); !strings.Contains(out, "ErrorUnschedulable") {
		t.Errorf("kubectl get vms does not say ErrorUnschedulable:\n%s", out)
	}
	e.virtctlOK("stop", "big")
	e.waitGone("vmi/big", 2*time.Minute)
	e.waitField("vm/big", "{.status.printableStatus}", "Stopped", time.Minute)
}
