#!/usr/bin/env bash
# A/B of two builds of the proxy (examples/bench_proxy) on HTTP/2: both run at once on CPU 1 in
# front of one hyper "hello" endpoint, and h2load (on CPU 0, with the endpoint) takes turns on
# them, so that both see the same machine. Prints, per round and build: rps, p99, and the CPU
# and user time per request from /proc. On this shared VM, rounds of the same build differ by
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
N=${N:-200000}
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

"${client[@]}" target/release/examples/hello 127.0.0.1:18080 1 >/dev/null &
pids+=($!)
"${proxy[@]}" "$a" 127.0.0.3 127.0.0.1:18080 1 >/dev/null &
pid_a=$!
pids+=($pid_a)
"${proxy[@]}" "$b" 127.0.0.5 127.0.0.1:18080 1 >/dev/null &
pid_b=$!
pids+=($pid_b)
for ip in 127.0.0.1:18080 127.0.0.3:8081 127.0.0.5:8081; do
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/${ip%:*}/${ip#*:}") 2>/dev/null && break
        sleep 0.1
    done
done

ticks=$(getconf CLK_TCK)
echo "round build rps p99_ms cpu_us user_us"
for round in $(seq "$ROUNDS"); do
    for build in A B; do
        if [ "$build" = A ]; then pid=$pid_a ip=127.0.0.3; else pid=$pid_b ip=127.0.0.5; fi
        read -r u0 s0 <<<"$(awk '{print $14, $15}' "/proc/$pid/stat")"
        rm -f "$work/h2.log" # h2load appends to it
        "${client[@]}" h2load -c64 -n"$N" --log-file="$work/h2.log" "http://$ip:8081/" >"$work/h2.out"
        read -r u1 s1 <<<"$(awk '{print $14, $15}' "/proc/$pid/stat")"
        rps=$(awk '/^finished in/ { print $4 }' "$work/h2.out")
        p99=$(sort -n -k3,3 "$work/h2.log" | awk '{ d[NR] = $3 } END { printf "%.3f", d[int(NR * 0.99)] / 1000 }')
        awk -v r="$round" -v b="$build" -v rps="$rps" -v p99="$p99" -v n="$N" -v hz="$ticks" \
            -v u="$((u1 - u0))" -v s="$((s1 - s0))" \
            'BEGIN { printf "%s %s %.0f %s %.1f %.1f\n", r, b, rps, p99, (u + s) * 1e6 / hz / n, u * 1e6 / hz / n }'
    done
done
