#!/usr/bin/env bash
# Boot kvirt's guest (build/images/vmlinux + initramfs.cpio) on kvirt's own VMM (build/bin/virt-launcher)
# with the console on this terminal; exits 0 when the guest powers off.
#
# Ctrl-C presses the ACPI power button (the guest powers off cleanly); a second Ctrl-C stops it at once.
# Exit codes are those of `virt-launcher boot --help` (0 poweroff, 3 guest crash, 4 VMM error, 5 hard stop).
#
# Environment:
#   KVIRT_DEMO_TEST  kvirt.test= actions for the guest init (default: an interactive shell when stdin is a
#                    terminal, else "nproc,uuid,poweroff"). Examples: "nproc,uuid,poweroff", "sh:uname -a,poweroff".
#   KVIRT_DEMO_SMP   vCPUs (default 1).   KVIRT_DEMO_MEM  memory in MiB (default 256).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
images=${KVIRT_IMAGES_DIR:-$root/build/images}
launcher=${KVIRT_LAUNCHER:-$root/build/bin/virt-launcher}
for f in vmlinux initramfs.cpio; do
	[ -s "$images/$f" ] || { echo "demo: $images/$f missing: run \`just images\` first" >&2; exit 1; }
done
[ -x "$launcher" ] || { echo "demo: $launcher missing: run \`just build\` first" >&2; exit 1; }
[ -w /dev/kvm ] || { echo "demo: /dev/kvm not usable: run on a host with KVM, as a user who may open /dev/kvm" >&2; exit 1; }

if [ -n "${KVIRT_DEMO_TEST:-}" ]; then
	test_words="kvirt.test=$KVIRT_DEMO_TEST"
elif [ -t 0 ]; then
	test_words="" # interactive shell on the console; the guest powers off when it exits
else
	test_words="kvirt.test=nproc,uuid,poweroff"
fi

# Kernel command line: see images/README.md for why each word is there. On PVM hosts the VMM appends the
# CPU feature words itself (its automatic compatibility policy).
cmdline="console=ttyS0 reboot=k panic=-1 tsc=reliable no_timer_check lpj=1000000 mitigations=off quiet rodata=off"
cmdline+=" GODEBUG=cpu.avx=off,cpu.avx2=off $test_words"

uuid=$(cat /proc/sys/kernel/random/uuid)
echo "demo: booting $images/vmlinux on kvirt's VMM (guest boot takes tens of seconds on PVM hosts; Ctrl-C powers off)"
exec "$launcher" boot --kernel "$images/vmlinux" --initrd "$images/initramfs.cpio" \
	--cpus "${KVIRT_DEMO_SMP:-1}" --memory "${KVIRT_DEMO_MEM:-256}Mi" --uuid "$uuid" --append "$cmdline"
