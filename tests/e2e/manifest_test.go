package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/vmm"
)

// A VM whose name is longer than a label value (70 characters) boots; the guest reads the random firmware
// UUID and serial the VM controller wrote into the template from its SMBIOS table, the same after a
// restart, and a VM re-created under the name gets another UUID (docs/BEHAVIOUR.md §8).
func TestLongNameVMFirmwareIdentity(t *testing.T) {
	t.Parallel()
	e := setupGuest(t)
	name := strings.Repeat("k", 62) + "-long-vm"
	args := vmm.DefaultCmdline + ` kvirt.test="uuid,sh:cat /sys/class/dmi/id/product_serial,wait"`
	manifest := fmt.Sprintf(`apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: %s}
spec:
  runStrategy: Always
  template:
    spec:
      terminationGracePeriodSeconds: 10
      domain:
        resources: {requests: {memory: 128Mi}}
        firmware:
          kernelBoot:
            kernelArgs: %q
            container:
              image: docker-archive:/usr/share/kvirt/e2e/linux-kernel.tar
              kernelPath: /boot/vmlinux
              initrdPath: /boot/initramfs.cpio
        devices: {autoattachPodInterface: false}
`, name, args)
	e.apply(manifest)
	identity := func() (string, string) {
		out, err := e.jsonpath("vm/"+name, "{.spec.template.spec.domain.firmware.uuid} {.spec.template.spec.domain.firmware.serial}")
		f := strings.Fields(out)
		if err != nil || len(f) != 2 {
			t.Fatalf("VM firmware %q: %v", out, err)
		}
		return f[0], f[1]
	}
	guestSees := func(uuid, serial string) {
		t.Helper()
		e.eventually("the guest prints the template's UUID and serial", 3*time.Minute, func() (bool, string) {
			out, err := e.run(kubectl, "logs", "-l", v1.VirtualMachineNameLabel+"="+v1.NameLabelValue(name), "-c", "compute", "--tail=-1")
			return err == nil && strings.Contains(out, "kvirt-guest: uuid="+uuid) && strings.Contains(out, serial), tailLines(out, 10)
		})
	}
	e.waitField("vmi/"+name, "{.status.phase}", "Running", 3*time.Minute)
	uuid, serial := identity()
	guestSees(uuid, serial)

	old := e.vmiUID(name)
	e.virtctlOK("restart", name)
	e.waitNewRunning(name, old, 3*time.Minute)
	if u, s := identity(); u != uuid || s != serial {
		t.Fatalf("firmware %s %s after the restart, was %s %s", u, s, uuid, serial)
	}
	guestSees(uuid, serial)

	e.kubectl("delete", "vm", name)
	e.waitGone("vmi/"+name, 2*time.Minute)
	e.waitGone("vm/"+name, time.Minute)
	e.apply(manifest)
	e.waitField("vmi/"+name, "{.status.phase}", "Running", 3*time.Minute)
	if u, s := identity(); u == uuid || s == serial {
		t.Fatalf("the re-created VM got the old firmware identity %s %s", u, s)
	}
}

// A VM with only a memory limit, and one with KubeVirt's 4096Ki, run (docs/BEHAVIOUR.md §8).
func TestMemoryManifestsRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, resources string }{
		{"limits-only", "resources: {limits: {memory: 64Mi}}"},
		{"tiny", "resources: {requests: {memory: 4096Ki}}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := setupGuest(t)
			manifest := strings.Replace(fmt.Sprintf(testGuestVM, tc.name), "resources: {requests: {memory: 64Mi}}", tc.resources, 1)
			e.apply(strings.Replace(manifest, "running: false", "running: true", 1))
			e.waitField("vmi/"+tc.name, "{.status.phase}", "Running", 3*time.Minute)
			e.eventually("the guest's boot line", time.Minute, func() (bool, string) {
				out, err := e.run(kubectl, "logs", "-l", v1.VirtualMachineNameLabel+"="+tc.name, "-c", "compute", "--tail=-1")
				return err == nil && strings.Contains(out, "kvirt-guest: ready"), tailLines(out, 5)
			})
			e.virtctlOK("stop", tc.name)
			e.waitGone("vmi/"+tc.name, 2*time.Minute)
		})
	}
}
