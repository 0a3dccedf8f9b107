#!/usr/bin/env bash
# `just test`, what CI runs: every stage in order, then ONE closing line that says whether it passed and
# exactly which tests did not run on this machine and why.
#
# KVM is probed first (tests/testenv/cmd/kvmcheck: /dev/kvm opens read-write, API 12, a VM can be created).
# Usable: KVIRT_REQUIRE_KVM=1, so a test that boots a guest fails rather than skips if anything is wrong.
# Not usable: those tests skip with a "needs KVM:" reason, and the closing line counts them per package.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
export KVIRT_SKIPS=$root/build/ci/skips.jsonl KVIRT_REQUIRE_CLUSTER=1 KVIRT_REQUIRE_IMAGES=1
mkdir -p "$(dirname "$KVIRT_SKIPS")"
rm -f "$KVIRT_SKIPS"
start=${KVIRT_CI_START:-$(date +%s)}
elapsed() { local s=$(($(date +%s) - start)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

if kvm=$(go run ./tests/testenv/cmd/kvmcheck); then
	export KVIRT_REQUIRE_KVM=1
	echo "[test] KVM $kvm: every test that boots a guest must pass"
else
	if [ "${KVIRT_REQUIRE_KVM:-}" = 1 ]; then
		echo "[test] KVIRT_REQUIRE_KVM=1 but KVM is $kvm: run on a host with a usable /dev/kvm, or unset it"
		exit 1
	fi
	unset KVIRT_REQUIRE_KVM
	echo "[test] KVM $kvm"
	echo "[test] tests that boot guests will be skipped and named in the closing line; everything else runs"
fi

stage=""
finish() {
	local rc=$? summary
	summary=$(go run ./tests/cmd/testreport -summary "$KVIRT_SKIPS" 2>&1) || summary="(no summary: $summary)"
	if [ "$rc" = 0 ]; then
		echo "[test] PASSED in $(elapsed); $summary"
	else
		echo "[test] FAILED in stage '$stage' (exit $rc) after $(elapsed): see that stage's output above; $summary"
	fi
}
trap finish EXIT

for stage in lint verify-generated images os-images cluster-build unit "fuzz 3s" e2e-ci; do
	echo "[test] stage $stage ($(elapsed))"
	# shellcheck disable=SC2086 # "fuzz 3s" is a recipe and its argument
	just $stage
done
