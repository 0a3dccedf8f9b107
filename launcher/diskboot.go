package launcher

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/kvirt/kvirt/devices/virtio/blk"
	"github.com/kvirt/kvirt/launcher/bootdisk"
	"github.com/kvirt/kvirt/launcher/control"
	"github.com/kvirt/kvirt/launcher/spec"
	"github.com/kvirt/kvirt/vmm"
	"github.com/kvirt/kvirt/vmm/kvm"
)

// bootInput is everything the boot decision for a VMI without kernelBoot depends on.
type bootInput struct {
	force   string // spec.Machine.BootKernel: "", image, platform, builtin
	stockOK bool   // the host can run a stock distribution kernel (not PVM)
	// disk is the boot disk's name ("" when the VMI has no disks), field its spec path, device its guest
	// device name ("vda").
	disk, field, device string
	os                  *bootdisk.OS // what bootdisk.Inspect found (nil when it failed)
	err                 error        // bootdisk.Inspect's error
}

// bootPlan is the decision: which kernel, with which command line, and what the VMI is told.
type bootPlan struct {
	kernel    control.BootKernel
	cmdline   string // image and platform kernels (the built-in guest uses vmm.DefaultCmdline)
	useInitrd bool   // boot the image's initrd with its kernel
	message   string
}

// decideBoot chooses the kernel for a VMI without kernelBoot (docs/boot.md):
//   - the boot disk holds an OS and the host can run a stock kernel: the image's own kernel, initrd and
//     command line;
//   - it holds an OS and the host cannot (PVM): kvirt's platform kernel with the image's root filesystem
//     (root= resolved to the virtio device) and command line, without the image's initrd, whose modules do
//     not match the platform kernel;
//   - no disk holds an OS: kvirt's built-in guest, said so in the message (an event), never silently;
//   - a corrupt disk, or an entry naming a missing kernel: an error naming the disk (the VMI fails).
//
// The kvirt.io/boot-kernel annotation forces image, platform or builtin.
func decideBoot(in bootInput) (bootPlan, error) {
	builtin := bootPlan{kernel: control.BuiltInGuest}
	where := fmt.Sprintf("%s (disk %q)", in.field, in.disk)
	switch {
	case in.force == spec.BootBuiltIn:
		builtin.message = "kvirt.io/boot-kernel: builtin: booting kvirt's built-in guest"
		if in.disk != "" {
			builtin.message += fmt.Sprintf("; disk %q is a data disk", in.disk)
		}
		return builtin, nil
	case in.disk == "":
		if in.force != "" {
			return bootPlan{}, fmt.Errorf("kvirt.io/boot-kernel: %s: the VMI has no disk to boot from", in.force)
		}
		builtin.message = "the VMI has no disks: booting kvirt's built-in guest"
		return builtin, nil
	case bootdisk.IsNotBootable(in.err):
		if in.force != "" {
			return bootPlan{}, fmt.Errorf("%s: %v, but kvirt.io/boot-kernel asks for the %s kernel", where, in.err, in.force)
		}
		builtin.message = fmt.Sprintf("no bootable operating system on disk %q: booting kvirt's built-in guest (%s)",
			in.disk, strings.TrimPrefix(in.err.Error(), "no bootable operating system: "))
		return builtin, nil
	case in.err != nil:
		return bootPlan{}, fmt.Errorf("%s: %w", where, in.err)
	case in.os == nil || in.os.Entry == nil:
		return bootPlan{}, fmt.Errorf("%s: no boot entry", where)
	}
	e := in.os.Entry
	from := fmt.Sprintf("from disk %q (%s entry %q in %s)", in.disk, e.Loader, e.Title, e.Config)
	if in.force == spec.BootImageKernel || (in.force == "" && in.stockOK) {
		why := ""
		if in.force != "" {
			why = " (kvirt.io/boot-kernel: image)"
		}
		return bootPlan{kernel: control.ImageKernel, useInitrd: true,
			cmdline: strings.Join(serialConsole(strings.Fields(e.Cmdline)), " "),
			message: fmt.Sprintf("booted the image's own kernel %s %s%s", e.Kernel, from, why)}, nil
	}
	var root string
	switch {
	case in.os.Root != nil:
		root = bootdisk.DevicePath(in.device, *in.os.Root)
	case in.os.RootSpec == "":
		return bootPlan{}, fmt.Errorf("%s: %s: the default entry %q has no root= on its command line: kvirt's platform kernel boots without the image's initrd and needs one",
			where, e.Config, e.Title)
	case strings.HasPrefix(in.os.RootSpec, "PARTUUID="):
		root = in.os.RootSpec // the kernel resolves a partition UUID itself, on any disk
	default:
		return bootPlan{}, fmt.Errorf("%s: %s: root=%s is not a filesystem on this disk: kvirt's platform kernel boots without the image's initrd and can only mount the root filesystem by device (put the root filesystem on the boot disk, or set kvirt.io/boot-kernel: image on a host that runs stock kernels)",
			where, e.Config, in.os.RootSpec)
	}
	words := bootdisk.Words(vmm.DefaultCmdline, "quiet", "GODEBUG", "console") // the entry's consoles, then ttyS0
	words = append(words, bootdisk.Words(e.Cmdline, "root", "initrd", "BOOT_IMAGE")...)
	words = serialConsole(append(words, "root="+root))
	why := "this host's KVM (PVM) cannot run a stock kernel"
	if in.force != "" {
		why = "kvirt.io/boot-kernel: platform"
	}
	rootNote := root
	if in.os.RootSpec != "" && in.os.RootSpec != root {
		rootNote += " (root=" + in.os.RootSpec + ")"
	}
	return bootPlan{kernel: control.PlatformKernel, cmdline: strings.Join(words, " "),
		message: fmt.Sprintf("booted kvirt's platform kernel with the image's root filesystem %s and command line %s, without the image's initrd: %s",
			rootNote, from, why)}, nil
}

// serialConsole makes the serial port the kernel's /dev/console (the last console= wins), where the
// launcher's console, `virtctl console` and the boot log read.
func serialConsole(words []string) []string {
	last := ""
	for _, w := range words {
		if v, ok := strings.CutPrefix(w, "console="); ok {
			last = v
		}
	}
	if !strings.HasPrefix(last, "ttyS0") {
		words = append(words, "console=ttyS0")
	}
	return words
}

// diskBoot inspects the boot disk and sets cfg's kernel, initrd and command line per decideBoot. It returns
// the decision for the status; false when the built-in guest is to boot (cfg untouched).
func (r *runner) diskBoot(m *spec.Machine, disks []spec.PreparedDisk, cfg *vmm.Config) (bootPlan, bool, error) {
	in := bootInput{force: m.BootKernel, stockOK: !kvm.PVM()}
	if len(disks) > 0 && m.BootDisk < len(disks) && in.force != spec.BootBuiltIn {
		d := disks[m.BootDisk]
		in.disk, in.field, in.device = d.Name, fmt.Sprintf("spec.domain.devices.disks[%d]", m.BootDisk), blk.DiskName(m.BootDisk)
		in.os, in.err = bootdisk.Inspect(d.Backend, d.Backend.Size())
	} else if len(disks) > 0 {
		in.disk = disks[min(m.BootDisk, len(disks)-1)].Name
	}
	plan, err := decideBoot(in)
	if err != nil || plan.kernel == control.BuiltInGuest {
		return plan, false, err
	}
	dir := filepath.Join(r.o.Dirs.Work, ".boot")
	k, i, err := in.os.Extract(dir, plan.useInitrd)
	if err != nil {
		return plan, false, fmt.Errorf("%s (disk %q): %w", in.field, in.disk, err)
	}
	cfg.Cmdline = plan.cmdline
	if plan.kernel == control.ImageKernel {
		cfg.Kernel, cfg.Initrd = k, i
	} else {
		cfg.Kernel, cfg.Initrd = r.platformKernel(), ""
	}
	r.log.Info("boot entry found", "disk", in.disk, "entry", in.os.Summary(), "root", in.os.RootSpec)
	return plan, true, nil
}
