package main

import (
	"context"
	"errors"
	"os"

	"github.com/kvirt/kvirt/launcher"
	"github.com/kvirt/kvirt/launcher/control"
	"github.com/spf13/cobra"
)

// newExecCommands are the commands virtctl runs in the launcher pod through `kubectl exec`
// (cmd/virtctl/app/exec.go): pause, unpause and console against the control API's Unix socket.
func newExecCommands() []*cobra.Command {
	var cmds []*cobra.Command
	for _, v := range []struct{ verb, short string }{
		{"pause", "Pause the guest's vCPUs (exit 0 once paused, else the reason on stderr)"},
		{"unpause", "Resume the guest's vCPUs (exit 0 once running, else the reason on stderr)"},
		{"console", "Copy stdin to the guest's serial console and its output to stdout until stdin ends"},
	} {
		var socket string
		cmd := &cobra.Command{
			Use:   v.verb + " [--socket PATH]",
			Short: v.short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				ctx := cmd.Context()
				if ctx == nil {
					ctx = context.Background()
				}
				if code := launcher.Subcommand(ctx, socket, cmd.Name(), os.Stdin, os.Stdout, os.Stderr); code != 0 {
					return exitError{code, errReported}
				}
				return nil
			},
		}
		cmd.Flags().StringVar(&socket, "socket", control.DefaultSocket, "the launcher's control socket (virt-launcher run --control-socket)")
		cmds = append(cmds, cmd)
	}
	return cmds
}

// errReported marks a failure whose reason the command already printed on stderr.
var errReported = errors.New("reported")
