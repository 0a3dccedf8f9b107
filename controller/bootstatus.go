package controller

import (
	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/launcher/control"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Reasons of the BootedFromDisk condition, and of the event recorded when it is set (docs/boot.md).
const (
	ReasonImageKernel    = "ImageKernel"    // the OS image's own kernel and initrd
	ReasonPlatformKernel = "PlatformKernel" // kvirt's platform kernel on the image's root filesystem
	ReasonNoBootableDisk = "NoBootableDisk" // kvirt's built-in guest: no disk holds an OS (or forced)
	ReasonKernelBoot     = "KernelBoot"     // spec.domain.firmware.kernelBoot
	ReasonKernelOverride = "KernelOverride" // virt-launcher --kernel (debugging)
)

// bootCondition is the BootedFromDisk condition for the launcher's boot decision.
func bootCondition(b *control.Boot) v1.VirtualMachineInstanceCondition {
	c := v1.VirtualMachineInstanceCondition{Type: v1.VirtualMachineInstanceBootedFromDisk, Status: corev1.ConditionFalse, Message: b.Message}
	switch b.Kernel {
	case control.ImageKernel:
		c.Status, c.Reason = corev1.ConditionTrue, ReasonImageKernel
	case control.PlatformKernel:
		c.Status, c.Reason = corev1.ConditionTrue, ReasonPlatformKernel
	case control.BuiltInGuest:
		c.Reason = ReasonNoBootableDisk
	case control.KernelBootKernel:
		c.Reason = ReasonKernelBoot
	default:
		c.Reason = ReasonKernelOverride
	}
	return c
}

// applyBootCondition records the launcher's boot decision in the VMI status. The condition stays after the
// launcher stops reporting (a final phase keeps saying what ran).
func applyBootCondition(st *v1.VirtualMachineInstanceStatus, state *LauncherState, now metav1.Time) {
	if state == nil || state.Boot == nil {
		return
	}
	setVMICondition(st, bootCondition(state.Boot), now)
}

// bootEvent is the event of a status that gains or changes its BootedFromDisk condition (nil: none): Normal
// when an OS or kernelBoot kernel booted, Warning when the built-in guest booted instead.
func bootEvent(old, st *v1.VirtualMachineInstanceStatus) *vmiEvent {
	now := st.Condition(v1.VirtualMachineInstanceBootedFromDisk)
	if now == nil {
		return nil
	}
	if was := old.Condition(v1.VirtualMachineInstanceBootedFromDisk); was != nil && was.Reason == now.Reason && was.Message == now.Message {
		return nil
	}
	typ := corev1.EventTypeNormal
	if now.Reason == ReasonNoBootableDisk {
		typ = corev1.EventTypeWarning
	}
	return &vmiEvent{typ, now.Reason, now.Message}
}
