package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/kvirt/kvirt/api/client/clientset/versioned"
	v1 "github.com/kvirt/kvirt/api/v1"
)

// Clients are the API clients a request is applied with: the user's own (virtctl) or virt-api's.
type Clients struct {
	Kubevirt versioned.Interface
	Kube     kubernetes.Interface
}

// Decide turns a VM and its VMI (nil when it has none) into a Plan, or refuses with an API error.
type Decide func(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance) (Plan, error)

// ApplyOptions modify Apply.
type ApplyOptions struct {
	// DryRun is sent with every write (metav1.DryRunAll: the apiserver validates and persists nothing).
	DryRun []string
	// BeforeApply, when set, runs after the decision and before the first write. Tests use it to race a
	// concurrent request deterministically.
	BeforeApply func()
}

// Apply reads the VM namespace/name and its VMI, asks decide for a Plan and applies it in the Plan's
// order. A VM that does not exist is KubeVirt's 404 (virtualmachine.kubevirt.io "N" not found); a
// guarded patch whose test fails is a 409 naming the VM; other failures are 500s, except RBAC refusals
// and unreachable apiservers, which pass unchanged.
func Apply(ctx context.Context, c Clients, namespace, name string, decide Decide, opts ApplyOptions) error {
	vms := c.Kubevirt.KubevirtV1().VirtualMachines(namespace)
	vm, err := vms.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return apierrors.NewNotFound(v1.Resource("virtualmachine"), name)
	} else if err != nil {
		return Internal(err)
	}
	vmi, err := c.Kubevirt.KubevirtV1().VirtualMachineInstances(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		vmi = nil
	} else if err != nil {
		return Internal(err)
	}
	plan, err := decide(vm, vmi)
	if err != nil {
		return err
	}
	if opts.BeforeApply != nil {
		opts.BeforeApply()
	}
	po := metav1.PatchOptions{DryRun: opts.DryRun}
	if plan.VMIPatch != nil {
		_, err := c.Kubevirt.KubevirtV1().VirtualMachineInstances(namespace).Patch(ctx, vmi.Name, types.JSONPatchType, plan.VMIPatch, po)
		if err != nil {
			return Internal(err)
		}
	}
	if plan.VMPatch != nil {
		if _, err := vms.Patch(ctx, name, types.JSONPatchType, plan.VMPatch, po); err != nil {
			return patchError(name, err)
		}
	}
	if plan.StatusPatch != nil {
		if _, err := vms.Patch(ctx, name, types.JSONPatchType, plan.StatusPatch, po, "status"); err != nil {
			return patchError(name, err)
		}
	}
	if plan.DeletePodGrace != nil {
		pod, err := LauncherPod(ctx, c.Kube, vmi)
		if err != nil {
			return Internal(err)
		}
		if pod != nil {
			err := c.Kube.CoreV1().Pods(namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: plan.DeletePodGrace, DryRun: opts.DryRun})
			if err != nil && !apierrors.IsNotFound(err) {
				return Internal(err)
			}
		}
	}
	return nil
}

// patchError maps a failed guarded patch as virt-api does: a failed "test" (someone changed the VM since
// it was read) is a 409 Conflict naming the VM, anything else a 500. The apiserver answers a failed
// JSON-patch test with a bare 422 "the server rejected our request due to an error in our request" (the
// patch library's text is dropped), which is what KubeVirt matches too; so the user reads
// `Operation cannot be fulfilled on virtualmachine.kubevirt.io "N": the server rejected our request …`.
func patchError(vmName string, err error) error {
	const jsonPatchTestFailed = "the server rejected our request due to an error in our request"
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		st := se.Status()
		if (st.Code == http.StatusUnprocessableEntity && st.Message == jsonPatchTestFailed) ||
			strings.Contains(st.Message, "test failed") || strings.Contains(st.Message, "test operation does not apply") {
			return apierrors.NewConflict(v1.Resource("virtualmachine"), vmName, errors.New(st.Message))
		}
	}
	return Internal(err)
}

// Internal wraps err as virt-api's 500, except the errors a user can act on directly, which pass
// unchanged: RBAC (403, 401) and failures to reach the apiserver at all.
func Internal(err error) error {
	var se apierrors.APIStatus
	if !errors.As(err, &se) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		return err
	}
	return apierrors.NewInternalError(err)
}

// LauncherPod returns the VMI's running launcher pod (labels kubevirt.io=virt-launcher and
// kubevirt.io/created-by=<VMI UID>, the newest if there are several), or nil when there is none.
func LauncherPod(ctx context.Context, kube kubernetes.Interface, vmi *v1.VirtualMachineInstance) (*corev1.Pod, error) {
	sel := labels.Set{v1.AppLabel: v1.VirtLauncherValue, v1.CreatedByLabel: string(vmi.UID)}.AsSelector()
	pods, err := kube.CoreV1().Pods(vmi.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("list launcher pods of VMI %s: %w", vmi.Name, err)
	}
	var found *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		if found == nil || p.CreationTimestamp.After(found.CreationTimestamp.Time) {
			found = p
		}
	}
	return found, nil
}
