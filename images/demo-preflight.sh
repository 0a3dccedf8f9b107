#!/usr/bin/env bash
# `just demo`'s checks before it builds anything (the first image build takes many minutes): the host is
# the supported one, KVM is usable, and the build tools are installed. Each failure says what to do.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH=/usr/local/go/bin:$PATH
fail() { echo "demo: $*" >&2; exit 1; }

[ "$(uname -s)/$(uname -m)" = Linux/x86_64 ] || fail "kvirt runs on Linux x86-64 hosts; this is $(uname -s)/$(uname -m)"
if ! grep -qs '^ID=debian' /etc/os-release || ! grep -qs '^VERSION_ID="12"' /etc/os-release; then
	echo "demo: note: the supported host is Debian 12 (this is $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-unknown}")); the build may need other package names"
fi
command -v go >/dev/null || fail "Go is missing: install Go 1.26 in /usr/local/go (https://go.dev/dl)"
if ! kvm=$(cd "$root" && go run ./tests/testenv/cmd/kvmcheck); then
	fail "KVM is $kvm
demo: the demo boots a VM and needs a usable /dev/kvm; nothing was built. Everything else (just test) runs without it."
fi
echo "demo: KVM $kvm"
missing=()
for tool in gcc make flex bison bc cpio lz4 patch; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[ -r /usr/src/linux-source-6.1.tar.xz ] || missing+=(linux-source-6.1)
if ((${#missing[@]})); then
	how="bash .ci/install"
	[ "$(id -u)" = 0 ] || how="sudo bash .ci/install (it installs Debian packages, which needs root)"
	fail "the guest kernel build needs ${missing[*]}: run $how"
fi
