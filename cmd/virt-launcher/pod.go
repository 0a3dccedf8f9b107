package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/kvirt/kvirt/launcher"
	"github.com/spf13/cobra"
)

func newPodCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "pod",
		Short: "Run the VMI of this launcher pod with the fixed pod layout",
		Long: `Run the VMI the controller mounted at ` + launcher.DefaultVMIFile + ` with the token at ` + launcher.DefaultTokenFile + `:
control API on :8186 and its Unix socket, disks under ` + launcher.DefaultWorkDir + `, the pod's network namespace,
kvirt's guest kernel from ` + launcher.DefaultImagesDir + `, the outcome in /dev/termination-log. The serial
console is copied to stdout (the pod log). 'virt-launcher run -f FILE' with flags does the same with any paths.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sigs)
			o, err := launcher.PodOptions()
			if err != nil {
				return exitError{2, err}
			}
			o.Signals = sigs
			o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
			o.Console = os.Stdout
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return outcomeErr(launcher.Run(ctx, o))
		},
	}
}
