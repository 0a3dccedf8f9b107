// Package virtio holds kvirt's virtio devices; the code lives in the subpackages:
//
//   - queue: split virtqueues (descriptor chains, indirect descriptors, EVENT_IDX), every guest value checked
//   - mmio: the virtio-mmio v2 transport (registers, status machine, ioeventfd kicks, irqfd interrupts)
//   - blk, net, rng: the device models (raw image files, tap, getrandom)
//   - virtiotest: a driver-side harness for unit tests; guesttest: real Linux guests on kvirt and QEMU,
//     and the benchmark (`just bench-virtio`, section "virtio" of docs/benchmarks.md)
//
// # Transport decision: virtio-mmio only, no virtio-pci (for now)
//
// The VMM declares each device as an ACPI device _HID "LNRO0005" in the DSDT (and, for kernels without ACPI,
// on the command line as virtio_mmio.device=). Whether stock distro kernels need virtio-pci instead was
// checked against the packages themselves (Debian bookworm, 2026-11-22):
//
//   - linux-image-6.1.0-50-cloud-amd64 and linux-image-6.12.111+deb12-cloud-amd64: CONFIG_VIRTIO_MMIO=m (6.12
//     also has CONFIG_VIRTIO_PCI=y), CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES unset, virtio_blk/virtio_net modules.
//     virtio_mmio.ko carries the module alias "acpi*:LNRO0005:*", so udev loads it for our DSDT devices.
//   - initramfs-tools 0.142 (hook-functions, auto_add_modules "base", the MODULES=most default) puts
//     virtio_pci and virtio_mmio into every initramfs, so a Debian cloud image finds its root disk on our
//     virtio-mmio virtio-blk.
//
// So Debian cloud kernels work with virtio-mmio over ACPI, which is what we build. Not verified here (no
// Ubuntu or Fedora archive is reachable from this machine): Ubuntu's and Fedora's configs. One warning sign:
// dracut's generic "qemu" module lists virtio_pci but not virtio_mmio, so a Fedora/RHEL host-only initramfs
// made on a PCI machine may lack virtio_mmio. On the PVM hosts this project runs on, no stock distro kernel
// boots at all (docs: PLATFORM.md), so virtio-pci would change nothing here; on real KVM hosts it is what
// RHEL-family images expect. virtio-pci (modern, MSI-X) is therefore the next transport to add when such
// images must run — behind the same Device interface (mmio.Device), since the device models do not depend
// on the transport beyond mmio.Env.
package virtio
