package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/kvirt/kvirt/api/v1"
)

// msgNoLauncherPod refuses a pause or unpause of a VMI whose launcher pod is not running (kvirt's own:
// KubeVirt asks the node's virt-handler instead).
const msgNoLauncherPod = "VMI has no running launcher pod"

func vmiConflict(vmiName, msg string) error {
	return apierrors.NewConflict(v1.Resource("virtualmachineinstance"), vmiName, errors.New(msg))
}

// PauseCheck is virt-api's validation before a pause: the VMI must be Running and not already paused.
func PauseCheck(vmi *v1.VirtualMachineInstance) error {
	if vmi.Status.Phase != v1.Running {
		return vmiConflict(vmi.Name, msgNotRunning)
	}
	if vmi.Status.HasCondition(v1.VirtualMachineInstancePaused, corev1.ConditionTrue) {
		return vmiConflict(vmi.Name, msgAlreadyPaused)
	}
	return nil
}

// UnpauseCheck is virt-api's validation before an unpause: the VMI must be Running and paused.
func UnpauseCheck(vmi *v1.VirtualMachineInstance) error {
	if vmi.Status.Phase != v1.Running {
		return vmiConflict(vmi.Name, msgVMINotRunning)
	}
	if !vmi.Status.HasCondition(v1.VirtualMachineInstancePaused, corev1.ConditionTrue) {
		return vmiConflict(vmi.Name, msgNotPaused)
	}
	return nil
}

// PauseVMI pauses (pause true) or unpauses the VMI namespace/name as virt-api's pause and unpause
// handlers do: a missing VMI is a 404, a VMI in the wrong state a 409 (PauseCheck, UnpauseCheck), and
// with dryRun nothing more happens. Otherwise it runs `virt-launcher pause|unpause` in the VMI's running
// launcher pod through x; a failure there is a 500 carrying the launcher's reason. The controller learns
// the new state from the launcher's control API and writes the VMI's Paused condition.
func PauseVMI(ctx context.Context, c Clients, x Executor, namespace, name string, pause, dryRun bool) error {
	vmi, err := c.Kubevirt.KubevirtV1().VirtualMachineInstances(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return apierrors.NewNotFound(v1.Resource("virtualmachineinstance"), name)
	} else if err != nil {
		return Internal(err)
	}
	check, verb := PauseCheck, "pause"
	if !pause {
		check, verb = UnpauseCheck, "unpause"
	}
	if err := check(vmi); err != nil {
		return err
	}
	pod, err := LauncherPod(ctx, c.Kube, vmi)
	if err != nil {
		return Internal(err)
	}
	if pod == nil {
		return vmiConflict(name, msgNoLauncherPod)
	}
	if dryRun {
		return nil
	}
	var out bytes.Buffer
	err = x.Exec(ctx, ExecRequest{
		Namespace: pod.Namespace, Pod: pod.Name, Container: LauncherContainer,
		Command: []string{LauncherBinary, verb},
		Stdout:  &out, Stderr: &out,
	})
	if err != nil {
		if s := strings.TrimSpace(out.String()); s != "" {
			err = fmt.Errorf("%s: %v", s, err)
		}
		return apierrors.NewInternalError(err)
	}
	return nil
}
