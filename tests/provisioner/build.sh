#!/usr/bin/env bash
# Builds the local cluster's volume provisioner (tests/provisioner, a module of its own so the main module
# never depends on the provisioner library) once per content of this module, and links it to
# build/cluster/bin/hostpath-provisioner.
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/kvirt/provisioner-<hash>/hostpath-provisioner, where <hash> covers
# go.mod, go.sum, the Go sources, this script and the Go version. Cold: ~2 min on 2 cores.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export PATH="/usr/local/go/bin:$PATH"

hash=$(cd "$here" && { cat go.mod go.sum build.sh; find . -name '*.go' -type f | LC_ALL=C sort | xargs cat; go version; } | sha256sum | cut -c1-16)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/kvirt/provisioner-$hash"
out="$root/build/cluster/bin"

if [ -x "$cache/hostpath-provisioner" ]; then
	echo "[provisioner-build] cached: $cache/hostpath-provisioner"
else
	echo "[provisioner-build] building tests/provisioner into $cache"
	mkdir -p "$cache"
	tmp="$cache/hostpath-provisioner.tmp.$$"
	trap 'rm -f "$tmp"' EXIT
	(cd "$here" && nice -n 19 go build -trimpath -ldflags "-s -w" -o "$tmp" .)
	mv "$tmp" "$cache/hostpath-provisioner"
fi
mkdir -p "$out"
ln -sf "$cache/hostpath-provisioner" "$out/hostpath-provisioner"
