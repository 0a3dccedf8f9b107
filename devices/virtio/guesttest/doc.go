// Package guesttest holds the real-guest tests of the virtio devices: a Linux guest (build/images/vmlinux
// and initramfs.cpio from `just images`) booted on kvirt's VMM under /dev/kvm with virtio-blk disks and a
// virtio-net NIC on a tap inside a network namespace the test creates. The package has no non-test code.
package guesttest
