#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a fixed budget each: `bash .ci/fuzz.sh 10s`.
set -euo pipefail
budget=${1:-10s}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
n=0
while read -r pkg; do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "[fuzz] $pkg $f ($budget)"
    go test -run='^$' -fuzz="^$f\$" -fuzztime="$budget" "$pkg"
    n=$((n+1))
  done
done < <(go list ./...)
echo "[fuzz] $n targets fuzzed"
