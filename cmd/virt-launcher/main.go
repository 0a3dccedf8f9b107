// Command virt-launcher runs one virtual machine on kvirt's VMM. `virt-launcher boot` boots a kernel
// directly with the console on the terminal; `virt-launcher run -f vmi.yaml` runs a VMI locally or in a
// launcher pod; `pause`, `unpause` and `console` are what virtctl executes in the pod.
package main

import (
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "virt-launcher",
		Short:         "Run a kvirt virtual machine on /dev/kvm",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newBootCommand())
	root.AddCommand(newRunCommand())
	root.AddCommand(newPodCommand())
	root.AddCommand(newContainerDiskCommand())
	root.AddCommand(newExecCommands()...)
	if err := root.Execute(); err != nil {
		e, ok := err.(exitError)
		if !ok || e.err != errReported {
			os.Stderr.WriteString("virt-launcher: " + err.Error() + "\n")
		}
		if ok {
			os.Exit(e.code)
		}
		os.Exit(ExitUsage)
	}
}
