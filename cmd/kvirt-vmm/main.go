// Command kvirt-vmm boots a Linux kernel directly on kvirt's VMM with the guest's serial console on the
// terminal: the same command, flags and exit codes as `virt-launcher boot` (see vmm/bootcmd), in a binary
// that links only the VMM and its devices, so it starts in a few milliseconds and stays small in memory.
//
//	kvirt-vmm --kernel vmlinux --initrd initramfs.cpio --memory 128Mi
package main

import (
	"os"

	"github.com/kvirt/kvirt/vmm/bootcmd"
)

func main() {
	os.Exit(bootcmd.Main("kvirt-vmm", os.Args[1:]))
}
