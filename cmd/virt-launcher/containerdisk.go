package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kvirt/kvirt/launcher/containerdisk"
	"github.com/spf13/cobra"
)

// newContainerDiskCommand is what the launcher pod's init containers run (launcher/containerdisk): install
// this binary into the pod's helper emptyDir, and copy a containerDisk image's disk into the disks emptyDir.
func newContainerDiskCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "container-disk",
		Short: "Launcher pod helpers for containerDisk volumes pulled by the kubelet (init containers)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usage("container-disk needs a subcommand: install, copy or copy-kernel")
		},
	}
	var to string
	install := &cobra.Command{
		Use:   "install --to DIR",
		Short: "Copy this (static) binary to DIR/" + containerdisk.Helper + " for the containerDisk init containers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := containerdisk.Install(to)
			if err != nil {
				return exitError{2, fmt.Errorf("container-disk install: %w", err)}
			}
			fmt.Printf("container-disk: installed %s\n", p)
			return nil
		},
	}
	install.Flags().StringVar(&to, "to", containerdisk.BinDir, "directory (the pod's helper emptyDir)")

	var dst, path, root2 string
	cp := &cobra.Command{
		Use:   "copy --to DIR [--path FILE]",
		Short: "Copy this image's disk (the one file under /disk/, or --path) sparsely to DIR/" + containerdisk.DiskFile + ", read-only",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dst == "" {
				return usage("container-disk copy: --to DIR is required")
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			src, err := containerdisk.FindDisk(root2, path)
			if err != nil {
				return exitError{2, fmt.Errorf("container-disk copy: %w", err)}
			}
			if _, err := containerdisk.Copy(ctx, src, dst, os.Stdout); err != nil {
				return exitError{2, fmt.Errorf("container-disk copy: %w (is the disks emptyDir mounted and large enough?)", err)}
			}
			return nil
		},
	}
	cp.Flags().StringVar(&dst, "to", "", "destination directory (the volume's directory in the pod's disks emptyDir)")
	cp.Flags().StringVar(&path, "path", "", "the disk file inside the image (containerDisk.path; default: the single file in /disk)")
	cp.Flags().StringVar(&root2, "root", "/", "the image's root directory (tests)")
	var kernel, initrd, kdst, kroot string
	ck := &cobra.Command{
		Use:   "copy-kernel --to DIR --kernel PATH [--initrd PATH]",
		Short: "Copy firmware.kernelBoot.container's kernel (and initrd) from this image to DIR/" + containerdisk.KernelFile + " (and " + containerdisk.InitrdFile + ")",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kdst == "" || kernel == "" {
				return usage("container-disk copy-kernel: --to DIR and --kernel PATH are required")
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if err := containerdisk.CopyKernelBoot(ctx, kroot, kernel, initrd, kdst, os.Stdout); err != nil {
				return exitError{2, fmt.Errorf("container-disk copy-kernel: %w", err)}
			}
			return nil
		},
	}
	ck.Flags().StringVar(&kdst, "to", "", "destination directory (in the pod's disks emptyDir)")
	ck.Flags().StringVar(&kernel, "kernel", "", "kernelBoot.container.kernelPath")
	ck.Flags().StringVar(&initrd, "initrd", "", "kernelBoot.container.initrdPath")
	ck.Flags().StringVar(&kroot, "root", "/", "the image's root directory (tests)")
	root.AddCommand(install, cp, ck)
	return root
}
