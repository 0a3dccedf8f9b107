#!/usr/bin/env bash
# Boot kvirt's guest (build/images/vmlinux + initramfs.cpio) with the console on this terminal; exits 0
# when the guest powers off.
#
# TEMPORARY: boots with QEMU (-M microvm, which provides ACPI) until kvirt's own VMM boots Linux; the VMM
# engineer then switches this script to virt-launcher. See images/README.md for the reference command.
#
# Environment:
#   KVIRT_DEMO_TEST  kvirt.test= actions for the guest init (default: an interactive shell when stdin is a
#                    terminal, else "nproc,uuid,poweroff"). Examples: "nproc,uuid,poweroff", "sh:uname -a,poweroff".
#   KVIRT_DEMO_SMP   vCPUs (default 1).   KVIRT_DEMO_MEM  memory in MiB (default 256).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
images=${KVIRT_IMAGES_DIR:-$root/build/images}
for f in vmlinux initramfs.cpio; do
	[ -s "$images/$f" ] || { echo "demo: $images/$f missing: run \`just images\` first" >&2; exit 1; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "demo: qemu-system-x86_64 missing: apt-get install qemu-system-x86" >&2; exit 1; }
[ -w /dev/kvm ] || { echo "demo: /dev/kvm not usable: run on a host with KVM, as a user who may open /dev/kvm" >&2; exit 1; }

if [ -n "${KVIRT_DEMO_TEST:-}" ]; then
	test_words="kvirt.test=$KVIRT_DEMO_TEST"
elif [ -t 0 ]; then
	test_words="" # interactive shell on the console; the guest powers off when it exits
else
	test_words="kvirt.test=nproc,uuid,poweroff"
fi

# Kernel command line: see images/README.md for why each word is there.
cmdline="console=ttyS0 reboot=k panic=-1 tsc=reliable no_timer_check lpj=1000000 mitigations=off quiet rodata=off"
cmdline+=" noxsave nopku nofsgsbase nopcid noinvpcid clearcpuid=141,297,580,151,158,306,59,534,308,514,200,311,312,296,291"
cmdline+=" GODEBUG=cpu.avx=off,cpu.avx2=off $test_words"

echo "demo: booting $images/vmlinux with QEMU microvm (guest boot takes tens of seconds on PVM hosts; Ctrl-A X quits)"
exec qemu-system-x86_64 -enable-kvm -M microvm,acpi=on,rtc=on -cpu host,-arch-capabilities \
	-smp "${KVIRT_DEMO_SMP:-1}" -m "${KVIRT_DEMO_MEM:-256}" \
	-nodefaults -no-user-config -nographic -serial mon:stdio -no-reboot \
	-kernel "$images/vmlinux" -initrd "$images/initramfs.cpio" -append "$cmdline"
