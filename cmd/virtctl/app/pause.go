package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/kvirt/kvirt/api/v1"
)

type pauseVerb string

const (
	verbPause   pauseVerb = "pause"
	verbUnpause pauseVerb = "unpause"
)

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

// resourceKind normalises the first argument of pause/unpause/expose/rename.
func resourceKind(arg string) (string, error) {
	switch strings.ToLower(arg) {
	case "vm", "vms", "virtualmachine", "virtualmachines":
		return "vm", nil
	case "vmi", "vmis", "virtualmachineinstance", "virtualmachineinstances":
		return "vmi", nil
	}
	return "", fmt.Errorf("unsupported resource type: %s", arg)
}

func newPauseCommand(e *env, verb pauseVerb) *cobra.Command {
	var dryRun bool
	short, long := "Pause a virtual machine", "Pauses a virtual machine by freezing it. Machine state is kept in memory."
	if verb == verbUnpause {
		short, long = "Unpause a virtual machine", "Unpauses a virtual machine."
	}
	cmd := &cobra.Command{
		Use:   string(verb) + " vm|vmi (VM)|(VMI)",
		Short: short,
		Long: long + `
First argument is the resource type, possible types are (case insensitive, both singular and plural forms) virtualmachineinstance (vmi) or virtualmachine (vm).
Second argument is the name of the resource.`,
		Example: e.example(fmt.Sprintf("# %s a virtualmachine called 'myvm':", strings.ToUpper(string(verb[:1]))+string(verb[1:])),
			fmt.Sprintf("{{virtctl}} %s vm myvm", verb)),
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: e.completeKindName("vm", "vmi"),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, err := resourceKind(args[0])
			if err != nil {
				return err
			}
			return e.pause(cmd.Context(), verb, kind, args[1], dryRun)
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, dryRunUsage)
	return cmd
}

func (e *env) pause(ctx context.Context, verb pauseVerb, kind, name string, dryRun bool) error {
	c, err := e.connect()
	if err != nil {
		return err
	}
	ing := "pausing"
	if verb == verbUnpause {
		ing = "unpausing"
	}
	vmiName := name
	var vm *v1.VirtualMachine
	if kind == "vm" {
		vm, err = c.Kubevirt.KubevirtV1().VirtualMachines(c.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("Error getting VirtualMachine %s: %v", name, err)
		}
		vmiName = vm.Name
	}
	fail := func(err error) error {
		return fmt.Errorf("Error %s VirtualMachineInstance %s: %v", ing, vmiName, err)
	}
	vmi, err := c.Kubevirt.KubevirtV1().VirtualMachineInstances(c.Namespace).Get(ctx, vmiName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if vm != nil && verb == verbPause {
			if rs, rerr := vm.RunStrategy(); rerr == nil && rs == v1.RunStrategyHalted {
				return fmt.Errorf("Error pausing VirtualMachineInstance %s. VirtualMachine %s is not set to run", vmiName, vm.Name)
			}
			return fmt.Errorf("Error pausing VirtualMachineInstance %s, it was not found", vmiName)
		}
		return fail(apierrors.NewNotFound(v1.Resource("virtualmachineinstance"), vmiName))
	} else if err != nil {
		return fail(err)
	}
	check := PauseCheck
	if verb == verbUnpause {
		check = UnpauseCheck
	}
	if err := check(vmi); err != nil {
		return fail(err)
	}
	pod, err := launcherPod(ctx, c, vmi)
	if err != nil {
		return fail(err)
	}
	if pod == nil {
		return fail(vmiConflict(vmiName, "VMI has no running launcher pod"))
	}
	if dryRun {
		fmt.Fprintln(e.Out, "Dry Run execution")
	} else {
		var stderr bytes.Buffer
		err := e.executor(c).Exec(ctx, ExecRequest{
			Namespace: c.Namespace, Pod: pod.Name, Container: LauncherContainer,
			Command: []string{LauncherBinary, string(verb)},
			Stdout:  &stderr, Stderr: &stderr,
		})
		if err != nil {
			if out := strings.TrimSpace(stderr.String()); out != "" {
				err = fmt.Errorf("%s: %v", out, err)
			}
			return fail(apierrors.NewInternalError(err))
		}
	}
	fmt.Fprintf(e.Out, "VMI %s was scheduled to %s\n", vmiName, verb)
	return nil
}
