package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/controller"
	"github.com/kvirt/kvirt/controller/controllertest"
	"github.com/kvirt/kvirt/launcher/spec"
	"github.com/kvirt/kvirt/tests/testenv"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// BEHAVIOUR.md §8 "long names": a VM whose name is longer than a label value (70 characters) runs. Its
// pod's name, labels and token Secret are valid (the apiserver refuses anything else), the labels carry
// KubeVirt's hashed VMI ID, and the controller still finds the pod to stop it.
func TestLongNameVMRuns(t *testing.T) {
	e := start(t)
	name := strings.Repeat("a", 62) + "-long-vm"
	vm := controllertest.VM(name, v1.RunStrategyAlways)
	vm.Spec.Template.ObjectMeta.Labels = map[string]string{"app": "long"} // a label value cannot hold the name
	e.createVM(t, vm)
	vmi := e.runGuest(t, name)
	testenv.Eventually(t, "VM Running and Ready", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, name)
		return vm.Status.PrintableStatus == v1.VirtualMachineStatusRunning && vm.Status.Ready, fmt.Sprintf("%+v", vm.Status)
	})
	want := v1.NameLabelValue(name)
	if len(want) != 63 || vmi.Labels[v1.VirtualMachineNameLabel] != want {
		t.Fatalf("VMI labels %v, want %s=%s", vmi.Labels, v1.VirtualMachineNameLabel, want)
	}
	pod := e.launcherPod(t, vmi)
	if len(pod.Name) > 63 || !strings.HasPrefix(pod.Name, "virt-launcher-aaaa") || pod.Labels[v1.VirtualMachineInstanceIDLabel] != want ||
		pod.Labels[v1.VirtualMachineNameLabel] != want || pod.Annotations[v1.DomainAnnotation] != name {
		t.Fatalf("pod %s labels %v annotations %v", pod.Name, pod.Labels, pod.Annotations[v1.DomainAnnotation])
	}
	// virtctl expose selects the VM's pods by this label.
	byName, err := e.kube.CoreV1().Pods(e.ns).List(context.Background(), metav1.ListOptions{LabelSelector: labels.Set{v1.VirtualMachineNameLabel: want}.String()})
	if err != nil || len(byName.Items) != 1 {
		t.Fatalf("pods selected by %s=%s: %d (err %v)", v1.VirtualMachineNameLabel, want, len(byName.Items), err)
	}
	secret, err := e.kube.CoreV1().Secrets(e.ns).Get(context.Background(), controller.TokenSecretName(name), metav1.GetOptions{})
	if err != nil || metav1.GetControllerOf(secret).UID != vmi.UID {
		t.Fatalf("token secret %s: %v", controller.TokenSecretName(name), err)
	}
	mounted := ""
	for _, vol := range pod.Spec.Volumes {
		if vol.Secret != nil {
			mounted = vol.Secret.SecretName
		}
	}
	if mounted != secret.Name {
		t.Fatalf("pod mounts secret %q, want %q", mounted, secret.Name)
	}

	e.setRunStrategy(t, name, v1.RunStrategyHalted)
	testenv.Eventually(t, "VMI gone", 30*time.Second, e.vmiGone(name))
	testenv.Eventually(t, "launcher pod gone", 30*time.Second, func() (bool, string) {
		_, err := e.kube.CoreV1().Pods(e.ns).Get(context.Background(), pod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprintf("get pod: %v", err)
	})
	testenv.Eventually(t, "VM Stopped", 30*time.Second, e.printable(t, name, v1.VirtualMachineStatusStopped))
}

// BEHAVIOUR.md §8 "memory": VMIs created directly with only a memory limit, or with less memory than
// kvirt's VMM boots, run: the pod requests what KubeVirt's pod would (plus kvirt's overhead) and the
// launcher's copy of the VMI gives the guest its memory. A request below 1M is refused by the apiserver
// with KubeVirt's message. The apiserver persists machine type q35 and no firmware identity, as
// KubeVirt's VMI webhook does.
func TestVMIMemoryManifests(t *testing.T) {
	e := start(t)
	for _, tc := range []struct {
		name             string
		requests, limits corev1.ResourceList
		wantReq, wantLim string // "": no limit
		wantGuestMiB     uint64
	}{
		{name: "limits-only", limits: mem("512Mi"), wantReq: "545Mi", wantLim: "545Mi", wantGuestMiB: 512},
		{name: "tiny", requests: mem("4096Ki"), wantReq: "49184Ki", wantGuestMiB: 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vmi := controllertest.VMI(tc.name)
			vmi.Spec.Domain.Memory = nil
			vmi.Spec.Domain.Resources = v1.ResourceRequirements{Requests: tc.requests, Limits: tc.limits}
			if _, err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Create(context.Background(), vmi, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			running := e.runGuest(t, tc.name)
			if m := running.Spec.Domain.Machine; m == nil || m.Type != "q35" || running.Spec.Domain.Firmware != nil {
				t.Errorf("machine %+v firmware %+v, want q35 and none", m, running.Spec.Domain.Firmware)
			}
			pod := e.launcherPod(t, running)
			res := pod.Spec.Containers[0].Resources
			if got := res.Requests[corev1.ResourceMemory]; got.Cmp(resource.MustParse(tc.wantReq)) != 0 {
				t.Errorf("memory request %s, want %s", got.String(), tc.wantReq)
			}
			got, ok := res.Limits[corev1.ResourceMemory]
			if ok != (tc.wantLim != "") || (ok && got.Cmp(resource.MustParse(tc.wantLim)) != 0) {
				t.Errorf("memory limit %s (set %v), want %q", got.String(), ok, tc.wantLim)
			}
			var copyOf v1.VirtualMachineInstance
			if err := json.Unmarshal([]byte(pod.Annotations[controller.VMIAnnotation]), &copyOf); err != nil {
				t.Fatal(err)
			}
			m, _, err := spec.Translate(&copyOf)
			if err != nil || m.MemoryBytes != tc.wantGuestMiB<<20 {
				t.Errorf("launcher: guest memory %d (err %v), want %d MiB", m.MemoryBytes, err, tc.wantGuestMiB)
			}
		})
	}
	vmi := controllertest.VMI("below-1m")
	vmi.Spec.Domain.Memory = nil
	vmi.Spec.Domain.Resources.Requests = mem("512Ki")
	_, err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Create(context.Background(), vmi, metav1.CreateOptions{})
	if want := "spec.domain.resources.requests.memory '512Ki': must be greater than or equal to 1M."; !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), want) {
		t.Fatalf("create with 512Ki: %v, want Invalid with %q", err, want)
	}
}

func mem(q string) corev1.ResourceList {
	return corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(q)}
}

// BEHAVIOUR.md §8 "firmware": a new VM gets a random firmware UUID and serial in its template, written
// once: the same across stops, starts and a controller restart, and different for a VM re-created under
// the same name (KubeVirt's VM mutator on create). The machine type is persisted.
func TestFirmwareIdentityPersisted(t *testing.T) {
	e := start(t)
	identity := func() v1.Firmware {
		var fw v1.Firmware
		testenv.Eventually(t, "firmware UUID and serial written", 30*time.Second, func() (bool, string) {
			vm := e.getVM(t, "fw")
			d := vm.Spec.Template.Spec.Domain
			if d.Firmware != nil {
				fw = *d.Firmware
			}
			return isRandomUUID(string(fw.UUID)) && isRandomUUID(fw.Serial) && d.Machine != nil && d.Machine.Type == "q35",
				fmt.Sprintf("firmware %+v machine %+v", d.Firmware, d.Machine)
		})
		return fw
	}
	e.createVM(t, controllertest.VM("fw", v1.RunStrategyHalted))
	first := identity()
	if first.UUID == controller.LegacyFirmwareUUID("fw") || string(first.UUID) == first.Serial {
		t.Fatalf("firmware %+v: not a random UUID and a separate serial", first)
	}
	runs := func() {
		t.Helper()
		e.setRunStrategy(t, "fw", v1.RunStrategyAlways)
		vmi := e.runGuest(t, "fw")
		if fw := vmi.Spec.Domain.Firmware; fw == nil || fw.UUID != first.UUID || fw.Serial != first.Serial {
			t.Fatalf("VMI firmware %+v, want the VM's %+v", fw, first)
		}
		e.setRunStrategy(t, "fw", v1.RunStrategyHalted)
		testenv.Eventually(t, "VMI gone", 30*time.Second, e.vmiGone("fw"))
	}
	runs()
	e.stop()
	e.stop = e.runController(t)
	runs()
	if got := identity(); got.UUID != first.UUID || got.Serial != first.Serial {
		t.Fatalf("firmware changed from %+v to %+v", first, got)
	}

	if err := e.kv.KubevirtV1().VirtualMachines(e.ns).Delete(context.Background(), "fw", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "VM gone", 30*time.Second, func() (bool, string) {
		_, err := e.kv.KubevirtV1().VirtualMachines(e.ns).Get(context.Background(), "fw", metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprintf("get VM: %v", err)
	})
	e.createVM(t, controllertest.VM("fw", v1.RunStrategyHalted))
	if again := identity(); again.UUID == first.UUID || again.Serial == first.Serial {
		t.Fatalf("re-created VM got the old identity: %+v, before %+v", again, first)
	}
}

func isRandomUUID(s string) bool {
	u, err := uuid.Parse(s)
	return err == nil && u.Version() == 4
}
