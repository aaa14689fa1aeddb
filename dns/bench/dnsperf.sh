#!/usr/bin/env bash
# peerd's DNS against unbound, same names, same client, same run.
#
# Both serve 1,000 names svcN.bench.global -> 10.253.x.y on their own loopback port with one
# thread (unbound `num-threads: 1`, `local-zone: "global." static`; peerd's example on a
# current-thread runtime). dnsperf then queries each in turn with the same query file:
#   1. throughput: ROUNDS x DURATION seconds each, alternating servers, `-c 1 -T 1 -q 100`;
#      prints QPS and dnsperf's average latency, and the ratio of the median QPS;
#   2. latency: LAT_QPS queries/s (below both servers' capacity) for LAT_SECONDS with `-v`;
#      prints p50 / p99 / p99.9 / max of the per-query latencies.
# The client only talks to 127.0.0.1. Needs: cargo, unbound, dnsperf, dig (Debian: unbound,
# dnsperf, bind9-dnsutils). Run from anywhere: dns/bench/dnsperf.sh
set -euo pipefail

DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-5}
NAMES=${NAMES:-1000}
LAT_QPS=${LAT_QPS:-20000}
LAT_SECONDS=${LAT_SECONDS:-5}
PEERD_PORT=${PEERD_PORT:-15353}
UNBOUND_PORT=${UNBOUND_PORT:-15354}
# Pin each server to CPU $SERVER_CPU and dnsperf to $CLIENT_CPU (default: no pinning; on two
# CPUs a pinned dnsperf, with its sender and receiver threads on one CPU, is the bottleneck).
SERVER_CPU=${SERVER_CPU-}
CLIENT_CPU=${CLIENT_CPU-}

repo=$(cd "$(dirname "$0")/../.." && pwd)
for tool in unbound dnsperf dig; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install unbound dnsperf bind9-dnsutils)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/peerd-dnsperf.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

pin() { # pin CPU command... (exec: a backgrounded `pin` is then the command's own PID)
    local cpu=$1; shift
    if [[ -n $cpu ]]; then exec taskset -c "$cpu" "$@"; else exec "$@"; fi
}

wait_ready() { # port
    for _ in $(seq 100); do
        if [[ $(dig @127.0.0.1 -p "$1" +short +time=1 +tries=1 svc1.bench.global A 2>/dev/null) == 10.253.0.1 ]]; then
            return 0
        fi
        sleep 0.1
    done
    echo "server on port $1 did not answer" >&2
    exit 1
}

echo "== building peerd's example server (release)"
(cd "$repo" && cargo build --release -q -p dns --example serve)

for ((i = 0; i < NAMES; i++)); do
    echo "svc$i.bench.global A"
done >"$work/queries"

{
    cat <<EOF
server:
    interface: 127.0.0.1@$UNBOUND_PORT
    port: $UNBOUND_PORT
    num-threads: 1
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$work"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    local-zone: "global." static
EOF
    for ((i = 0; i < NAMES; i++)); do
        echo "    local-data: \"svc$i.bench.global. 5 IN A 10.253.$((i / 256)).$((i % 256))\""
    done
    printf 'remote-control:\n    control-enable: no\n'
} >"$work/unbound.conf"
unbound-checkconf "$work/unbound.conf" >/dev/null

# `so-reuseport` would let a stray unbound share the port: make sure it is ours alone.
for port in "$PEERD_PORT" "$UNBOUND_PORT"; do
    if dig @127.0.0.1 -p "$port" +time=1 +tries=1 . SOA >/dev/null 2>&1; then
        echo "something already answers on 127.0.0.1:$port" >&2
        exit 1
    fi
done
(pin "$SERVER_CPU" unbound -d -c "$work/unbound.conf") >"$work/unbound.log" 2>&1 &
pids+=($!)
(pin "$SERVER_CPU" "$repo/target/release/examples/serve" "127.0.0.1:$PEERD_PORT" "$NAMES") >"$work/peerd.log" 2>&1 &
pids+=($!)
wait_ready "$UNBOUND_PORT"
wait_ready "$PEERD_PORT"

echo "== $(nproc) CPUs; servers on CPU ${SERVER_CPU:-any}, dnsperf on CPU ${CLIENT_CPU:-any}; $NAMES names"
echo "== throughput: $ROUNDS x ${DURATION}s each, dnsperf -c 1 -T 1 -q 100"
declare -A runs
for ((r = 1; r <= ROUNDS; r++)); do
    for server in peerd unbound; do
        port=$PEERD_PORT
        [[ $server == unbound ]] && port=$UNBOUND_PORT
        out=$( (pin "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -l "$DURATION" -c 1 -T 1 -q 100) 2>&1)
        qps=$(awk '/Queries per second/ {print $4}' <<<"$out")
        avg=$(awk '/Average Latency/ {printf "%.3f", $4 * 1000}' <<<"$out")
        lost=$(awk '/Queries lost/ {print $3}' <<<"$out")
        printf '  round %d  %-8s %10.0f qps   avg %s ms   lost %s\n' "$r" "$server" "$qps" "$avg" "$lost"
        runs[$server]+="$qps "
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
peerd_qps=$(median <<<"${runs[peerd]}")
unbound_qps=$(median <<<"${runs[unbound]}")

echo "== latency at $LAT_QPS qps for ${LAT_SECONDS}s (dnsperf -v, per-query)"
declare -A lat
for server in peerd unbound; do
    port=$PEERD_PORT
    [[ $server == unbound ]] && port=$UNBOUND_PORT
    (pin "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -l "$LAT_SECONDS" -Q "$LAT_QPS" -v) >"$work/latency" 2>&1
    lost=$(awk '/Queries lost/ {print $3}' "$work/latency")
    lat[$server]=$(awk '/^> [A-Z]+ / {print $NF * 1000}' "$work/latency" | sort -g |
        awk -v lost="$lost" '{v[NR] = $1} END {printf "p50 %.3f ms  p99 %.3f ms  p99.9 %.3f ms  max %.3f ms  lost %s", v[int(NR * 0.5)], v[int(NR * 0.99)], v[int(NR * 0.999)], v[NR], lost}')
    printf '  %-8s %s\n' "$server" "${lat[$server]}"
done

echo "== summary"
printf '  %-8s median %8.0f qps   %s\n' peerd "$peerd_qps" "${lat[peerd]}"
printf '  %-8s median %8.0f qps   %s\n' unbound "$unbound_qps" "${lat[unbound]}"
awk -v p="$peerd_qps" -v u="$unbound_qps" 'BEGIN {printf "  peerd / unbound: %.2fx\n", p / u}'
kill -INT "${pids[1]}" 2>/dev/null || true
wait "${pids[1]}" 2>/dev/null || true
echo "== peerd counters: $(tail -n 1 "$work/peerd.log")"
