package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/controller"
	"github.com/kvirt/kvirt/controller/controllertest"
	"github.com/kvirt/kvirt/tests/testenv"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// newClaim is a claim no provisioner serves (storageClassName ""), so it stays Pending: the controller must
// not care whether a claim is bound, only that it exists.
func newClaim(name string, mode corev1.PersistentVolumeMode) *corev1.PersistentVolumeClaim {
	empty := ""
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &empty,
			VolumeMode:       &mode,
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}},
		},
	}
}

// BEHAVIOUR.md §2 (printable status 6, VMI events): a VM whose claims do not exist shows ErrorPvcNotFound,
// its VMI stays Pending without a pod with Synchronized=False/FailedPvcNotFound and PodScheduled=False/
// Unschedulable, and the VMI gets a FailedPvcNotFound event; once every claim exists the launcher pod is
// created with the filesystem claim mounted where the launcher reads it and the block claim as a device,
// and the conditions are gone.
func TestPvcNotFoundThenCreated(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	vm := controllertest.VM("pvcmissing", v1.RunStrategyAlways)
	spec := &vm.Spec.Template.Spec
	spec.Domain.Devices.Disks = []v1.Disk{{Name: "root"}, {Name: "data"}}
	spec.Volumes = []v1.Volume{
		{Name: "root", PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "late-fs"}},
		{Name: "data", PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "late-blk", ReadOnly: true}},
	}
	e.createVM(t, vm)

	missing := func(claim string) func() (bool, string) {
		want := fmt.Sprintf("PVC %s/%s does not exist, waiting for it to appear", e.ns, claim)
		return func() (bool, string) {
			vmi, err := e.getVMI("pvcmissing")
			if err != nil {
				return false, err.Error()
			}
			sync := vmi.Status.Condition(v1.VirtualMachineInstanceSynchronized)
			sched := vmi.Status.Condition(v1.VirtualMachineInstancePodScheduled)
			vm := e.getVM(t, "pvcmissing")
			ok := vmi.Status.Phase == v1.Pending && sync != nil && sync.Status == corev1.ConditionFalse &&
				sync.Reason == v1.FailedPvcNotFoundReason && sync.Message == want &&
				sched != nil && sched.Status == corev1.ConditionFalse && sched.Reason == v1.UnschedulableReason && sched.Message == want &&
				vm.Status.PrintableStatus == v1.VirtualMachineStatusPvcNotFound
			return ok, fmt.Sprintf("VMI %s, Synchronized %+v, PodScheduled %+v, VM %s", vmi.Status.Phase, sync, sched, vm.Status.PrintableStatus)
		}
	}
	testenv.Eventually(t, "ErrorPvcNotFound naming late-fs", 30*time.Second, missing("late-fs"))
	testenv.Eventually(t, "a FailedPvcNotFound event on the VMI", 30*time.Second, func() (bool, string) {
		l, err := e.kube.CoreV1().Events(e.ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=VirtualMachineInstance,involvedObject.name=pvcmissing,reason=FailedPvcNotFound"})
		if err != nil {
			return false, err.Error()
		}
		return len(l.Items) > 0, fmt.Sprintf("%d events", len(l.Items))
	})
	pods := func() []corev1.Pod {
		vmi, err := e.getVMI("pvcmissing")
		if err != nil {
			t.Fatal(err)
		}
		l, err := e.kube.CoreV1().Pods(e.ns).List(ctx, metav1.ListOptions{LabelSelector: v1.CreatedByLabel + "=" + string(vmi.UID)})
		if err != nil {
			t.Fatal(err)
		}
		return l.Items
	}
	if p := pods(); len(p) != 0 {
		t.Fatalf("a launcher pod was created while its claims are missing: %s", p[0].Name)
	}

	// One claim appears: the status names the other one.
	if _, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Create(ctx, newClaim("late-fs", corev1.PersistentVolumeFilesystem), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "ErrorPvcNotFound naming late-blk", 30*time.Second, missing("late-blk"))
	if p := pods(); len(p) != 0 {
		t.Fatalf("a launcher pod was created while late-blk is missing: %s", p[0].Name)
	}

	// The last one appears (unbound: binding is the scheduler's wait, not the controller's).
	if _, err := e.kube.CoreV1().PersistentVolumeClaims(e.ns).Create(ctx, newClaim("late-blk", corev1.PersistentVolumeBlock), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "a launcher pod with both claims, the conditions gone", 30*time.Second, func() (bool, string) {
		p := pods()
		if len(p) != 1 {
			return false, fmt.Sprintf("%d launcher pods", len(p))
		}
		vmi, err := e.getVMI("pvcmissing")
		if err != nil {
			return false, err.Error()
		}
		if c := vmi.Status.Condition(v1.VirtualMachineInstanceSynchronized); c != nil {
			return false, fmt.Sprintf("Synchronized still %+v", c)
		}
		if c := vmi.Status.Condition(v1.VirtualMachineInstancePodScheduled); c != nil && c.Reason == v1.UnschedulableReason {
			return false, fmt.Sprintf("PodScheduled still %+v", c)
		}
		return true, ""
	})
	pod := pods()[0]
	vols := map[string]*corev1.PersistentVolumeClaimVolumeSource{}
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			vols[v.Name] = v.PersistentVolumeClaim
		}
	}
	if c := vols["root"]; c == nil || c.ClaimName != "late-fs" || c.ReadOnly {
		t.Errorf("pod volume root: %+v", c)
	}
	if c := vols["data"]; c == nil || c.ClaimName != "late-blk" || !c.ReadOnly {
		t.Errorf("pod volume data (read-only claim): %+v", c)
	}
	compute := pod.Spec.Containers[0]
	mounted := false
	for _, m := range compute.VolumeMounts {
		mounted = mounted || m.Name == "root" && m.MountPath == controller.VMIDisksDir+"/root"
	}
	if !mounted {
		t.Errorf("filesystem claim not mounted at %s/root: %+v", controller.VMIDisksDir, compute.VolumeMounts)
	}
	if len(compute.VolumeDevices) != 1 || compute.VolumeDevices[0].Name != "data" || compute.VolumeDevices[0].DevicePath != "/dev/data" {
		t.Errorf("block claim devices %+v", compute.VolumeDevices)
	}
	testenv.Eventually(t, "the VM past ErrorPvcNotFound", 30*time.Second, func() (bool, string) {
		vm := e.getVM(t, "pvcmissing")
		return vm.Status.PrintableStatus != v1.VirtualMachineStatusPvcNotFound, string(vm.Status.PrintableStatus)
	})
}
