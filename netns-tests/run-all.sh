#!/usr/bin/env bash
# Runs every check and test of the project: formatting, clippy, unit and property tests, the
# mock-clock timer tests, and the network-namespace end-to-end tests (which need root).
# Installs the system packages the tests use when they are missing (Debian/Ubuntu, as root).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in wireguard-go:wireguard-go wg:wireguard-tools ip:iproute2 iperf3:iperf3 \
    ethtool:ethtool ping:iputils-ping dig:bind9-dnsutils unbound:unbound nstat:iproute2 \
    curl:curl setpriv:util-linux; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "installing: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
            { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
    else
        echo "missing tools (${need[*]}); netns tests will skip (or fail under CI=true)" >&2
    fi
fi

# Manifest validation (deploy/): kubectl for `kubectl kustomize`, and kubernetes-validate (PyPI,
# offline schemas).
if ! command -v kubectl >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y --no-install-recommends kubectl >/dev/null 2>&1 || true
fi
if ! command -v kubernetes-validate >/dev/null 2>&1; then
    python3 -m pip install --quiet kubernetes-validate >/dev/null 2>&1 || true
fi

jobs=${CARGO_BUILD_JOBS:-2}
set -x
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -j"$jobs" -- -D warnings
cargo clippy -p overlay --features mock-time --all-targets -j"$jobs" -- -D warnings
cargo build -p peerd -j"$jobs"
cargo test --workspace -j"$jobs"
cargo test -p overlay --features mock-time -j"$jobs" --lib
