#!/usr/bin/env bash
# Build the Debian 12 OS images (`just os-images`) into build/os-images/ (or $KVIRT_OS_IMAGES_DIR):
#
#   debian-12.raw / .qcow2            a Debian 12 cloud image: systemd, cloud-init (NoCloud), openssh-server,
#                                     Debian's linux-image-cloud-amd64 and initrd in /boot, named by the
#                                     default entry of /boot/grub/grub.cfg (root=UUID=), one ext4 root
#                                     partition on GPT; a serial getty comes from console=ttyS0
#   debian-12-kvirt-kernel.raw/.qcow2 the same system whose default GRUB entry names kvirt's own kernel in
#                                     /boot (root=PARTUUID=, no initrd): the image-kernel path on any host
#   debian-containerdisk-12.tar       KubeVirt-format containerDisk (OCI, the qcow2 under /disk/), imported
#                                     by the e2e suite as kvirt.io/debian-containerdisk:12
#
# Packages come from the machine's configured Debian mirror through mmdebstrap (Debian 12). The result is
# cached by the content hash of this directory's files, kvirt's kernel and mmdebstrap's version in
# ${XDG_CACHE_HOME:-$HOME/.cache}/kvirt/os-<hash>/; a cached build is copied in seconds. Needs root (the root
# filesystem is assembled as root, then written into an ext4 image with mkfs.ext4 -d: no loop devices).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${KVIRT_OS_IMAGES_DIR:-$root/build/os-images}
images=${KVIRT_IMAGES_DIR:-$root/build/images}
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/kvirt
export PATH=/usr/local/go/bin:$PATH

say() { echo "os-images: $*"; }
die() {
	echo "os-images: ERROR: $*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || die "run as root: mmdebstrap assembles the root filesystem with its real owners"
for tool in mmdebstrap mkfs.ext4 sfdisk qemu-img; do
	command -v "$tool" >/dev/null || die "$tool not found: bash .ci/install installs it (mmdebstrap e2fsprogs fdisk qemu-utils)"
done
[ -s "$images/vmlinux" ] || die "$images/vmlinux missing: run \`just images\` first (the kvirt-kernel variant holds it)"

hash=$( {
	mmdebstrap --version
	sha256sum "$images/vmlinux" | cut -d' ' -f1
	for f in "$here"/*; do
		echo "== ${f#"$here"/}"
		cat "$f"
	done
} | sha256sum | cut -c1-16)
cache=$cache_root/os-$hash
mkdir -p "$cache_root" "$out"

if [ -s "$cache/debian-12.qcow2" ] && [ -s "$cache/debian-containerdisk-12.tar" ]; then
	say "cached $cache"
else
	exec 8>"$cache_root/os.lock"
	if ! flock -n 8; then
		say "another OS image build holds $cache_root/os.lock; waiting for it"
		flock 8
	fi
	log=$cache_root/os-build-$hash.log
	: >"$log"
	start=$SECONDS
	# step NAME CMD...: runs CMD with its output in the log and a heartbeat every 30 s.
	step() {
		local name=$1
		shift
		say "$name (log: $log)"
		echo "=== $name: $*" >>"$log"
		(while sleep 30; do say "… $name: $((SECONDS - start))s elapsed, last log line: $(tail -n1 "$log" | cut -c1-100)"; done) &
		local beat=$! rc=0
		"$@" >>"$log" 2>&1 || rc=$?
		kill "$beat" 2>/dev/null
		wait "$beat" 2>/dev/null || true
		[ "$rc" = 0 ] || die "step '$name' failed (exit $rc); the last lines of $log:
$(tail -n 25 "$log")
Check the Debian mirror in /etc/apt/sources.list* (mmdebstrap uses it), then run \`just os-images\` again."
	}
	work=$cache.tmp
	rm -rf "$work"
	mkdir -p "$work"
	trap 'rm -rf "$work"' EXIT
	rootfs=$work/rootfs

	# Fixed identities: the same inputs give the same boot entry (the tests and docs name these).
	root_uuid=3d6d3f7e-1c0b-4c4e-9b59-6b1b1d0e0a01
	root_partuuid=3d6d3f7e-1c0b-4c4e-9b59-6b1b1d0e0a02

	say "building Debian 12 from $(grep -hoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | head -n1 | awk '{print $2}') (cold: ~3-6 min on 2 cores)"
	step "mmdebstrap bookworm" mmdebstrap --variant=minbase --mode=root --format=directory \
		--include="$(grep -v '^#' "$here/packages" | tr -s '\n ' ',' | sed 's/^,//; s/,$//')" \
		--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
		--dpkgopt='path-exclude=/usr/share/info/*' \
		--customize-hook="ROOT_UUID=$root_uuid bash $here/customize.sh \"\$1\"" \
		bookworm "$rootfs"

	kver=$(basename "$(ls "$rootfs"/boot/vmlinuz-* | head -n1)")
	kver=${kver#vmlinuz-}
	[ -s "$rootfs/boot/initrd.img-$kver" ] || die "Debian's initrd for $kver is missing from /boot (initramfs-tools did not run?): see $log"
	say "Debian kernel $kver"

	# grub.cfg as Debian's grub-mkconfig writes it for this system (grub-mkconfig itself needs the root
	# device, which a directory build does not have). entry KERNEL INITRD ROOT CMDLINE TITLE prints one
	# menuentry; grubcfg ENTRY... puts them, the first the default, into the file's 10_linux section.
	entry() {
		printf "menuentry '%s' --class debian --class gnu-linux --class gnu --class os \$menuentry_id_option 'gnulinux-%s-%s' {\n" "$5" "$(basename "$1")" "$root_uuid"
		printf '\tload_video\n\tinsmod gzio\n\tinsmod part_gpt\n\tinsmod ext2\n\tsearch --no-floppy --fs-uuid --set=root %s\n' "$root_uuid"
		printf "\techo\t'Loading %s ...'\n\tlinux\t%s root=%s %s\n" "$(basename "$1")" "$1" "$3" "$4"
		[ -z "$2" ] || printf "\techo\t'Loading initial ramdisk ...'\n\tinitrd\t%s\n" "$2"
		printf '}\n'
	}
	grubcfg() {
		local entries
		entries=$(printf '%s\n' "$@")
		awk -v e="$entries" '$0 == "@ENTRIES@" { print e; next } { print }' "$here/grub.cfg.in"
	}
	debian_entry=$(entry "/boot/vmlinuz-$kver" "/boot/initrd.img-$kver" "UUID=$root_uuid" \
		"ro console=tty0 console=ttyS0,115200 earlyprintk=ttyS0,115200 consoleblank=0" \
		"Debian GNU/Linux, with Linux $kver")
	mkdir -p "$rootfs/boot/grub"
	grubcfg "$debian_entry" >"$rootfs/boot/grub/grub.cfg"

	mkimage() { # NAME: GPT disk image NAME.raw of $rootfs, then NAME.qcow2
		local name=$1 size_mib=3072
		rm -f "$work/root.ext4"
		step "ext4 root filesystem for $name" mkfs.ext4 -q -F -L root -U "$root_uuid" -E root_owner=0:0 -d "$rootfs" "$work/root.ext4" "$((size_mib - 2))M"
		truncate -s "${size_mib}M" "$work/$name.raw"
		printf 'label: gpt\nfirst-lba: 2048\nstart=2048, size=%d, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=%s, name="root"\n' \
			$(((size_mib - 2) * 2048)) "$root_partuuid" | step "GPT for $name" sfdisk -q "$work/$name.raw"
		step "copy the filesystem into $name" dd if="$work/root.ext4" of="$work/$name.raw" bs=1M seek=1 conv=notrunc,sparse status=none
		step "qcow2 of $name" qemu-img convert -f raw -O qcow2 "$work/$name.raw" "$work/$name.qcow2"
		rm -f "$work/root.ext4"
	}
	mkimage debian-12

	# The variant: kvirt's kernel in /boot, named by the default entry (no initrd: its drivers are built in,
	# and it finds the root partition by PARTUUID itself); Debian's entry stays second.
	cp "$images/vmlinux" "$rootfs/boot/vmlinuz-kvirt"
	grubcfg "$(entry /boot/vmlinuz-kvirt "" "PARTUUID=$root_partuuid" \
		"ro console=ttyS0 reboot=k panic=-1 tsc=reliable no_timer_check lpj=1000000 mitigations=off rodata=off" \
		"Debian GNU/Linux, with kvirt's kernel")" "$debian_entry" >"$rootfs/boot/grub/grub.cfg"
	mkimage debian-12-kvirt-kernel

	# KubeVirt's containerDisk format: the disk under /disk/, owned by the qemu user (107) of its launcher.
	step "containerDisk debian-containerdisk-12.tar" bash -c "cd '$root' && go run ./images/oci/cmd/oci-image \
		-ref kvirt.io/debian-containerdisk:12 -user 107:107 -file /disk/debian-12.qcow2='$work/debian-12.qcow2' \
		-o '$work/debian-containerdisk-12.tar'"
	rm -rf "$rootfs"
	rm -rf "$cache"
	mv "$work" "$cache"
	trap - EXIT
	say "built $cache in $((SECONDS - start))s (log kept at $log)"
fi

for f in debian-12.raw debian-12.qcow2 debian-12-kvirt-kernel.raw debian-12-kvirt-kernel.qcow2 debian-containerdisk-12.tar; do
	cp --sparse=always --reflink=auto "$cache/$f" "$out/$f.tmp"
	mv "$out/$f.tmp" "$out/$f"
done
say "images in $out:"
(cd "$out" && du -h --apparent-size debian-12* debian-containerdisk-12.tar | awk '{printf "os-images:   %-36s %s apparent", $2, $1; system("du -h " $2 " | cut -f1 | sed \"s/^/, /; s/$/ allocated/\"")}')
