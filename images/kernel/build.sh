#!/usr/bin/env bash
# Build kvirt's guest kernel (vmlinux + bzImage) from Debian's linux-source-6.1, cached by content hash.
#
#   images/kernel/build.sh OUTDIR
#
# Inputs of the hash: config.fragment, patches/*.patch, this script, the linux-source-6.1 package version
# and the gcc version. Outputs are cached in ${XDG_CACHE_HOME:-$HOME/.cache}/kvirt/kernel-<hash>/ and copied
# to OUTDIR. A cached build is reused in well under a second; the source tree is kept in
# kernel-tree-<package version>/ so the next changed build is incremental.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: images/kernel/build.sh OUTDIR}
mkdir -p "$out"
src_tar=/usr/src/linux-source-6.1.tar.xz
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/kvirt

say() { echo "kernel: $*"; }
beat="" # the running step's heartbeat
die() {
	[ -z "$beat" ] || kill "$beat" 2>/dev/null
	echo "kernel: ERROR: $*" >&2
	exit 1
}

[ -r "$src_tar" ] || die "$src_tar missing: apt-get install linux-source-6.1 (listed in .ci/install)"
for tool in gcc make flex bison bc lz4 patch; do
	command -v "$tool" >/dev/null || die "$tool not found: install the kernel build dependencies (.ci/install: flex bison bc libelf-dev libssl-dev lz4 patch)"
done
pkg_version=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null) || die "dpkg-query cannot see linux-source-6.1: apt-get install linux-source-6.1"
gcc_version=$(gcc --version | head -n1)

hash=$( {
	echo "linux-source-6.1 $pkg_version"
	echo "$gcc_version"
	for f in "$here/build.sh" "$here/config.fragment" "$here"/patches/*.patch; do
		echo "== ${f#"$here"/}"
		cat "$f"
	done
} | sha256sum | cut -c1-16)
cache=$cache_root/kernel-$hash

if [ -s "$cache/vmlinux" ] && [ -s "$cache/bzImage" ]; then
	say "cached $cache (linux-source $pkg_version)"
else
	# One source tree per linux-source version is kept between builds, so a config or patch change
	# rebuilds only what it affects (minutes instead of a full build). A lock keeps concurrent builds
	# (several engineers, CI) out of each other's tree.
	tree=$cache_root/kernel-tree-$pkg_version
	log=$cache_root/kernel-build-$hash.log
	mkdir -p "$cache_root"
	exec 8>"$tree.lock"
	if ! flock -n 8; then
		say "another kernel build is using $tree; waiting for it"
		flock 8
	fi
	: >"$log"
	build_start=$SECONDS
	step() {
		local name=$1
		shift
		say "$name (log: $log)"
		echo "=== $name: $*" >>"$log"
		# Heartbeat: elapsed time and the last make line (e.g. "CC fs/ext4/inode.o"), every 30 s.
		(while sleep 30; do say "… $name: $(((SECONDS - build_start) / 60))m$(((SECONDS - build_start) % 60))s, at: $(tail -n1 "$log" | tr -s ' ' | cut -c1-80)"; done) &
		beat=$!
		"$@" >>"$log" 2>&1 || die "step '$name' failed; the last lines of $log:
$(tail -n 25 "$log")
Fix the cause (see the full log) and run the build again; inputs: $here. If the kept source tree is
damaged, remove $tree and build again."
		kill "$beat" 2>/dev/null
		beat=""
	}
	ksrc=$tree/linux-source-6.1
	applied=$tree/applied-patches
	# Undo the patches of the previous build; a tree that cannot be restored is extracted again.
	if [ -d "$ksrc" ] && [ -d "$applied" ]; then
		for p in $(ls -r "$applied"/*.patch 2>/dev/null); do
			if ! patch -d "$ksrc" -p1 -R --batch --silent -i "$p" >>"$log" 2>&1; then
				say "cannot revert $(basename "$p") in the kept tree; extracting a fresh one"
				rm -rf "$tree"
				break
			fi
			rm -f "$p"
		done
	else
		rm -rf "$tree"
	fi
	if [ ! -d "$ksrc" ]; then
		say "building kernel-$hash from linux-source $pkg_version with $gcc_version (cold ~10 min on 2 cores; a heartbeat every 30 s)"
		mkdir -p "$tree"
		step "extract $src_tar" tar -C "$tree" -xf "$src_tar"
	else
		say "building kernel-$hash incrementally in $tree"
	fi
	mkdir -p "$applied"
	for p in "$here"/patches/*.patch; do
		step "apply $(basename "$p")" patch -d "$ksrc" -p1 --forward --batch -i "$p"
		cp "$p" "$applied/"
	done
	step "make tinyconfig" make -C "$ksrc" tinyconfig
	step "merge config.fragment" "$ksrc/scripts/kconfig/merge_config.sh" -m -O "$ksrc" "$ksrc/.config" "$here/config.fragment"
	step "make olddefconfig" make -C "$ksrc" olddefconfig

	# Every line of the fragment must hold in the final .config: a dependency that Kconfig silently dropped
	# would otherwise give a kernel that boots but lacks a device.
	bad=0
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=*)
			key=${line%%=*}
			if ! grep -qxF "$line" "$ksrc/.config"; then
				got=$(grep -E "^$key=|^# $key is not set" "$ksrc/.config" || echo "(absent)")
				echo "kernel: config: wanted $line, got $got" >&2
				bad=1
			fi
			;;
		"# CONFIG_"*" is not set")
			key=${line#\# }
			key=${key%% *}
			if grep -q "^$key=" "$ksrc/.config"; then
				echo "kernel: config: wanted '$line', got $(grep "^$key=" "$ksrc/.config")" >&2
				bad=1
			fi
			;;
		esac
	done <"$here/config.fragment"
	[ "$bad" = 0 ] || die "config.fragment options above did not survive Kconfig (missing dependency or something selecting them); fix images/kernel/config.fragment. Resolved config: $ksrc/.config"
	say "config verified: every option of config.fragment is set as asked"

	step "make vmlinux bzImage (nice, -j$(nproc))" nice make -C "$ksrc" -j"$(nproc)" vmlinux bzImage
	rm -rf "$cache.tmp"
	mkdir -p "$cache.tmp"
	cp "$ksrc/vmlinux" "$cache.tmp/vmlinux"
	cp "$ksrc/arch/x86/boot/bzImage" "$cache.tmp/bzImage"
	cp "$ksrc/.config" "$cache.tmp/config"
	cp "$ksrc/System.map" "$cache.tmp/System.map"
	rm -rf "$cache"
	mv "$cache.tmp" "$cache"
	exec 8>&-
	say "built $cache (log kept at $log)"
fi

# Copy then rename, so a reader of OUTDIR never sees a half-written file.
copy_out() { cp "$cache/$1" "$out/.$2.tmp" && mv "$out/.$2.tmp" "$out/$2"; }
copy_out vmlinux vmlinux
copy_out bzImage bzImage
copy_out config kernel.config
copy_out System.map System.map
say "vmlinux, bzImage, kernel.config, System.map in $out"
