package controller

import (
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FuzzVMIStatus feeds arbitrary launcher reports and pod states (the launcher runs next to the guest, so
// its reports are not trusted) into the VMI status computation and checks its invariants: no panic, no
// phase going backwards (but into and out of Unknown), Unknown exactly while a live pod's node is lost,
// Ready only for a running unpaused guest, Paused only while Running (or Unknown, which keeps it).
func FuzzVMIStatus(f *testing.F) {
	f.Add(uint8(2), uint8(1), uint8(1), true, false, true, false, "Crashed", "boom", "10.0.0.1", "02:00:00:00:00:01")
	f.Add(uint8(3), uint8(3), uint8(2), false, true, false, false, "", "", "", "")
	f.Add(uint8(5), uint8(1), uint8(2), true, true, true, true, "", "", "", "")
	f.Fuzz(func(t *testing.T, vmiPhase, podPhase, guestPhase uint8, havePod, podDeleting, ready, lost bool, reason, msg, ip, mac string) {
		phases := []v1.VirtualMachineInstancePhase{"", v1.Pending, v1.Scheduling, v1.Scheduled, v1.Running, v1.Unknown}
		podPhases := []corev1.PodPhase{corev1.PodPending, corev1.PodRunning, corev1.PodSucceeded, corev1.PodFailed}
		guest := []GuestPhase{"", GuestStarting, GuestRunning, GuestSucceeded, GuestFailed, GuestPhase(reason)}
		vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "f", Namespace: "ns", UID: "u"}}
		vmi.Status.Phase = phases[int(vmiPhase)%len(phases)]
		vmi.Spec.Domain.Devices.Interfaces = []v1.Interface{{Name: "default", MacAddress: mac}}
		var pod *corev1.Pod
		if havePod {
			pod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{NodeName: "n"}}
			pod.Status.Phase = podPhases[int(podPhase)%len(podPhases)]
			pod.Status.PodIP = ip
			pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: LauncherContainerName, Ready: ready}}
			if podDeleting {
				ts := metav1.Now()
				pod.DeletionTimestamp = &ts
			}
		}
		var state *LauncherState
		if g := guest[int(guestPhase)%len(guest)]; g != "" {
			state = &LauncherState{Phase: g, Paused: ready && podDeleting, Reason: reason, Message: msg,
				Interfaces: []v1.VirtualMachineInstanceNetworkInterface{{Name: "default", IP: ip, MAC: mac}}}
		}
		before := vmi.Status.Phase
		st := vmiStatus(vmi, pod, state, false, lost, time.Now())

		order := map[v1.VirtualMachineInstancePhase]int{"": 0, v1.Pending: 1, v1.Scheduling: 2, v1.Scheduled: 3, v1.Running: 4, v1.Succeeded: 5, v1.Failed: 5}
		if before != v1.Unknown && st.Phase != v1.Unknown && order[st.Phase] < order[before] {
			t.Fatalf("phase went back from %q to %q", before, st.Phase)
		}
		if (st.Phase == v1.Unknown) != (lost && !isFinalPhase(st.Phase) && pod != nil) {
			t.Fatalf("phase %q with lost=%v pod=%v", st.Phase, lost, pod != nil)
		}
		if st.HasCondition(v1.VirtualMachineInstanceReady, corev1.ConditionTrue) && (st.Phase != v1.Running || st.HasCondition(v1.VirtualMachineInstancePaused, corev1.ConditionTrue)) {
			t.Fatalf("Ready=True in phase %q (paused=%v)", st.Phase, st.HasCondition(v1.VirtualMachineInstancePaused, corev1.ConditionTrue))
		}
		if st.HasCondition(v1.VirtualMachineInstancePaused, corev1.ConditionTrue) && st.Phase != v1.Running && st.Phase != v1.Unknown {
			t.Fatalf("Paused in phase %q", st.Phase)
		}
		if st.Condition(v1.VirtualMachineInstanceReady) == nil {
			t.Fatal("no Ready condition")
		}
	})
}
