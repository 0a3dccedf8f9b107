package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/lifecycle"
)

// msgMustForceAndGrace is KubeVirt's virtctl refusing only one of --force and --grace-period.
const msgMustForceAndGrace = "Must both use --force=true and set --grace-period."

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
			err := e.lifecycle(cmd.Context(), name, dryRun, func(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance) (lifecycle.Plan, error) {
				return lifecycle.StartPlan(vm, vmi, paused)
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
		plan:     lifecycle.StopPlan,
	})
}

func newRestartCommand(e *env) *cobra.Command {
	return newForceableCommand(e, forceableVerb{
		name: "restart", short: "Restart a virtual machine.", gerund: "restarting", done: "restart",
		example: []string{"# Restart a virtual machine called 'myvm':", "{{virtctl}} restart myvm",
			"# Restart it at once, without a graceful guest shutdown:", "{{virtctl}} restart myvm --force --grace-period=0"},
		errorFmt: "error restarting VirtualMachine: %v",
		plan:     lifecycle.RestartPlan,
	})
}

// forceableVerb describes a VM verb taking --force/--grace-period/--dry-run (stop, restart).
type forceableVerb struct {
	name, short, gerund, done string
	example                   []string
	errorFmt                  string // graceful failure; the forced one is "error force <gerund> VirtualMachine: %v"
	plan                      func(*v1.VirtualMachine, *v1.VirtualMachineInstance, *int64) (lifecycle.Plan, error)
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
			err = e.lifecycle(cmd.Context(), name, dryRun, func(vm *v1.VirtualMachine, vmi *v1.VirtualMachineInstance) (lifecycle.Plan, error) {
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

// lifecycle applies a start, stop or restart (lifecycle.Apply) to the VM name; with dryRun every write
// is sent with dryRun=All so the apiserver validates it and persists nothing.
func (e *env) lifecycle(ctx context.Context, name string, dryRun bool, decide lifecycle.Decide) error {
	c, err := e.connect()
	if err != nil {
		return err
	}
	var opts lifecycle.ApplyOptions
	if dryRun {
		fmt.Fprintln(e.Out, "Dry Run execution")
		opts.DryRun = []string{metav1.DryRunAll}
	}
	opts.BeforeApply = e.BeforeApply
	return lifecycle.Apply(ctx, lifecycle.Clients{Kubevirt: c.Kubevirt, Kube: c.Kube}, c.Namespace, name, decide, opts)
}
