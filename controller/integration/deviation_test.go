package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/controller"
	"github.com/kvirt/kvirt/controller/controllertest"
	"github.com/kvirt/kvirt/tests/testenv"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"
)

// Behaviour tests for the deviations from KubeVirt fixed in session 2 (each failed before its fix).

// consistently fails the test if f turns false at any poll within d (a deadline, not a sleep: it stops at
// the first violation).
func consistently(t *testing.T, what string, d time.Duration, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ok, detail := f(); !ok {
			t.Fatalf("%s stopped holding: %s", what, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var vmGVR = schema.GroupVersionResource{Group: "kubevirt.io", Version: "v1", Resource: "virtualmachines"}

// The controller writes the finalizer, the firmware UUID, the interface MACs and (for a paused start of
// a Halted VM) the run strategy into the VM. Fields our Go types do not model but the CRD keeps
// (x-kubernetes-preserve-unknown-fields) must survive all of those writes.
func TestUnknownTemplateFieldsSurvive(t *testing.T) {
	e := start(t)
	dyn, err := dynamic.NewForConfig(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	const manifest = `
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: unknowns}
spec:
  runStrategy: Halted
  dataVolumeTemplates: []
  instancetype: {name: u1.small}
  template:
    metadata: {labels: {kubevirt.io/vm: unknowns}}
    spec:
      evictionStrategy: LiveMigrate
      architecture: amd64
      domain:
        memory: {guest: 64Mi}
        firmware:
          bootloader: {efi: {secureBoot: false}}
        features:
          smm: {enabled: true}
        devices:
          tpm: {persistent: true}
          interfaces:
          - name: default
            masquerade: {}
            model: virtio
      networks:
      - name: default
        pod: {}
`
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(manifest), &obj); err != nil {
		t.Fatal(err)
	}
	created, err := dyn.Resource(vmGVR).Namespace(e.ns).Create(context.Background(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create VM: %v", err)
	}
	kept := [][]string{
		{"spec", "dataVolumeTemplates"},
		{"spec", "instancetype", "name"},
		{"spec", "template", "spec", "evictionStrategy"},
		{"spec", "template", "spec", "architecture"},
		{"spec", "template", "spec", "domain", "firmware", "bootloader", "efi"},
		{"spec", "template", "spec", "domain", "features", "smm", "enabled"},
		{"spec", "template", "spec", "domain", "devices", "tpm", "persistent"},
	}
	check := func(u *unstructured.Unstructured) string {
		for _, path := range kept {
			if _, found, err := unstructured.NestedFieldNoCopy(u.Object, path...); !found || err != nil {
				return fmt.Sprintf("field %v is gone (err %v)", path, err)
			}
		}
		ifs, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "domain", "devices", "interfaces")
		if len(ifs) != 1 || ifs[0].(map[string]any)["model"] != "virtio" {
			return fmt.Sprintf("interface model is gone: %v", ifs)
		}
		return ""
	}
	get := func() *unstructured.Unstructured {
		u, err := dyn.Resource(vmGVR).Namespace(e.ns).Get(context.Background(), "unknowns", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get VM: %v", err)
		}
		return u
	}
	// The object as stored at create, before the controller wrote to it.
	if msg := check(created); msg != "" {
		t.Fatalf("the CRD does not keep the test's fields (the test's premise): %s", msg)
	}
	testenv.Eventually(t, "finalizer, firmware UUID and serial and MAC written", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "unknowns")
		d := vm.Spec.Template.Spec.Domain
		ok := len(vm.Finalizers) == 1 && d.Firmware != nil && d.Firmware.UUID != "" && d.Firmware.Serial != "" &&
			len(d.Devices.Interfaces) == 1 && d.Devices.Interfaces[0].MacAddress == controller.StableMAC(vm.UID, "default")
		return ok, fmt.Sprintf("finalizers %v domain %+v", vm.Finalizers, d)
	})
	if msg := check(get()); msg != "" {
		t.Fatalf("after the controller wrote its defaults: %s", msg)
	}
	// A paused start of a Halted VM makes the controller switch the spec to Always.
	e.addRequests(t, "unknowns", []v1.VirtualMachineStateChangeRequest{{Action: v1.StartRequest, Data: map[string]string{v1.StartRequestDataPausedKey: v1.StartRequestDataPausedTrue}}})
	testenv.Eventually(t, "run strategy switched to Always", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "unknowns")
		return vm.Spec.RunStrategy != nil && *vm.Spec.RunStrategy == v1.RunStrategyAlways, fmt.Sprintf("spec %+v", vm.Spec.RunStrategy)
	})
	if msg := check(get()); msg != "" {
		t.Fatalf("after the controller switched the run strategy: %s", msg)
	}
	// The VMI's spec is the template's, unknown fields included (as KubeVirt copies the template).
	vmiGVR := schema.GroupVersionResource{Group: "kubevirt.io", Version: "v1", Resource: "virtualmachineinstances"}
	testenv.Eventually(t, "VMI with the template's unknown fields", 30*time.Second, func() (bool, string) {
		u, err := dyn.Resource(vmiGVR).Namespace(e.ns).Get(context.Background(), "unknowns", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, path := range [][]string{{"spec", "evictionStrategy"}, {"spec", "architecture"}, {"spec", "domain", "devices", "tpm", "persistent"},
			{"spec", "domain", "features", "smm", "enabled"}, {"spec", "domain", "firmware", "bootloader", "efi"}, {"spec", "domain", "firmware", "uuid"}} {
			if _, found, _ := unstructured.NestedFieldNoCopy(u.Object, path...); !found {
				return false, fmt.Sprintf("VMI lacks %v", path)
			}
		}
		if s, _, _ := unstructured.NestedString(u.Object, "spec", "startStrategy"); s != "Paused" {
			return false, "startStrategy " + s
		}
		return true, ""
	})
}

// Halted with a pending Start: the controller switches to Always only once the old VMI is gone (fencing).
func TestHaltedStartWaitsForOldVMI(t *testing.T) {
	e := start(t)
	e.createVM(t, controllertest.VM("fence", v1.RunStrategyAlways))
	old := e.runGuest(t, "fence")
	// A finalizer of the test's own keeps the old VMI around after it is deleted.
	hold := `{"metadata":{"finalizers":["test.kvirt.io/hold","` + v1.VirtualMachineControllerFinalizer + `","` + v1.VirtualMachineInstanceFinalizer + `"]}}`
	if _, err := e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Patch(context.Background(), "fence", types.MergePatchType, []byte(hold), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	e.setRunStrategy(t, "fence", v1.RunStrategyHalted)
	testenv.Eventually(t, "old VMI being deleted", 30*time.Second, func() (bool, string) {
		vmi, err := e.getVMI("fence")
		if err != nil {
			return false, err.Error()
		}
		return vmi.DeletionTimestamp != nil, "not deleting"
	})
	e.addRequests(t, "fence", []v1.VirtualMachineStateChangeRequest{{Action: v1.StartRequest, Data: map[string]string{v1.StartRequestDataPausedKey: v1.StartRequestDataPausedTrue}}})
	consistently(t, "Halted while the old VMI exists", 3*time.Second, func() (bool, string) {
		vm := e.getVM(t, "fence")
		return *vm.Spec.RunStrategy == v1.RunStrategyHalted, fmt.Sprintf("runStrategy %s", *vm.Spec.RunStrategy)
	})
	// Release the old VMI: now the VM switches to Always and starts a new, paused VMI.
	testenv.Eventually(t, "test finalizer removed", 30*time.Second, func() (bool, string) {
		vmi, err := e.getVMI("fence")
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		var fin []string
		for _, f := range vmi.Finalizers {
			if f != "test.kvirt.io/hold" {
				fin = append(fin, f)
			}
		}
		vmi.Finalizers = fin
		_, err = e.kv.KubevirtV1().VirtualMachineInstances(e.ns).Update(context.Background(), vmi, metav1.UpdateOptions{})
		return err == nil, fmt.Sprint(err)
	})
	testenv.Eventually(t, "new paused VMI under Always", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "fence")
		vmi, err := e.getVMI("fence")
		if err != nil {
			return false, err.Error()
		}
		paused := vmi.Spec.StartStrategy != nil && *vmi.Spec.StartStrategy == v1.StartStrategyPaused
		return *vm.Spec.RunStrategy == v1.RunStrategyAlways && vmi.UID != old.UID && paused, fmt.Sprintf("runStrategy %s vmi %s paused %v", *vm.Spec.RunStrategy, vmi.UID, paused)
	})
}

// status.runStrategy follows the spec even without a VMI, so RerunOnFailure → Manual → RerunOnFailure
// on a stopped VM starts it (KubeVirt: "strategy just switched").
func TestRerunOnFailureSwitchBackStarts(t *testing.T) {
	e := start(t)
	e.createVM(t, controllertest.VM("rerun", v1.RunStrategyRerunOnFailure))
	first := e.runGuest(t, "rerun")
	e.status.Set(e.ns, "rerun", controller.LauncherState{Phase: controller.GuestSucceeded})
	testenv.Eventually(t, "succeeded VMI removed, VM Stopped", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "rerun")
		ok, detail := e.vmiGone("rerun")()
		return ok && vm.Status.PrintableStatus == v1.VirtualMachineStatusStopped, fmt.Sprintf("%s; printableStatus %s", detail, vm.Status.PrintableStatus)
	})
	e.setRunStrategy(t, "rerun", v1.RunStrategyManual)
	testenv.Eventually(t, "status.runStrategy Manual", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "rerun")
		return vm.Status.RunStrategy == v1.RunStrategyManual, fmt.Sprintf("status.runStrategy %q", vm.Status.RunStrategy)
	})
	if n := e.vmiCount(t); n != 0 {
		t.Fatalf("Manual without a start request created %d VMIs", n)
	}
	e.setRunStrategy(t, "rerun", v1.RunStrategyRerunOnFailure)
	testenv.Eventually(t, "a new VMI after switching back", 30*time.Second, func() (bool, string) {
		vmi, err := e.getVMI("rerun")
		if err != nil {
			return false, err.Error()
		}
		return vmi.UID != first.UID, "still the old VMI"
	})
}

// A Stop request without a UID names no VMI: KubeVirt drops it and keeps the VMI.
func TestStopWithoutUIDIsDropped(t *testing.T) {
	e := start(t)
	e.createVM(t, controllertest.VM("nouid", v1.RunStrategyManual))
	e.addRequests(t, "nouid", []v1.VirtualMachineStateChangeRequest{{Action: v1.StartRequest}})
	vmi := e.runGuest(t, "nouid")
	testenv.Eventually(t, "start request trimmed", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "nouid")
		return len(vm.Status.StateChangeRequests) == 0, fmt.Sprintf("%+v", vm.Status.StateChangeRequests)
	})
	e.addRequests(t, "nouid", []v1.VirtualMachineStateChangeRequest{{Action: v1.StopRequest}})
	testenv.Eventually(t, "UID-less stop request trimmed", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "nouid")
		return len(vm.Status.StateChangeRequests) == 0, fmt.Sprintf("%+v", vm.Status.StateChangeRequests)
	})
	now, err := e.getVMI("nouid")
	if err != nil || now.UID != vmi.UID || now.DeletionTimestamp != nil {
		t.Fatalf("the VMI was touched by a Stop without a UID: err %v", err)
	}
}

// A template PVC that exists but is not Bound shows WaitingForVolumeBinding while the VM is set to start;
// binding it moves the VM on.
func TestWaitingForVolumeBinding(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	empty := ""
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "disk"},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &empty,
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if _, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vm := controllertest.VM("pvcvm", v1.RunStrategyAlways)
	spec := &vm.Spec.Template.Spec
	spec.Domain.Devices.Disks = []v1.Disk{{Name: "root", Disk: &v1.DiskTarget{Bus: v1.DiskBusVirtio}}}
	spec.Volumes = []v1.Volume{{Name: "root", PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "disk"}}}
	e.createVM(t, vm)
	testenv.Eventually(t, "WaitingForVolumeBinding", 30*time.Second, e.printable(t, "pvcvm", v1.VirtualMachineStatusWaitingForVolumeBinding))

	// Bind it: a PV reserved for the claim (kube-controller-manager's binder does the rest).
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: e.ns + "-disk"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp/kvirt-test-pv"}},
			ClaimRef:               &corev1.ObjectReference{Namespace: e.ns, Name: "disk"},
			StorageClassName:       "",
		},
	}
	if _, err := e.kube.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.kube.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
	})
	testenv.Eventually(t, "PVC bound and the VM past WaitingForVolumeBinding", 60*time.Second, func() (bool, string) {
		c, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Get(ctx, "disk", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		vm := e.getVM(t, "pvcvm")
		return c.Status.Phase == corev1.ClaimBound && vm.Status.PrintableStatus != v1.VirtualMachineStatusWaitingForVolumeBinding,
			fmt.Sprintf("PVC %s, VM %s", c.Status.Phase, vm.Status.PrintableStatus)
	})
}

// BEHAVIOUR.md §2 events: the VM gets SuccessfulCreate/SuccessfulDelete with KubeVirt's messages, the VMI
// SuccessfulCreate "Created virtual machine pod X".
func TestVMAndVMIEvents(t *testing.T) {
	e := start(t)
	e.createVM(t, controllertest.VM("ev", v1.RunStrategyAlways))
	vmi := e.runGuest(t, "ev")
	events := func(kind, name string) []corev1.Event {
		l, err := e.kube.CoreV1().Events(e.ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.kind=" + kind + ",involvedObject.name=" + name})
		if err != nil {
			t.Fatal(err)
		}
		return l.Items
	}
	has := func(kind, name, typ, reason, message string) func() (bool, string) {
		return func() (bool, string) {
			var seen []string
			for _, ev := range events(kind, name) {
				if ev.Type == typ && ev.Reason == reason && (message == "" || ev.Message == message) {
					return true, ""
				}
				seen = append(seen, ev.Type+" "+ev.Reason+": "+ev.Message)
			}
			return false, fmt.Sprintf("events of %s %s: %q", kind, name, seen)
		}
	}
	testenv.Eventually(t, "VM SuccessfulCreate event", 30*time.Second, has("VirtualMachine", "ev", corev1.EventTypeNormal, "SuccessfulCreate", "Started the virtual machine by creating the new virtual machine instance ev"))
	testenv.Eventually(t, "VMI SuccessfulCreate event", 30*time.Second, func() (bool, string) {
		for _, ev := range events("VirtualMachineInstance", "ev") {
			if ev.Type == corev1.EventTypeNormal && ev.Reason == "SuccessfulCreate" && strings.HasPrefix(ev.Message, "Created virtual machine pod virt-launcher-ev-") {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", events("VirtualMachineInstance", "ev"))
	})
	e.setRunStrategy(t, "ev", v1.RunStrategyHalted)
	testenv.Eventually(t, "VM SuccessfulDelete event", 30*time.Second, has("VirtualMachine", "ev", corev1.EventTypeNormal, "SuccessfulDelete", "Stopped the virtual machine by deleting the virtual machine instance "+string(vmi.UID)))
}
