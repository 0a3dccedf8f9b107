package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The classic example the KubeVirt way: `kubectl apply -f examples/vm.yaml` (running: false), `virtctl start
// testvm`. The kubelet pulls the demo containerDisk (kvirt.io/demo-disk:dev, only in the node's containerd:
// there is no registry) as an init container of the launcher pod, which copies the disk into the pod; the
// real Linux guest boots (kvirt-guest: ready in the launcher's log) and reads the cloud-init meta-data
// (instance-id = the VMI UID, local-hostname = the VMI name). `virtctl stop` ends it.
func TestExampleVMContainerDiskAndCloudInit(t *testing.T) {
	e := setupGuest(t)
	e.kubectl("apply", "-f", filepath.Join(repoRoot(), "examples", "vm.yaml"))
	e.waitField("vm/testvm", "{.status.printableStatus}", "Stopped", time.Minute)
	e.virtctlOK("start", "testvm")
	e.waitField("vmi/testvm", "{.status.phase}", "Running", 5*time.Minute)
	uid, err := e.jsonpath("vmi/testvm", "{.metadata.uid}")
	if err != nil || uid == "" {
		t.Fatalf("VMI UID: %q %v", uid, err)
	}

	// Pod shape: the helper from the launcher image, then the containerDisk itself as an init container
	// image, both completed; the copy's progress is in its log.
	pod, err := e.jsonpath("pods", "{.items[0].metadata.name}")
	if err != nil || pod == "" {
		t.Fatalf("launcher pod: %q %v", pod, err)
	}
	inits, _ := e.jsonpath("pod/"+pod, `{range .spec.initContainers[*]}{.name}={.image} {end}`)
	if !strings.Contains(inits, "container-disk-binary=") || !strings.Contains(inits, "volumecontainerdisk=kvirt.io/demo-disk:dev") {
		t.Fatalf("launcher pod init containers %q: want container-disk-binary and volumecontainerdisk=kvirt.io/demo-disk:dev", inits)
	}
	states, _ := e.jsonpath("pod/"+pod, `{range .status.initContainerStatuses[*]}{.name}={.state.terminated.reason} {end}`)
	if strings.Count(states, "=Completed") != 2 {
		t.Errorf("init containers did not all complete: %q", states)
	}
	if out := e.kubectl("logs", pod, "-c", "volumecontainerdisk"); !strings.Contains(out, "container-disk: done") {
		t.Errorf("volumecontainerdisk log:\n%s", out)
	}

	want := "kvirt-guest: cidata instance-id=" + uid + " local-hostname=testvm"
	e.eventually("the guest booted from the containerDisk and read its cloud-init meta-data", 6*time.Minute, func() (bool, string) {
		out, err := e.run(kubectl, "logs", pod, "-c", "compute", "--tail=-1")
		// kvirt-init prints the user-data line after the meta-data line: wait for both, or the check below
		// races the guest (CI caught it reading the log between the two lines).
		return err == nil && strings.Contains(out, "kvirt-guest: ready") && strings.Contains(out, want) &&
			strings.Contains(out, "kvirt-guest: cidata user-data bytes="), lastLines(out, 15)
	})
	out := e.kubectl("logs", pod, "-c", "compute", "--tail=-1")
	if strings.Contains(out, "pull ") || strings.Contains(out, "registry") {
		t.Errorf("the launcher tried to pull the image itself:\n%s", lastLines(out, 40))
	}
	if !strings.Contains(out, "kvirt-guest: cidata user-data bytes=") {
		t.Errorf("the guest did not read the user-data:\n%s", lastLines(out, 40))
	}
	e.waitField("vmi/testvm", `{.status.conditions[?(@.type=="Ready")].status}`, "True", 2*time.Minute)
	// The demo disk holds files, no OS: the built-in guest booted, and the VMI says so.
	e.waitField("vmi/testvm", `{.status.conditions[?(@.type=="BootedFromDisk")].reason}`, "NoBootableDisk", time.Minute)

	e.virtctlOK("stop", "testvm")
	e.waitGone("vmi/testvm", 3*time.Minute)
	e.waitField("vm/testvm", "{.status.printableStatus}", "Stopped", time.Minute)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// firmware.kernelBoot.container named by an image the node's containerd holds (no registry, no archive in
// the launcher image): the kubelet pulls it for the kernel-boot init container, which copies the kernel
// into the pod; the launcher boots it.
func TestKernelBootImagePulledByKubelet(t *testing.T) {
	e := setupGuest(t)
	e.apply(`apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: kbvm}
spec:
  runStrategy: Always
  template:
    spec:
      terminationGracePeriodSeconds: 30
      domain:
        resources: {requests: {memory: 64Mi}}
        firmware:
          kernelBoot:
            kernelArgs: testguest=button
            container: {image: "kvirt.io/testguest-kernel:e2e", kernelPath: /boot/testguest}
        devices: {autoattachPodInterface: false}
`)
	e.waitField("vmi/kbvm", "{.status.phase}", "Running", 3*time.Minute)
	pod, err := e.jsonpath("pods", "{.items[0].metadata.name}")
	if err != nil || pod == "" {
		t.Fatalf("launcher pod: %q %v", pod, err)
	}
	states, _ := e.jsonpath("pod/"+pod, `{range .status.initContainerStatuses[*]}{.name}={.image}={.state.terminated.reason} {end}`)
	if !strings.Contains(states, "kernel-boot=kvirt.io/testguest-kernel:e2e=Completed") {
		t.Errorf("kernel-boot init container: %q", states)
	}
	e.eventually("the test guest booted from the kubelet-pulled kernel", 2*time.Minute, func() (bool, string) {
		out, err := e.run(kubectl, "logs", pod, "-c", "compute", "--tail=-1")
		return err == nil && strings.Contains(out, "kvirt-guest: ready"), lastLines(out, 10)
	})
	e.kubectl("delete", "vm", "kbvm")
	e.waitGone("vmi/kbvm", 2*time.Minute)
}
