package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher"
	"github.com/kvirt/kvirt/tests/testenv"
	"sigs.k8s.io/yaml"
)

// Issue 14's acceptance on the local cluster: a user's OS (the Debian 12 containerDisk built by `just
// os-images`, imported into the node's containerd as kvirt.io/debian-containerdisk:12) boots from its own
// disk with real cloud-init, a login on the serial console and SSH. On PVM hosts a distribution boots in
// minutes (every guest kernel instruction is interpreted): the deadlines below are generous.

// DebianContainerDisk is the Debian 12 containerDisk (the qcow2 under /disk/).
const DebianContainerDisk = "kvirt.io/debian-containerdisk:12"

const (
	osBootTimeout = 40 * time.Minute // exec → cloud-init done, PVM worst case
	osStopTimeout = 5 * time.Minute
)

// vmCirros is KubeVirt's classic vm-cirros example with only the image name changed (and, for the
// acceptance items that need them, accessCredentials and a data disk appended by the tests).
func vmCirros(name, extraSpec, extraDisks, extraVolumes string) string {
	return fmt.Sprintf(`apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  labels:
    kubevirt.io/vm: %[1]s
  name: %[1]s
spec:
  running: false
  template:
    metadata:
      labels:
        kubevirt.io/vm: %[1]s
    spec:
      domain:
        devices:
          disks:
          - disk:
              bus: virtio
            name: containerdisk
          - disk:
              bus: virtio
            name: cloudinitdisk
%[4]s          interfaces:
          - name: default
            masquerade: {}
        resources:
          requests:
            memory: 1Gi
      networks:
      - name: default
        pod: {}
      terminationGracePeriodSeconds: 180
%[3]s      volumes:
      - containerDisk:
          image: %[2]s
        name: containerdisk
      - cloudInitNoCloud:
          userDataBase64: IyEvYmluL3NoCgplY2hvICdwcmludGVkIGZyb20gY2xvdWQtaW5pdCB1c2VyZGF0YScK
        name: cloudinitdisk
%[5]s`, name, DebianContainerDisk, extraSpec, extraDisks, extraVolumes)
}

// osSetup is setup for the OS tests: they also need the OS images built.
func osSetup(t *testing.T) *env {
	e := setup(t)
	testenv.OSImage(t, "debian-12.qcow2")
	testenv.RequireOSBoot(t)
	return e
}

// sshKey makes an ed25519 key pair in a temporary directory; it returns the private key's path and the
// public key.
func sshKey(t *testing.T) (string, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "e2e@kvirt", "-f", p).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen (openssh-client): %v\n%s", err, out)
	}
	pub, err := os.ReadFile(p + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return p, strings.TrimSpace(string(pub))
}

// ssh runs a command in the guest as debian@addr with the key.
func (e *env) ssh(key, addr, command string) (string, error) {
	cmd := exec.Command("ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "ConnectTimeout=10", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "debian@"+addr, command)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// sshWait retries until the guest's sshd accepts the key and the command succeeds.
func (e *env) sshWait(key, addr, command string, d time.Duration) string {
	e.t.Helper()
	var out string
	e.eventually(fmt.Sprintf("ssh debian@%s %s", addr, command), d, func() (bool, string) {
		var err error
		out, err = e.ssh(key, addr, command)
		return err == nil, fmt.Sprintf("%v: %s", err, out)
	})
	return out
}

// consoleLog is the guest's serial console as the launcher logs it (kubectl logs of the compute container).
func (e *env) consoleLog(vm string) string {
	out, _ := e.run(kubectl, "logs", "-l", "vm.kubevirt.io/name="+vm, "-c", "compute", "--tail=-1")
	return out
}

// expose makes a ClusterIP Service for the VM's port 22 and returns its address.
func (e *env) exposeSSH(vm string) string {
	e.t.Helper()
	e.virtctlOK("expose", "vm", vm, "--name", vm+"-ssh", "--port", "22")
	ip, err := e.jsonpath("service/"+vm+"-ssh", "{.spec.clusterIP}")
	if err != nil || ip == "" {
		e.t.Fatalf("service %s-ssh has no cluster IP: %v %s", vm, err, ip)
	}
	return ip
}

// TestDebianVMCirrosAccessCredentials: vm-cirros with the Debian containerDisk and an SSH key Secret in
// accessCredentials (noCloud propagation). virtctl start → Running, booted from its disk (BootedFromDisk
// condition and event) → the console log shows the user-data script's line → ssh with the Secret's key
// through `virtctl expose` prints Debian 12's os-release, and cloud-init status is done → `virtctl console`
// shows a login prompt.
func TestDebianVMCirrosAccessCredentials(t *testing.T) {
	t.Parallel()
	e := osSetup(t)
	key, pub := sshKey(t)
	e.kubectl("create", "secret", "generic", "my-keys", "--from-literal=key="+pub)
	e.apply(vmCirros("vm-cirros", `      accessCredentials:
      - sshPublicKey:
          source:
            secret:
              secretName: my-keys
          propagationMethod:
            noCloud: {}
`, "", ""))
	e.waitField("vm/vm-cirros", "{.status.printableStatus}", "Stopped", time.Minute)
	e.virtctlOK("start", "vm-cirros")
	e.waitField("vmi/vm-cirros", "{.status.phase}", "Running", 10*time.Minute)
	e.eventually("the BootedFromDisk condition", 5*time.Minute, func() (bool, string) {
		out, _ := e.jsonpath("vmi/vm-cirros", `{.status.conditions[?(@.type=="BootedFromDisk")].status} {.status.conditions[?(@.type=="BootedFromDisk")].reason}`)
		return out == "True ImageKernel" || out == "True PlatformKernel", out
	})
	if ev := e.kubectl("get", "events", "--field-selector", "involvedObject.name=vm-cirros"); !strings.Contains(ev, "ImageKernel") && !strings.Contains(ev, "PlatformKernel") {
		t.Errorf("no boot event:\n%s", ev)
	}
	e.eventually("the console shows the user-data script", osBootTimeout, func() (bool, string) {
		out := e.consoleLog("vm-cirros")
		return strings.Contains(out, "printed from cloud-init userdata"), tailLines(out, 10)
	})
	ip := e.exposeSSH("vm-cirros")
	if out := e.sshWait(key, ip, "cat /etc/os-release", 10*time.Minute); !strings.Contains(out, `VERSION_ID="12"`) || !strings.Contains(out, "Debian") {
		t.Errorf("os-release:\n%s", out)
	}
	if out := e.sshWait(key, ip, "cloud-init status --wait", 10*time.Minute); !strings.Contains(out, "status: done") {
		t.Errorf("cloud-init status:\n%s", out)
	}
	e.consoleShows("vm-cirros", "login:")
	e.virtctlOK("stop", "vm-cirros")
	e.waitGone("vmi/vm-cirros", osStopTimeout)
}

// consoleShows attaches `virtctl console`, presses Enter and waits for want.
func (e *env) consoleShows(vm, want string) {
	e.t.Helper()
	cmd := exec.Command(e.virtctl, "--kubeconfig", e.kubeconfig, "-n", e.ns, "console", vm)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() }()
	e.eventually("virtctl console connected", time.Minute, func() (bool, string) {
		return strings.Contains(out.String(), "Successfully connected to "+vm+" console"), out.String()
	})
	e.eventually("virtctl console shows "+want, 2*time.Minute, func() (bool, string) {
		stdin.Write([]byte("\r"))
		return strings.Contains(out.String(), want), tailLines(out.String(), 5)
	})
}

// TestDebianUserDataKeyRestartsAndDataDisk: the key from user-data (#cloud-config ssh_authorized_keys),
// a hostDisk data disk, and restarts: a file written and synced on the data disk is there after the next
// start, a change to the containerDisk root is gone (KubeVirt's ephemeral containerDisk), the guest's
// product_uuid is the same, and `virtctl stop` ends in a clean systemd poweroff within the grace period.
// The hostDisk needs the controller to mount it into the launcher pod (the PVC/hostDisk work, h4-pvc).
func TestDebianUserDataKeyRestartsAndDataDisk(t *testing.T) {
	t.Parallel()
	e := osSetup(t)
	key, pub := sshKey(t)
	userData := fmt.Sprintf("#cloud-config\nssh_authorized_keys:\n  - %s\n", pub)
	dataPath := filepath.Join("/var/tmp/kvirt-e2e", e.ns, "data.img")
	manifest := vmCirros("deb", "", `          - disk:
              bus: virtio
            name: data
`, fmt.Sprintf(`      - hostDisk:
          path: %s
          type: DiskOrCreate
          capacity: 64Mi
        name: data
`, dataPath))
	manifest = strings.Replace(manifest, "userDataBase64: IyEvYmluL3NoCgplY2hvICdwcmludGVkIGZyb20gY2xvdWQtaW5pdCB1c2VyZGF0YScK",
		fmt.Sprintf("userData: %q", userData), 1)
	e.apply(manifest)
	e.virtctlOK("start", "deb")
	e.waitField("vmi/deb", "{.status.phase}", "Running", 10*time.Minute)
	ip := e.exposeSSH("deb")
	uuid1 := strings.TrimSpace(e.sshWait(key, ip, "sudo cat /sys/class/dmi/id/product_uuid", osBootTimeout))
	e.sshWait(key, ip, "cloud-init status --wait", 10*time.Minute)
	e.sshWait(key, ip, "echo kvirt-data-survives | sudo dd of=/dev/vdc bs=512 count=1 conv=fsync status=none && sudo touch /var/tmp/root-change && sync", time.Minute)

	e.virtctlOK("stop", "deb")
	e.waitGone("vmi/deb", osStopTimeout)
	if out := e.consoleLog("deb"); out != "" && !strings.Contains(out, "reboot: Power down") {
		// The pod may already be gone; when its log is there it shows systemd powering off.
		t.Errorf("the console log does not show a clean poweroff:\n%s", tailLines(out, 20))
	}

	e.virtctlOK("start", "deb")
	e.waitField("vmi/deb", "{.status.phase}", "Running", 10*time.Minute)
	uuid2 := strings.TrimSpace(e.sshWait(key, ip, "sudo cat /sys/class/dmi/id/product_uuid", osBootTimeout))
	if uuid1 == "" || !strings.EqualFold(uuid1, uuid2) {
		t.Errorf("product_uuid %q before the restart, %q after", uuid1, uuid2)
	}
	if out := e.sshWait(key, ip, "sudo head -c 20 /dev/vdc", time.Minute); !strings.Contains(out, "kvirt-data-survives") {
		t.Errorf("the data disk lost its write: %q", out)
	}
	if out, err := e.ssh(key, ip, "test -e /var/tmp/root-change && echo present || echo gone"); err != nil || !strings.Contains(out, "gone") {
		t.Errorf("the containerDisk root kept a change across a restart: %q %v", out, err)
	}
	if out, _ := e.ssh(key, ip, "sudo journalctl --list-boots --no-pager | wc -l"); strings.TrimSpace(out) != "1" {
		t.Logf("journal boots on the ephemeral root: %s", out)
	}
	e.virtctlOK("stop", "deb")
	e.waitGone("vmi/deb", osStopTimeout)
}

// TestDebianVirtLauncherRunLocally: `virt-launcher run -f` of the same vm-cirros VMI boots the same OS with
// no cluster (the containerDisk given as the image archive; KVM needed, no cluster).
func TestDebianVirtLauncherRunLocally(t *testing.T) {
	if os.Getenv("KVIRT_E2E") != "1" {
		t.Skip("end-to-end test: set KVIRT_E2E=1 (or run `just e2e`)")
	}
	testenv.RequireKVM(t)
	testenv.RequireOSBoot(t)
	archive := testenv.ContainerDiskArchive(t, testenv.OSImage(t, "debian-12.qcow2"))
	dir := t.TempDir()
	bin := filepath.Join(dir, "virt-launcher")
	build := exec.Command("go", "build", "-o", bin, "./cmd/virt-launcher")
	build.Dir = repoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/virt-launcher: %v\n%s", err, out)
	}
	f := filepath.Join(dir, "vmi.yaml")
	if err := os.WriteFile(f, []byte(vmCirrosVMI("docker-archive:"+archive)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), osBootTimeout+10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "run", "-f", f, "--network", "none")
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("virt-launcher run output:\n%s", tailLines(out.String(), 60))
		}
	}()
	deadline := time.Now().Add(osBootTimeout)
	for !strings.Contains(out.String(), "login:") || !strings.Contains(out.String(), "printed from cloud-init userdata") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("no cloud-init line and login prompt within %v", osBootTimeout)
		}
		time.Sleep(time.Second)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("virt-launcher run after SIGTERM: %v (want exit 0: the guest powered off)", err)
	}
}

// vmCirrosVMI is vm-cirros' template as a VMI manifest (what `virt-launcher run -f` takes), with image as
// its containerDisk.
func vmCirrosVMI(image string) string {
	vm := strings.Replace(vmCirros("vm-cirros", "", "", ""), DebianContainerDisk, image, 1)
	i := strings.Index(vm, "    spec:\n      domain:")
	return "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: vm-cirros}\nspec:\n" +
		dedent(vm[i+len("    spec:\n"):], 4)
}

// dedent removes n leading spaces from every line.
func dedent(s string, n int) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if len(l) >= n && strings.TrimSpace(l[:n]) == "" {
			lines[i] = l[n:]
		}
	}
	return strings.Join(lines, "\n")
}

// TestOSManifests checks the manifests the OS tests apply (no cluster needed): vm-cirros decodes strictly as
// a VirtualMachine, with accessCredentials and a hostDisk added too, and its VMI form loads in the launcher.
func TestOSManifests(t *testing.T) {
	for _, m := range []string{
		vmCirros("a", "", "", ""),
		vmCirros("b", "      accessCredentials:\n      - sshPublicKey:\n          source: {secret: {secretName: k}}\n          propagationMethod: {noCloud: {}}\n", "", ""),
		vmCirros("c", "", "          - disk:\n              bus: virtio\n            name: data\n",
			"      - hostDisk:\n          path: /var/tmp/x/data.img\n          type: DiskOrCreate\n          capacity: 64Mi\n        name: data\n"),
	} {
		var vm v1.VirtualMachine
		if err := yaml.UnmarshalStrict([]byte(m), &vm); err != nil {
			t.Fatalf("%v\n%s", err, m)
		}
		spec := vm.Spec.Template.Spec
		if len(spec.Domain.Devices.Disks) != len(spec.Volumes) || spec.Volumes[0].ContainerDisk.Image != DebianContainerDisk {
			t.Errorf("disks %+v volumes %+v", spec.Domain.Devices.Disks, spec.Volumes)
		}
	}
	vmi, err := launcher.LoadManifest([]byte(vmCirrosVMI("docker-archive:/x.tar")))
	if err != nil {
		t.Fatalf("%v\n%s", err, vmCirrosVMI("docker-archive:/x.tar"))
	}
	if vmi.Spec.Volumes[0].ContainerDisk.Image != "docker-archive:/x.tar" || vmi.Spec.Volumes[1].CloudInitNoCloud == nil {
		t.Errorf("VMI volumes %+v", vmi.Spec.Volumes)
	}
}
