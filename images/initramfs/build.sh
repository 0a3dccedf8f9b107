#!/usr/bin/env bash
# Build kvirt's guest initramfs (uncompressed newc cpio) with u-root, cached by content hash.
#
#   images/initramfs/build.sh OUTDIR
#
# /init is kvirt-init (images/initramfs/kvirt-init, built from the main module); the rest is a u-root
# busybox (/bbin/bb with one symlink per command, /bin/sh -> gosh). Inputs of the hash: this script, the
# u-root pin (uroot/go.mod, go.sum), kvirt-init's sources and its module dependencies, the Go version.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:?usage: images/initramfs/build.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/kvirt

say() { echo "initramfs: $*"; }
die() { echo "initramfs: ERROR: $*" >&2; exit 1; }

command -v go >/dev/null || die "go not found: put Go 1.26 (/usr/local/go/bin) on PATH"

# The u-root commands in the image. Keep it small: every binary is in one busybox, but the image is
# copied into guest memory and unpacked by the (interpreted, on PVM) kernel at every boot.
commands=(gosh ip ping dhclient mount umount dd cat ls echo poweroff shutdown sync mkdir sleep uname dmesg
	cp rm mv ln ps kill free df date grep hexdump printenv uptime netcat shasum)

deps=$(cd "$root" && go list -deps -f '{{with .Module}}{{.Path}}@{{.Version}}{{end}}' ./images/initramfs/kvirt-init | sort -u) ||
	die "go list failed for ./images/initramfs/kvirt-init: fix the build error above"
hash=$( {
	go version
	echo "commands: ${commands[*]}"
	echo "deps: $deps"
	for f in "$here/build.sh" "$here/uroot/go.mod" "$here/uroot/go.sum" "$here"/kvirt-init/*.go; do
		case "$f" in *_test.go) continue ;; esac
		echo "== ${f#"$here"/}"
		cat "$f"
	done
} | sha256sum | cut -c1-16)
cache=$cache_root/initramfs-$hash

if [ -s "$cache/initramfs.cpio" ]; then
	say "cached $cache"
else
	work=$cache_root/initramfs-build-$hash
	log=$work.log
	rm -rf "$work"
	mkdir -p "$work"
	: >"$log"
	step() {
		local name=$1
		shift
		say "$name (log: $log)"
		echo "=== $name: $*" >>"$log"
		"$@" >>"$log" 2>&1 || die "step '$name' failed; the last lines of $log:
$(tail -n 25 "$log")
Fix the cause and run the build again."
	}
	step "build kvirt-init" env -C "$root" CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$work/kvirt-init" ./images/initramfs/kvirt-init
	step "build u-root (pinned in images/initramfs/uroot/go.mod)" env -C "$here/uroot" go build -o "$work/u-root" github.com/u-root/u-root
	# u-root resolves its command paths only inside a u-root source tree: use a writable copy of the
	# module from the module cache.
	src=$(env -C "$here/uroot" go mod download -json github.com/u-root/u-root | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -d "$src" ] || die "u-root source not found in the module cache (go mod download github.com/u-root/u-root in images/initramfs/uroot)"
	step "copy u-root source" cp -r "$src" "$work/u-root-src"
	chmod -R u+w "$work/u-root-src"
	cmdpaths=()
	for c in "${commands[@]}"; do cmdpaths+=("./cmds/core/$c"); done
	say "u-root busybox with ${#commands[@]} commands (~1-3 min; log: $log)"
	step "u-root" env -C "$work/u-root-src" nice "$work/u-root" -o "$work/initramfs.cpio" \
		-initcmd= -defaultsh=gosh -files "$work/kvirt-init:init" "${cmdpaths[@]}"
	mkdir -p "$cache.tmp"
	cp "$work/initramfs.cpio" "$cache.tmp/initramfs.cpio"
	rm -rf "$cache"
	mv "$cache.tmp" "$cache"
	rm -rf "$work"
	say "built $cache"
fi

cp "$cache/initramfs.cpio" "$out/.initramfs.cpio.tmp"
mv "$out/.initramfs.cpio.tmp" "$out/initramfs.cpio"
say "initramfs.cpio in $out"
