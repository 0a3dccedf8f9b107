package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/kvirt/kvirt/api/v1"
)

const (
	dryRunUsage    = "--dry-run=false: Flag used to set whether to perform a dry run or not. If true the command will be executed without performing any changes."
	forceUsage     = "--force=false: Only used when grace-period=0. If true, immediately remove VMI pod from API and bypass graceful deletion. Note that immediate deletion of some resources may result in inconsistency or data loss and requires confirmation."
	gracePeriodArg = "grace-period"
)

func newStartCommand(e *env) *cobra.Command {
	var paused, dryRun bool
	cmd := &cobra.Command{
		Use:               "start (VM)",
		Short:             "Start a virtual machine.",
		Example:           e.example("# Start a virtual machine called 'myvm':", "{{virtctl}} start myvm"),
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: e.completeName("vm"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			err := e.lifecycle(cmd.Context(), name, dryRun, func(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance) (Plan, error) {
				return StartPlan(vm, vmi, paused)
			})
			if err != nil {
				return fmt.Errorf("Error starting VirtualMachine %v", err)
			}
			fmt.Fprintf(e.Out, "VM %s was scheduled to start\n", name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&paused, "paused", false, "--paused=false: If set to true, start virtual machine in paused state")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, dryRunUsage)
	return cmd
}

func newStopCommand(e *env) *cobra.Command {
	return newForceableCommand(e, forceableVerb{
		name: "stop", short: "Stop a virtual machine.", gerund: "stopping", done: "stop",
		example: []string{"# Stop a virtual machine called 'myvm':", "{{virtctl}} stop myvm",
			"# Stop it now, giving the guest 0 seconds to shut down:", "{{virtctl}} stop myvm --force --grace-period=0"},
		// KubeVirt's stop message has no colon in its graceful form.
		errorFmt: "error stopping VirtualMachine %v",
		plan:     StopPlan,
	})
}

func newRestartCommand(e *env) *cobra.Command {
	return newForceableCommand(e, forceableVerb{
		name: "restart", short: "Restart a virtual machine.", gerund: "restarting", done: "restart",
		example: []string{"# Restart a virtual machine called 'myvm':", "{{virtctl}} restart myvm",
			"# Restart it at once, without a graceful guest shutdown:", "{{virtctl}} restart myvm --force --grace-period=0"},
		errorFmt: "error restarting VirtualMachine: %v",
		plan:     RestartPlan,
	})
}

// forceableVerb describes a VM verb taking --force/--grace-period/--dry-run (stop, restart).
type forceableVerb struct {
	name, short, gerund, done string
	example                   []string
	errorFmt                  string // graceful failure; the forced one is "error force <gerund> VirtualMachine: %v"
	plan                      func(*v1.VirtualMachine, *v1.VirtualMachineInstance, *int64) (Plan, error)
}

func newForceableCommand(e *env, verb forceableVerb) *cobra.Command {
	var force, dryRun bool
	var grace int64
	cmd := &cobra.Command{
		Use:               verb.name + " (VM)",
		Short:             verb.short,
		Example:           e.example(verb.example...),
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: e.completeName("vm"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			g, err := forceGrace(cmd, force, grace)
			if err != nil {
				return err
			}
			errorFmt := verb.errorFmt
			if g != nil {
				errorFmt = "error force " + verb.gerund + " VirtualMachine: %v"
			}
			err = e.lifecycle(cmd.Context(), name, dryRun, func(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance) (Plan, error) {
				return verb.plan(vm, vmi, g)
			})
			if err != nil {
				return fmt.Errorf(errorFmt, err)
			}
			fmt.Fprintf(e.Out, "VM %s was scheduled to %s\n", name, verb.done)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, forceUsage)
	cmd.Flags().Int64Var(&grace, gracePeriodArg, -1, "--grace-period=-1: Period of time in seconds given to the VMI to terminate gracefully. Can only be set to 0 when --force is true (force deletion). Currently only setting 0 is supported.")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, dryRunUsage)
	return cmd
}

// forceGrace validates --force/--grace-period as KubeVirt does: both or neither. It returns the grace
// period to send, or nil for a normal (graceful) request.
func forceGrace(cmd *cobra.Command, force bool, grace int64) (*int64, error) {
	if cmd.Flags().Changed(gracePeriodArg) != force {
		return nil, errors.New(msgMustForceAndGrace)
	}
	if !force {
		return nil, nil
	}
	return &grace, nil
}

// lifecycle reads the VM and its VMI, asks decide for a Plan and applies it; with dryRun every write is
// sent with dryRun=All so the apiserver validates it and persists nothing.
func (e *env) lifecycle(ctx context.Context, name string, dryRun bool, decide func(*v1.VirtualMachine, *v1.VirtualMachineInstance) (Plan, error)) error {
	c, err := e.connect()
	if err != nil {
		return err
	}
	var dry []string
	if dryRun {
		fmt.Fprintln(e.Out, "Dry Run execution")
		dry = []string{metav1.DryRunAll}
	}
	vms := c.Kubevirt.KubevirtV1().VirtualMachines(c.Namespace)
	vm, err := vms.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return apierrors.NewNotFound(v1.Resource("virtualmachine"), name)
	} else if err != nil {
		return internal(err)
	}
	vmi, err := c.Kubevirt.KubevirtV1().VirtualMachineInstances(c.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		vmi = nil
	} else if err != nil {
		return internal(err)
	}
	plan, err := decide(vm, vmi)
	if err != nil {
		return err
	}
	if e.BeforeApply != nil {
		e.BeforeApply()
	}
	opts := metav1.PatchOptions{DryRun: dry}
	if plan.VMIPatch != nil {
		_, err := c.Kubevirt.KubevirtV1().VirtualMachineInstances(c.Namespace).Patch(ctx, vmi.Name, types.JSONPatchType, plan.VMIPatch, opts)
		if err != nil {
			return internal(err)
		}
	}
	if plan.VMPatch != nil {
		if _, err := vms.Patch(ctx, name, types.JSONPatchType, plan.VMPatch, opts); err != nil {
			return patchError(name, err)
		}
	}
	if plan.StatusPatch != nil {
		if _, err := vms.Patch(ctx, name, types.JSONPatchType, plan.StatusPatch, opts, "status"); err != nil {
			return patchError(name, err)
		}
	}
	if plan.DeletePodGrace != nil {
		pod, err := launcherPod(ctx, c, vmi)
		if err != nil {
			return internal(err)
		}
		if pod != nil {
			err := c.Kube.CoreV1().Pods(c.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: plan.DeletePodGrace, DryRun: dry})
			if err != nil && !apierrors.IsNotFound(err) {
				return internal(err)
			}
		}
	}
	return nil
}

// patchError maps a failed guarded patch as virt-api does: a failed "test" (someone changed the VM since
// we read it) is a 409 Conflict naming the VM, anything else a 500. The apiserver answers a failed
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
	return internal(err)
}

// internal wraps err as virt-api's 500, except the errors a user can act on directly, which pass
// unchanged: RBAC (403, 401) and failures to reach the apiserver at all.
func internal(err error) error {
	var se apierrors.APIStatus
	if !errors.As(err, &se) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		return err
	}
	return apierrors.NewInternalError(err)
}

// launcherPod returns the VMI's running launcher pod (labels kubevirt.io=virt-launcher and
// kubevirt.io/created-by=<VMI UID>), or nil when there is none.
func launcherPod(ctx context.Context, c *Clients, vmi *v1.VirtualMachineInstance) (*corev1.Pod, error) {
	sel := labels.Set{v1.AppLabel: v1.VirtLauncherValue, v1.CreatedByLabel: string(vmi.UID)}.AsSelector()
	pods, err := c.Kube.CoreV1().Pods(c.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
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
