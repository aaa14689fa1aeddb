#!/usr/bin/env bash
# Userspace data plane benchmark (issue 6): single-stream iperf3 TCP throughput between two
# network namespaces A [192.0.2.1] and B [192.0.2.2] joined by a veth pair, in one run, for
#   1. peerd TUN path:       peerd (kernel mode) A <-> peerd (kernel mode) B; iperf3 between
#                            their overlay addresses.
#   2. peerd userspace path: peerd (userspace mode: smoltcp inside peerd, no TUN) A <-> peerd
#                            (kernel mode) B; B's iperf3 client dials A's overlay address, which
#                            A's stack forwards to iperf3 on A's loopback (a [[service]] endpoint).
#   3. onetun:               onetun (smoltcp WireGuard client, `cargo install onetun`) in A
#                            forwards 127.0.0.1:5301 to iperf3 behind wireguard-go in B.
# Each is measured in both directions: "sends" is data leaving the userspace stack (peerd
# userspace A, onetun A; for the TUN path, A), "receives" is data arriving at it.
# Run as root from the repository root:
#   netns-tests/bench/userspace.sh                 # 10 s per iperf3 run
#   SECONDS_PER_RUN=20 ONETUN=/path/to/onetun netns-tests/bench/userspace.sh
# Needs: iperf3, wireguard-go, wg, python3, onetun (on PATH, $ONETUN, or /opt/onetun/bin).
set -euo pipefail

SECS=${SECONDS_PER_RUN:-10}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TAG=pu$$
# shellcheck source=netns-tests/bench/lib.sh
. "$ROOT/netns-tests/bench/lib.sh"
ONETUN=${ONETUN:-$(command -v onetun || echo /opt/onetun/bin/onetun)}

for tool in iperf3 wireguard-go wg python3 ip "$ONETUN"; do
    command -v "$tool" >/dev/null || { echo "missing $tool (onetun: cargo install onetun)" >&2; exit 1; }
done
build_peerd
make_pair

# iperf3 server in SERVER_NS on BIND:PORT; client in CLIENT_NS to DST:PORT; FLAGS (-R); Gbit/s.
iperf() {
    local server_ns=$1 bind=$2 client_ns=$3 dst=$4 port=$5 flags=${6:-}
    inns "$server_ns" iperf3 -s -1 -D -B "$bind" -p "$port" --logfile "$WORK/iperf-s.log"
    for _ in $(seq 50); do
        inns "$server_ns" ss -ltn | grep -q ":$port " && break
        sleep 0.1
    done
    # shellcheck disable=SC2086
    inns "$client_ns" iperf3 -c "$dst" -p "$port" -t "$SECS" -J $flags >"$WORK/iperf.json"
    python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.3f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' "$WORK/iperf.json"
}

# A [[service]] whose endpoint is the node's overlay address on iperf3's port: in userspace
# mode peerd forwards tunnel connections to it to 127.0.0.1:5201.
iperf_service() {
    printf '[[service]]\nname = "iperf"\nnamespace = "bench"\n'
    printf 'ports = [{ name = "iperf", port = 5201, protocol = "tcp" }]\n'
    printf 'endpoints = [{ address = "%s", port = 5201 }]\n' "$1"
}

declare -A GBPS
report() { GBPS[$1]=$2; printf '%-34s %8s Gbit/s\n' "$1" "$2" >&2; }

echo "kernel $(uname -r), $(nproc) cores, iperf3 ${SECS}s single stream, $("$ONETUN" --version 2>/dev/null | head -1)" >&2

# 1. TUN path: A and B both kernel mode.
start_peerd a "${TAG}pa" 10.210.0.1 b 10.210.0.2
start_peerd b "${TAG}pb" 10.210.0.2 a 10.210.0.1
inns "$NSA" ping -q -c 3 -i 0.2 10.210.0.2 >/dev/null
report "peerd TUN: A sends" "$(iperf "$NSB" 10.210.0.2 "$NSA" 10.210.0.2 5201)"
report "peerd TUN: A receives" "$(iperf "$NSB" 10.210.0.2 "$NSA" 10.210.0.2 5201 -R)"
stop_all

# 2. Userspace path: A userspace (iperf3 on A's loopback behind its overlay address), B kernel.
start_peerd a "${TAG}pa" 10.211.0.1 b 10.211.0.2 userspace "$(iperf_service 10.211.0.1)"
start_peerd b "${TAG}pb" 10.211.0.2 a 10.211.0.1
report "peerd userspace: A sends" "$(iperf "$NSA" 127.0.0.1 "$NSB" 10.211.0.1 5201 -R)"
report "peerd userspace: A receives" "$(iperf "$NSA" 127.0.0.1 "$NSB" 10.211.0.1 5201)"
stop_all

# 3. onetun in A over wireguard-go in B.
start_wggo b "${TAG}wb" 10.212.0.2 a 10.212.0.1
inns "$NSA" "$ONETUN" 127.0.0.1:5301:10.212.0.2:5301 \
    --endpoint-addr 192.0.2.2:51820 --endpoint-public-key "$(cat "$WORK/b.pub")" \
    --private-key "$(cat "$WORK/a.key")" --source-peer-ip 10.212.0.1 --keep-alive 10 \
    --log error >"$WORK/onetun.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do inns "$NSA" ss -ltn | grep -q ":5301 " && break; sleep 0.1; done
report "onetun: A sends" "$(iperf "$NSB" 10.212.0.2 "$NSA" 127.0.0.1 5301)"
report "onetun: A receives" "$(iperf "$NSB" 10.212.0.2 "$NSA" 127.0.0.1 5301 -R)"
stop_all

python3 - "${GBPS[peerd TUN: A sends]}" "${GBPS[peerd TUN: A receives]}" \
    "${GBPS[peerd userspace: A sends]}" "${GBPS[peerd userspace: A receives]}" \
    "${GBPS[onetun: A sends]}" "${GBPS[onetun: A receives]}" <<'EOF'
import sys
tun_s, tun_r, us_s, us_r, on_s, on_r = map(float, sys.argv[1:7])
print("| path | A sends Gbit/s | A receives Gbit/s |")
print("|---|---|---|")
print(f"| peerd, TUN (kernel mode) | {tun_s:.2f} | {tun_r:.2f} |")
print(f"| peerd, userspace mode (smoltcp) | {us_s:.2f} | {us_r:.2f} |")
print(f"| onetun over wireguard-go | {on_s:.2f} | {on_r:.2f} |")
print()
for name, us, tun, on in [("sends", us_s, tun_s, on_s), ("receives", us_r, tun_r, on_r)]:
    a, b = us / tun, us / max(on, 1e-9)
    print(f"userspace {name}: {a:.2f}x TUN (target >= 0.3: {'met' if a >= 0.3 else 'MISSED'}), "
          f"{b:.1f}x onetun (target >= 10: {'met' if b >= 10 else 'MISSED'})")
EOF
