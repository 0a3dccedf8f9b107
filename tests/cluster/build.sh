#!/usr/bin/env bash
# Builds the multi-call Kubernetes binary (tests/cluster/cmd/kube) once per content of this module and
# links it to build/cluster/bin/kube (plus a link per component name).
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/kvirt/kube-<hash>/kube, where <hash> covers go.mod, go.sum, the Go
# sources, this script and the Go version. A cold build takes ~8.5 min and ~2.3 GB of RAM on 2 cores; a
# second run with nothing changed returns at once.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export PATH="/usr/local/go/bin:$PATH"

kube_version=v1.33.13 # must match k8s.io/kubernetes in go.mod
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet)

hash=$(cd "$here" && { cat go.mod go.sum build.sh; find cmd -name '*.go' -type f | LC_ALL=C sort | xargs cat; go version; } | sha256sum | cut -c1-16)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/kvirt/kube-$hash"
out="$root/build/cluster/bin"

if [ -x "$cache/kube" ]; then
	echo "[cluster-build] cached: $cache/kube"
else
	echo "[cluster-build] building Kubernetes $kube_version components (${components[*]}) into $cache"
	echo "[cluster-build] a cold build takes ~8.5 min and ~2.3 GB RAM; progress: one line per minute"
	mkdir -p "$cache"
	tmp="$cache/kube.tmp.$$"
	trap 'rm -f "$tmp"' EXIT
	start=$(date +%s)
	(
		cd "$here"
		ldflags="-s -w"
		for kv in "gitVersion=$kube_version" "gitMajor=1" "gitMinor=33" "gitTreeState=clean"; do
			ldflags="$ldflags -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
		done
		nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$tmp" ./cmd/kube
	) &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
		kill -0 "$pid" 2>/dev/null && echo "[cluster-build] still building… $(( $(date +%s) - start ))s"
	done
	if ! wait "$pid"; then
		echo "[cluster-build] FAILED: go build ./cmd/kube in $here; run it there by hand to see the first error (needs the Go module proxy for a first download)" >&2
		exit 1
	fi
	mv "$tmp" "$cache/kube"
	trap - EXIT
	echo "[cluster-build] built in $(( $(date +%s) - start ))s: $cache/kube"
fi

mkdir -p "$out"
ln -sfn "$cache/kube" "$out/kube"
for c in "${components[@]}"; do ln -sfn kube "$out/$c"; done
echo "[cluster-build] $out/kube -> $cache/kube"
