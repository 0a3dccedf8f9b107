package controller

import (
	"strings"
	"testing"
	"time"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/control"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
)

// TestBootCondition: the launcher's boot decision becomes the BootedFromDisk condition and one event per
// change, as sync writes them.
func TestBootCondition(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	now := metav1.NewTime(time.Unix(1700000000, 0))
	vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "deb", Namespace: "default"}}

	for _, tc := range []struct {
		boot   *control.Boot
		status corev1.ConditionStatus
		reason string
		event  string // "" when none is expected
	}{
		{nil, "", "", ""},
		{&control.Boot{Kernel: control.ImageKernel, Disk: "root", Message: "booted the image's own kernel /boot/vmlinuz"},
			corev1.ConditionTrue, ReasonImageKernel, "Normal ImageKernel booted the image's own kernel /boot/vmlinuz"},
		{&control.Boot{Kernel: control.ImageKernel, Disk: "root", Message: "booted the image's own kernel /boot/vmlinuz"},
			corev1.ConditionTrue, ReasonImageKernel, ""}, // unchanged: no second event
		{&control.Boot{Kernel: control.PlatformKernel, Message: "booted kvirt's platform kernel with /dev/vda1"},
			corev1.ConditionTrue, ReasonPlatformKernel, "Normal PlatformKernel booted kvirt's platform kernel"},
		{&control.Boot{Kernel: control.BuiltInGuest, Disk: "data", Message: `no bootable operating system on disk "data": booting kvirt's built-in guest`},
			corev1.ConditionFalse, ReasonNoBootableDisk, `Warning NoBootableDisk no bootable operating system on disk "data"`},
		{&control.Boot{Kernel: control.KernelBootKernel, Message: "booted /boot/k"}, corev1.ConditionFalse, ReasonKernelBoot, "Normal KernelBoot"},
	} {
		st := vmi.Status.DeepCopy()
		var state *LauncherState
		if tc.boot != nil {
			state = &LauncherState{Phase: GuestRunning, Boot: tc.boot}
		}
		applyBootCondition(st, state, now)
		cond := st.Condition(v1.VirtualMachineInstanceBootedFromDisk)
		if tc.boot == nil {
			if cond != nil {
				t.Fatalf("a condition without a decision: %+v", cond)
			}
			continue
		}
		if cond == nil || cond.Status != tc.status || cond.Reason != tc.reason || cond.Message != tc.boot.Message {
			t.Fatalf("%s: condition %+v", tc.boot.Kernel, cond)
		}
		recordBootEvent(rec, vmi, st)
		select {
		case ev := <-rec.Events:
			if tc.event == "" || !strings.HasPrefix(ev, tc.event) {
				t.Fatalf("%s: event %q, want %q", tc.boot.Kernel, ev, tc.event)
			}
		default:
			if tc.event != "" {
				t.Fatalf("%s: no event, want %q", tc.boot.Kernel, tc.event)
			}
		}
		vmi.Status = *st
	}
	// A final report without a decision (the launcher gone) keeps the condition.
	st := vmi.Status.DeepCopy()
	applyBootCondition(st, &LauncherState{Phase: GuestSucceeded}, now)
	if st.Condition(v1.VirtualMachineInstanceBootedFromDisk) == nil {
		t.Fatal("the condition was dropped")
	}
}

func TestFromControlStatusBoot(t *testing.T) {
	b := &control.Boot{Kernel: control.PlatformKernel, Disk: "root", Message: "m"}
	if got := fromControlStatus(control.Status{Phase: control.Running, Boot: b}); got.Boot == nil || *got.Boot != *b {
		t.Fatalf("boot not carried: %+v", got.Boot)
	}
}

// FuzzBootCondition: whatever the launcher reports as its boot decision (it runs next to the guest and is
// not trusted), the condition says True only for the OS's kernels, carries the message as given, and an
// event is recorded once per change.
func FuzzBootCondition(f *testing.F) {
	f.Add("Image", "booted the image's own kernel", "Platform", "m")
	f.Add("BuiltIn", "no bootable operating system on disk \"x\"", "", "")
	f.Add("\x00", "", "Image", "booted the image's own kernel")
	f.Fuzz(func(t *testing.T, k1, m1, k2, m2 string) {
		rec := record.NewFakeRecorder(4)
		vmi := &v1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Name: "f", Namespace: "ns"}}
		for i, b := range []control.Boot{{Kernel: control.BootKernel(k1), Message: m1}, {Kernel: control.BootKernel(k2), Message: m2}} {
			st := vmi.Status.DeepCopy()
			applyBootCondition(st, &LauncherState{Phase: GuestRunning, Boot: &b}, metav1.Now())
			cond := st.Condition(v1.VirtualMachineInstanceBootedFromDisk)
			if cond == nil || cond.Message != b.Message {
				t.Fatalf("report %d %+v: condition %+v", i, b, cond)
			}
			isOS := b.Kernel == control.ImageKernel || b.Kernel == control.PlatformKernel
			if (cond.Status == corev1.ConditionTrue) != isOS {
				t.Fatalf("kernel %q gave status %s", b.Kernel, cond.Status)
			}
			recordBootEvent(rec, vmi, st)
			changed := i == 0 || cond.Reason != vmi.Status.Condition(v1.VirtualMachineInstanceBootedFromDisk).Reason || m1 != m2
			if got := len(rec.Events); (got == 1) != changed {
				t.Fatalf("report %d: %d events, change %v", i, got, changed)
			}
			for len(rec.Events) > 0 {
				<-rec.Events
			}
			vmi.Status = *st
		}
	})
}

// recordBootEvent records bootEvent's event as the VMI sync does once the status is written.
func recordBootEvent(rec record.EventRecorder, vmi *v1.VirtualMachineInstance, st *v1.VirtualMachineInstanceStatus) {
	if ev := bootEvent(&vmi.Status, st); ev != nil {
		rec.Event(vmi, ev.eventType, ev.reason, ev.message)
	}
}
