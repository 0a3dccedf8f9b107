package app

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/kvirt/kvirt/api/v1"
	"github.com/kvirt/kvirt/lifecycle"
)

type pauseVerb string

const (
	verbPause   pauseVerb = "pause"
	verbUnpause pauseVerb = "unpause"
)

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
	if dryRun {
		fmt.Fprintln(e.Out, "Dry Run execution") // first, as KubeVirt's virtctl does
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
	err = lifecycle.PauseVMI(ctx, lifecycle.Clients{Kubevirt: c.Kubevirt, Kube: c.Kube}, e.executor(c), c.Namespace, vmiName, verb == verbPause, dryRun)
	if apierrors.IsNotFound(err) && vm != nil && verb == verbPause {
		if rs, rerr := vm.RunStrategy(); rerr == nil && rs == v1.RunStrategyHalted {
			return fmt.Errorf("Error pausing VirtualMachineInstance %s. VirtualMachine %s is not set to run", vmiName, vm.Name)
		}
		return fmt.Errorf("Error pausing VirtualMachineInstance %s, it was not found", vmiName)
	}
	if err != nil {
		return fmt.Errorf("Error %s VirtualMachineInstance %s: %v", ing, vmiName, err)
	}
	fmt.Fprintf(e.Out, "VMI %s was scheduled to %s\n", vmiName, verb)
	return nil
}
