// Command virt-launcher runs one virtual machine on kvirt's VMM. `virt-launcher boot` boots a kernel
// directly with the console on the terminal.
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
	if err := root.Execute(); err != nil {
		os.Stderr.WriteString("virt-launcher: " + err.Error() + "\n")
		if e, ok := err.(exitError); ok {
			os.Exit(e.code)
		}
		os.Exit(ExitUsage)
	}
}
