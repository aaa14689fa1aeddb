#!/usr/bin/env bash
# A/B of builds of the proxy (examples/bench_proxy) on HTTP/2, and of HAProxy: all run at once
# on CPU 1 in front of one hyper "hello" endpoint, and h2load (on CPU 0, with the endpoint)
# takes turns on them, in one order in odd rounds and the reverse in even ones, so that all
# see the same machine. Prints, per round and target: rps, p50, p99, CPU and user time per
# request from /proc; then each target against the first, paired round by round (geometric
# means with 95 % bootstrap intervals, l7proxy/bench/paired.py). On this shared VM, rounds of
# the same build differ by ±10 % in p99: compare over many rounds.
#
#   cp target/release/examples/bench_proxy /tmp/bp_a     # build A, then change and rebuild
#   l7proxy/bench/ab.sh /tmp/bp_a target/release/examples/bench_proxy
#   ROUNDS=30 N=100000 l7proxy/bench/ab.sh haproxy /tmp/bp_a /tmp/bp_b
#   LOAD="-c16 -m16" N=200000 l7proxy/bench/ab.sh haproxy target/release/examples/bench_proxy
#
# HELLO=PATH runs another build of the endpoint (default target/release/examples/hello).
# A target is a bench_proxy-like executable (arguments: VIP ENDPOINT THREADS), or `haproxy`
# (configured as in http.sh: haproxy_config in common.sh). LOAD: h2load's connection and
# stream options (default -c64, one stream at a time per connection).
# Needs h2load (and haproxy for that target). Addresses: endpoint 127.0.0.1:18080, targets
# 127.0.0.10:8081, 127.0.0.11:8081, ... (HAProxy also binds :8080 there)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 TARGET TARGET [TARGET...]   (TARGET: a bench_proxy build, or haproxy)" >&2; exit 2; }
targets=()
for t in "$@"; do
    if [ "$t" = haproxy ]; then targets+=(haproxy); else targets+=("$(realpath "$t")"); fi
done
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-4}
N=${N:-200000}
read -r -a load <<<"${LOAD:--c64}"
command -v h2load >/dev/null || { echo "missing h2load (apt-get install nghttp2-client)" >&2; exit 1; }
cargo build --release -j"${CARGO_BUILD_JOBS:-2}" -p l7proxy --example hello >&2
ulimit -n "$(ulimit -Hn)"
client=() proxy=()
if [ "$(nproc)" -ge 2 ]; then
    client=(taskset -c 0) proxy=(taskset -c 1)
fi
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=common.sh
. l7proxy/bench/common.sh
addrs=()
for i in "${!targets[@]}"; do
    addrs+=("127.0.0.$((10 + i))")
done
ports_free 127.0.0.1:18080 "${addrs[@]/%/:8081}" "${addrs[@]/%/:8080}"

"${client[@]}" "${HELLO:-target/release/examples/hello}" 127.0.0.1:18080 1 >/dev/null &
pids+=($!)
tpids=()
for i in "${!targets[@]}"; do
    if [ "${targets[$i]}" = haproxy ]; then
        haproxy_config "${addrs[$i]}" 127.0.0.1:18080 2000 >"$work/haproxy.$i.cfg"
        "${proxy[@]}" haproxy -f "$work/haproxy.$i.cfg" -db >/dev/null 2>&1 &
    else
        "${proxy[@]}" "${targets[$i]}" "${addrs[$i]}" 127.0.0.1:18080 1 >/dev/null &
    fi
    tpids+=($!)
    pids+=($!)
done
wait_port 127.0.0.1 18080
for addr in "${addrs[@]}"; do
    wait_port "$addr" 8081
done

run_load() {
    h2load_with "${load[@]}" -n"$N" "http://$1/"
}
# Warm-up: connections to the endpoint, allocator caches.
for addr in "${addrs[@]}"; do
    "${client[@]}" h2load "${load[@]}" -n20000 "http://$addr:8081/" >/dev/null
done

echo "round target rps p50_ms p99_ms cpu_us user_us core0% core1%   (h2load ${load[*]} -n$N)"
: >"$work/results"
for round in $(seq "$ROUNDS"); do
    order=$(seq 0 $((${#targets[@]} - 1)))
    [ $((round % 2)) = 0 ] && order=$(seq $((${#targets[@]} - 1)) -1 0)
    for i in $order; do
        r=$(measure "${tpids[$i]}" run_load "${addrs[$i]}:8081")
        echo "$round $i $r"
        echo "t$i h2 $r $round" >>"$work/results"
    done
done
echo
for i in "${!targets[@]}"; do
    echo "t$i: ${targets[$i]}"
done
if command -v python3 >/dev/null; then
    for i in $(seq 1 $((${#targets[@]} - 1))); do
        python3 l7proxy/bench/paired.py "$work/results" "t$i" t0
    done
fi
