package app

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Shell completion of names: cobra's `completion bash|zsh|fish` scripts call back into virtctl
// (`virtctl __complete …`), which lists the VMs or VMIs of the namespace the flags select.

// names lists VM ("vm") or VMI ("vmi") names starting with prefix; any error yields no suggestions.
func (e *env) names(ctx context.Context, kind, prefix string) []string {
	c, err := e.connect()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var all []string
	if kind == "vm" {
		l, err := c.Kubevirt.KubevirtV1().VirtualMachines(c.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil
		}
		for _, o := range l.Items {
			all = append(all, o.Name)
		}
	} else {
		l, err := c.Kubevirt.KubevirtV1().VirtualMachineInstances(c.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil
		}
		for _, o := range l.Items {
			all = append(all, o.Name)
		}
	}
	var out []string
	for _, n := range all {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}

// completeName completes the single NAME argument of start/stop/restart (VMs) or console (VMIs).
func (e *env) completeName(kind string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) != 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return e.names(cmd.Context(), kind, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeKindName completes `vm|vmi NAME` (pause, unpause, expose, rename).
func (e *env) completeKindName(kinds ...string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			return kinds, cobra.ShellCompDirectiveNoFileComp
		case 1:
			if kind, err := resourceKind(args[0]); err == nil {
				return e.names(cmd.Context(), kind, toComplete), cobra.ShellCompDirectiveNoFileComp
			}
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}
