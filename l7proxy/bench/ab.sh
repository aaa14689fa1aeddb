#!/usr/bin/env bash
# A/B of two builds of the proxy (examples/bench_proxy) on HTTP/2: both run at once on CPU 1 in
# front of one hyper "hello" endpoint, and h2load (on CPU 0, with the endpoint) takes turns on
# them, so that both see the same machine. Prints, per round and build: rps, p50, p99, and the
# CPU and user time per request from /proc. On this shared VM, rounds of the same build differ by
# ±10 %: compare builds round by round, over several rounds.
#
#   cp target/release/examples/bench_proxy /tmp/bp_a     # build A, then change and rebuild
#   l7proxy/bench/ab.sh /tmp/bp_a target/release/examples/bench_proxy
#   ROUNDS=6 N=200000 l7proxy/bench/ab.sh A B
#
# Needs h2load. Addresses: endpoint 127.0.0.1:18080, A 127.0.0.3:8081, B 127.0.0.5:8081.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BENCH_PROXY_A BENCH_PROXY_B" >&2; exit 2; }
a=$(realpath "$1") b=$(realpath "$2")
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-4}
CONNS=64
H2_REQUESTS=${N:-200000}
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
ports_free 127.0.0.1:18080 127.0.0.3:8081 127.0.0.5:8081

"${client[@]}" target/release/examples/hello 127.0.0.1:18080 1 >/dev/null &
pids+=($!)
"${proxy[@]}" "$a" 127.0.0.3 127.0.0.1:18080 1 >/dev/null &
pid_a=$!
pids+=($pid_a)
"${proxy[@]}" "$b" 127.0.0.5 127.0.0.1:18080 1 >/dev/null &
pid_b=$!
pids+=($pid_b)
wait_port 127.0.0.1 18080
wait_port 127.0.0.3 8081
wait_port 127.0.0.5 8081

echo "round build rps p50_ms p99_ms cpu_us user_us"
for round in $(seq "$ROUNDS"); do
    echo "$round A $(measure "$pid_a" run_h2load 127.0.0.3:8081)"
    echo "$round B $(measure "$pid_b" run_h2load 127.0.0.5:8081)"
done
