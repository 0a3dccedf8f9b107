#!/usr/bin/env bash
# Build kvirt's freestanding test guest (ELF64, loaded at 1 MiB, entered in 64-bit mode with RSI =
# boot_params), cached by content hash of its sources, this script and the gcc/ld versions.
#
#   images/testguest/build.sh OUTDIR
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: images/testguest/build.sh OUTDIR}
mkdir -p "$out"
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/kvirt

say() { echo "testguest: $*"; }
die() { echo "testguest: ERROR: $*" >&2; exit 1; }

command -v gcc >/dev/null || die "gcc not found: apt-get install gcc binutils"

cflags=(-O2 -std=gnu11 -Wall -Wextra -Werror -ffreestanding -nostdlib -mno-red-zone -mgeneral-regs-only
	-fno-pic -fno-pie -static -fno-stack-protector -fcf-protection=none -fno-asynchronous-unwind-tables
	-fno-builtin -mcmodel=small)
ldflags=(-nostdlib -static -no-pie -Wl,-T,"$here/testguest.ld" -Wl,--build-id=none -Wl,-z,noexecstack -Wl,-z,max-page-size=4096 -Wl,--no-warn-rwx-segments)

hash=$( {
	gcc --version | head -n1
	ld --version | head -n1
	echo "${cflags[*]} ${ldflags[*]}"
	for f in "$here/build.sh" "$here/testguest.ld" "$here/entry.S" "$here/testguest.c"; do
		echo "== ${f#"$here"/}"
		cat "$f"
	done
} | sha256sum | cut -c1-16)
cache=$cache_root/testguest-$hash

if [ -s "$cache/testguest" ]; then
	say "cached $cache"
else
	rm -rf "$cache.tmp"
	mkdir -p "$cache.tmp"
	gcc "${cflags[@]}" "${ldflags[@]}" -o "$cache.tmp/testguest" "$here/entry.S" "$here/testguest.c" ||
		die "compiling images/testguest failed (errors above)"
	# The VMM's ELF loader relies on exactly this shape: ELF64, one PT_LOAD at physical 0x100000.
	readelf -lW "$cache.tmp/testguest" | grep -qE 'LOAD +0x[0-9a-f]+ 0x0+100000 0x0+100000' ||
		die "testguest is not one PT_LOAD at 0x100000: check images/testguest/testguest.ld"
	rm -rf "$cache"
	mv "$cache.tmp" "$cache"
	say "built $cache"
fi
cp "$cache/testguest" "$out/.testguest.tmp"
mv "$out/.testguest.tmp" "$out/testguest"
say "testguest in $out"
