#!/usr/bin/env bash
# Overlay benchmark: single-stream iperf3 TCP throughput and ping RTT between two network
# namespaces joined by a veth pair, in one run, for
#   1. raw veth (no tunnel)
#   2. wireguard-go <-> wireguard-go   (the anchor)
#   3. peerd <-> peerd
#   4. peerd -> wireguard-go and wireguard-go -> peerd
# and the ratios between them. Run as root from the repository root:
#   netns-tests/bench/overlay.sh            # 10 s per iperf3 run
#   SECONDS_PER_RUN=20 netns-tests/bench/overlay.sh
#   VETH_GRO=off netns-tests/bench/overlay.sh   # veth as the kernel creates it
# Needs: iperf3, wireguard-go, wg, ethtool, ping, python3; builds peerd --release.
set -euo pipefail

SECS=${SECONDS_PER_RUN:-10}
PINGS=${PINGS:-200}
VETH_GRO=${VETH_GRO:-on}   # GRO on the veth pair (the kernel creates veth with it off)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TAG=pb$$
# shellcheck source=netns-tests/bench/lib.sh
. "$ROOT/netns-tests/bench/lib.sh"
for tool in iperf3 wireguard-go wg ethtool ping python3 ip; do need "$tool"; done

build_peerd

make_pair
for side in a b; do
    ip netns exec "$TAG-$side" ethtool -K "${TAG}v$side" gro "$VETH_GRO" >/dev/null
done

# iperf3 from A to DST (B's address for the setup under test); prints Gbit/s.
throughput() {
    local dst=$1
    inns "$NSB" iperf3 -s -1 -D -B "$dst" --logfile "$WORK/iperf-s.log"
    for _ in $(seq 50); do
        inns "$NSB" ss -ltn | grep -q ":5201" && break
        sleep 0.1
    done
    inns "$NSA" iperf3 -c "$dst" -t "$SECS" -J >"$WORK/iperf.json"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.3f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' "$WORK/iperf.json"
}

# Average ping RTT from A to DST in milliseconds.
rtt() {
    inns "$NSA" ping -q -c 5 -i 0.05 "$1" >/dev/null
    inns "$NSA" ping -q -c "$PINGS" -i 0.005 "$1" | awk -F'/' '/^rtt/ {print $5}'
}

declare -A GBPS MS
measure() { # label dst
    MS[$1]=$(rtt "$2")
    GBPS[$1]=$(throughput "$2")
    printf '%-26s %8s Gbit/s %8s ms\n' "$1" "${GBPS[$1]}" "${MS[$1]}" >&2
}

echo "kernel $(uname -r), $(nproc) cores, iperf3 ${SECS}s single stream, $PINGS pings, veth gro $VETH_GRO" >&2
measure "raw veth" 192.0.2.2

start_wggo a "${TAG}wa" 10.200.0.1 b 10.200.0.2
start_wggo b "${TAG}wb" 10.200.0.2 a 10.200.0.1
measure "wireguard-go<->wg-go" 10.200.0.2
stop_all

start_peerd a "${TAG}pa" 10.201.0.1 b 10.201.0.2
start_peerd b "${TAG}pb" 10.201.0.2 a 10.201.0.1
measure "peerd<->peerd" 10.201.0.2
stop_all

start_peerd a "${TAG}pa" 10.202.0.1 b 10.202.0.2
start_wggo b "${TAG}wb" 10.202.0.2 a 10.202.0.1
measure "peerd->wireguard-go" 10.202.0.2
stop_all

start_wggo a "${TAG}wa" 10.203.0.1 b 10.203.0.2
start_peerd b "${TAG}pb" 10.203.0.2 a 10.203.0.1
measure "wireguard-go->peerd" 10.203.0.2
stop_all

python3 - "${GBPS[raw veth]}" "${GBPS[wireguard-go<->wg-go]}" "${GBPS[peerd<->peerd]}" \
    "${GBPS[peerd->wireguard-go]}" "${GBPS[wireguard-go->peerd]}" \
    "${MS[raw veth]}" "${MS[wireguard-go<->wg-go]}" "${MS[peerd<->peerd]}" \
    "${MS[peerd->wireguard-go]}" "${MS[wireguard-go->peerd]}" <<'EOF'
import sys
g = list(map(float, sys.argv[1:6])); r = list(map(float, sys.argv[6:11]))
names = ["raw veth", "wireguard-go <-> wireguard-go", "peerd <-> peerd", "peerd -> wireguard-go", "wireguard-go -> peerd"]
print("| setup | TCP Gbit/s | × wireguard-go | × raw veth | RTT ms | added RTT ms |")
print("|---|---|---|---|---|---|")
for n, gb, ms in zip(names, g, r):
    print(f"| {n} | {gb:.2f} | {gb / g[1]:.2f} | {gb / g[0]:.2f} | {ms:.3f} | {ms - r[0]:+.3f} |")
ok_wg = g[2] >= 5 * g[1]
ok_veth = g[2] >= 0.4 * g[0]
ok_rtt = (r[2] - r[0]) <= (r[1] - r[0])
print()
print(f"targets: peerd<->peerd >= 5x wireguard-go: {'met' if ok_wg else 'MISSED'} ({g[2] / g[1]:.1f}x); "
      f">= 0.4x raw veth: {'met' if ok_veth else 'MISSED'} ({g[2] / g[0]:.2f}x); "
      f"added RTT <= wireguard-go's: {'met' if ok_rtt else 'MISSED'} ({r[2] - r[0]:+.3f} vs {r[1] - r[0]:+.3f} ms)")
EOF
