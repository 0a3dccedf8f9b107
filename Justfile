# kvirt task runner. `just --list` shows every recipe.
set shell := ["bash", "-euo", "pipefail", "-c"]

export PATH := "/usr/local/go/bin:" + env_var('HOME') + "/go/bin:" + env_var('PATH')
images_dir := justfile_directory() / "build/images"

# Each area keeps its own recipes next to its code.
import 'images/images.just'
import 'api/api.just'
import 'vmm/vmm.just'
import 'tests/tests.just'
import 'controller/controller.just'
import 'devices/virtio/virtio.just'

# Show the recipes.
default:
    @just --list

# Build every command into build/bin/ (static, no cgo: as in the OCI images; a dynamic libc adds ~1 ms to exec).
build:
    mkdir -p build/bin
    CGO_ENABLED=0 go build -o build/bin/ ./cmd/...

# Boot kvirt's guest locally on our VMM with the console on this terminal; exits 0 when the guest powers off.
# Checks the host (OS, KVM, build tools) before the long image build.
demo:
    bash images/demo-preflight.sh
    just images build
    bash images/demo.sh

# gofmt, go vet, staticcheck (pinned in go.mod as a tool), go.mod/go.sum as `go mod tidy` leaves them, and
# commit subjects of at most 72 characters.
lint:
    @bad=$(gofmt -l $(git ls-files '*.go')); if [ -n "$bad" ]; then echo "gofmt needed on:"; echo "$bad"; exit 1; fi
    go vet ./...
    go tool staticcheck ./...
    @go mod tidy -diff >/dev/null || { go mod tidy -diff; echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit the result"; exit 1; }
    @bash .ci/commit-subjects.sh

# Unit and KVM tests with the race detector (KVM tests boot real guests from build/images/; without a usable
# /dev/kvm they skip, and the report lists them). Output: each package's result, failed tests in full, a heartbeat.
unit:
    KVIRT_IMAGES_DIR={{images_dir}} go test -json -race -count=1 -timeout 45m ./... | go run ./tests/cmd/testreport -stage unit -skips "${KVIRT_SKIPS:-build/ci/skips.jsonl}"
    cd tests/provisioner && go test -race -count=1 ./... # the local cluster's provisioner: a module of its own

# Everything CI runs: lint, generated files, images, k8s binaries, tests with -race, 3 s per fuzz target, e2e
# suite. Probes KVM first: tests that boot guests must pass where it is usable and are skipped (and named in
# the closing line) where it is not.
test:
    bash .ci/test.sh

# End-to-end suite (`just e2e`) on the local cluster, which is torn down afterwards whatever the result.
e2e-ci:
    #!/usr/bin/env bash
    set -euo pipefail
    trap 'just cluster-down' EXIT
    just e2e

# Every benchmark suite that needs no cluster (vmm, virtio, controller), each writing its section of docs/benchmarks.md.
bench: bench-vmm bench-virtio bench-controller
    @echo "docs/benchmarks.md updated (the cluster section: just bench-cluster on a running cluster)"

# Short fuzzing of every fuzz target (FUZZTIME per target, default 10s).
fuzz fuzztime="10s":
    bash .ci/fuzz.sh {{fuzztime}}

# Run each package's tests RUNS times with -race (default 20, every package): per package, runs passed/failed and the failing tests.
[positional-arguments]
flake-hunt runs="20" *pkgs:
    #!/usr/bin/env bash
    set -euo pipefail
    runs=$1; shift
    [ $# -gt 0 ] || set -- ./...
    bin=$(mktemp -d); trap 'rm -rf "$bin"' EXIT
    export KVIRT_IMAGES_DIR={{images_dir}}
    total_fail=0
    while read -r pkg dir; do
        exe="$bin/$(echo "$pkg" | tr / _).test"
        if ! go test -race -c -o "$exe" "$pkg" >"$bin/build.log" 2>&1; then
            echo "$pkg: BUILD FAILED"; cat "$bin/build.log"; total_fail=1; continue
        fi
        pass=0 fail=0; : >"$bin/failed"
        for ((i = 1; i <= runs; i++)); do
            if (cd "$dir" && "$exe" -test.count=1 -test.timeout=30m) >"$bin/run.log" 2>&1; then
                pass=$((pass + 1))
            else
                fail=$((fail + 1))
                grep -o -- '--- FAIL: [^ ]*' "$bin/run.log" | cut -d' ' -f3 >>"$bin/failed" || echo "(no test named: panic, timeout or exit)" >>"$bin/failed"
                cp "$bin/run.log" "$bin/$(echo "$pkg" | tr / _).fail$i.log"
            fi
        done
        echo "$pkg: $pass/$runs passed, $fail failed"
        if [ "$fail" -gt 0 ]; then
            total_fail=1
            sort "$bin/failed" | uniq -c | sort -rn | sed 's/^/    /'
            mkdir -p build/flake-hunt && cp "$bin"/*.fail*.log build/flake-hunt/ && echo "    logs: build/flake-hunt/"
        fi
    done < <(go list -f '{{{{if or .TestGoFiles .XTestGoFiles}}{{{{.ImportPath}} {{{{.Dir}}{{{{end}}' "$@")
    exit $total_fail
