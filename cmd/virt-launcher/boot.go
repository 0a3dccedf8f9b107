package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/kvirt/kvirt/vmm/bootcmd"
)

// Exit codes of virt-launcher (those of `boot` are bootcmd's).
const (
	ExitPoweredOff = bootcmd.ExitPoweredOff // the guest powered off
	ExitUsage      = bootcmd.ExitUsage      // bad flags or arguments
	ExitCrashed    = bootcmd.ExitCrashed    // the guest crashed (triple fault, emulation failure)
	ExitVMMError   = bootcmd.ExitVMMError   // the VMM failed (KVM unavailable, bad kernel, internal error)
	ExitStopped    = bootcmd.ExitStopped    // hard stop (second Ctrl-C / SIGTERM twice)
	ExitRebooted   = bootcmd.ExitRebooted   // the guest rebooted and --on-reboot=exit
)

type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

// newBootCommand is `virt-launcher boot`: the lean kvirt-vmm command (vmm/bootcmd) with the same flags, run
// in this process.
func newBootCommand() *cobra.Command {
	var f *bootcmd.Flags
	cmd := &cobra.Command{
		Use:   "boot " + bootcmd.Use,
		Short: bootcmd.Short,
		Long: bootcmd.Long + `

kvirt-vmm runs the same command in a much smaller binary (faster start, less memory).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := bootcmd.Run(f, "virt-launcher")
			var ee bootcmd.ExitError
			if errors.As(err, &ee) {
				return exitError{ee.Code, ee.Err}
			}
			return err
		},
	}
	f = bootcmd.AddFlags(cmd.Flags())
	_ = cmd.MarkFlagRequired("kernel")
	return cmd
}

func usage(format string, args ...any) error {
	return exitError{ExitUsage, fmt.Errorf(format, args...)}
}

// rawTerminal puts a terminal in raw-ish mode, keeping Ctrl-C as SIGINT (see bootcmd.RawTerminal).
func rawTerminal(fd int) (func(), error) { return bootcmd.RawTerminal(fd) }

func isDevNull(f *os.File) bool { return bootcmd.IsDevNull(f) }
