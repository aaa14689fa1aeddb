#!/usr/bin/env bash
# L7 proxy benchmark on loopback: one hyper "hello" endpoint, measured directly, behind HAProxy
# (nbthread 1, mode http, http-reuse always) and behind peerd's proxy (examples/bench_proxy),
# all in the same run. HTTP/1.1 with wrk, HTTP/2 (h2c prior knowledge on both sides) with h2load
# twice: one stream at a time on each of 64 connections ("h2"), and 16 streams at a time on each
# of 16 connections ("h2mux", as gRPC clients multiplex: 256 streams at once, more than the
# endpoint's 200 per connection); then the proxies' memory with 10,000 idle keep-alive client
# connections, HTTP/1.1 and HTTP/2.
#
#   l7proxy/bench/http.sh                  # from the repository root; no root needed
#   DURATION=8s CONNS=64 H2_REQUESTS=100000 MUX_CONNS=16 MUX_STREAMS=16 MUX_REQUESTS=200000 \
#       ROUNDS=6 PEERD_THREADS=1 BACKEND_THREADS=1 IDLE=10000 KEEP_LOGS=DIR l7proxy/bench/http.sh
#
# Each round runs every target once, in turn, HAProxy before peerd in odd rounds and after it in
# even ones; the table shows per-column medians over the rounds, and the lines below it each
# round's peerd/HAProxy p99 ratio. This VM stalls now and then for a second or so (h2load
# against the endpoint alone shows it too: l7proxy/bench/stalls.py); a stall decides the p99 of
# the run it falls in, so many short rounds, alternating, spread the stalls over both proxies.
# KEEP_LOGS=DIR keeps h2load's per-request logs there (ROUND.TARGET.log) for stalls.py, and the
# per-round results (results) for paired.py.
# cpu_us is the CPU time (user + system) of the process in front of the client (the endpoint for
# "direct", else the proxy) per request, user_us its user-space part: unlike rps they hold up
# when other work shares the cores. core0% and core1% are how busy CPU 0 (client and endpoint)
# and CPU 1 (the proxy) were during the measurement: a core at 100 % is the bottleneck, and
# whatever is in front of it then sets the rps and the latencies.
# PEERD_THREADS=1 runs the proxy on a current-thread runtime (as linkerd2-proxy does on one core);
# BACKEND_THREADS=1 the endpoint too (see examples/hello.rs for why it matters). Behind a proxy
# the endpoint gets the 64 client connections' requests on one or a few HTTP/2 connections, and
# answers many in one write; straight from h2load it gets them on 64 connections, one stream
# each, so "direct" can be slower than through a proxy.
# With PIN=1 (default, 2+ CPUs) the proxy under test runs alone on CPU 1 and the client and the
# endpoint share CPU 0, so that both proxies get the same core whatever else the machine runs.
#
# A fourth target, "bare-hyper" (examples/bare_hyper_proxy: hyper server and client back to back,
# one upstream connection per client connection, nothing else), is the floor for a hyper-based
# HTTP/1.1 proxy: what peerd's HTTP/1.1 fast path (l7proxy/src/h1) is measured against.
#
# Needs wrk, h2load (nghttp2-client) and haproxy. Addresses: endpoint 127.0.0.1:18080, HAProxy
# 127.0.0.2:{8080,8081}, peerd 127.0.0.3:{8080,8081} (8080 HTTP/1.1, 8081 HTTP/2), bare-hyper
# 127.0.0.4:8080; the memory measurement's fresh proxies 127.0.0.5:{8080,8081}.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-8s}
CONNS=${CONNS:-64}
H2_REQUESTS=${H2_REQUESTS:-100000}
ROUNDS=${ROUNDS:-6}
KEEP_LOGS=${KEEP_LOGS:-}
PIN=${PIN:-1}
PEERD_THREADS=${PEERD_THREADS:-1}
BACKEND_THREADS=${BACKEND_THREADS:-1}
IDLE=${IDLE:-10000}
BACKEND=127.0.0.1:18080
HAPROXY_IP=127.0.0.2
PEERD_IP=127.0.0.3
BARE_IP=127.0.0.4
MEM_IP=127.0.0.5

for tool in wrk h2load haproxy; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install wrk nghttp2-client haproxy)" >&2; exit 1; }
done
# 10,000 idle clients need ~10,000 descriptors in the proxy. HAProxy wants 2 per maxconn and
# refuses to start when it cannot have them, unless told `no strict-limits`.
ulimit -n "$(ulimit -Hn)"
maxconn=$((IDLE + 1000))
client=() proxy=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    client=(taskset -c 0) proxy=(taskset -c 1)
fi
cargo build --release -j"${CARGO_BUILD_JOBS:-2}" -p l7proxy --examples >&2
bin=target/release/examples

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=common.sh
. l7proxy/bench/common.sh

ports_free 127.0.0.1:18080 "$HAPROXY_IP:8080" "$HAPROXY_IP:8081" "$PEERD_IP:8080" "$PEERD_IP:8081" \
    "$BARE_IP:8080" "$MEM_IP:8080" "$MEM_IP:8081"

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

"${client[@]}" "$bin/hello" "$BACKEND" "$BACKEND_THREADS" >/dev/null &
backend_pid=$!
pids+=($backend_pid)
wait_port 127.0.0.1 18080

haproxy_config "$HAPROXY_IP" "$BACKEND" "$maxconn" >"$work/haproxy.cfg"
"${proxy[@]}" haproxy -f "$work/haproxy.cfg" -db >/dev/null 2>&1 &
haproxy_pid=$!
pids+=($haproxy_pid)
"${proxy[@]}" "$bin/bench_proxy" "$PEERD_IP" "$BACKEND" "$PEERD_THREADS" >/dev/null &
peerd_pid=$!
pids+=($peerd_pid)
"${proxy[@]}" "$bin/bare_hyper_proxy" "$BARE_IP:8080" "$BACKEND" >/dev/null &
bare_pid=$!
pids+=($bare_pid)
wait_port "$HAPROXY_IP" 8080
wait_port "$PEERD_IP" 8080
wait_port "$BARE_IP" 8080

# wrk: rps p50_ms p99_ms requests
run_wrk() {
    "${client[@]}" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "http://$1/" >"$work/wrk.out"
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
            return v
        }
        /Requests\/sec/ { rps = $2 }
        / requests in / { n = $1 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /Non-2xx|Socket errors/ { print "wrk: " $0 > "/dev/stderr" }
        END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, n }
    ' "$work/wrk.out"
}

# Memory with idle keep-alive clients (each sends one request, then idles), HTTP/1.1 and
# HTTP/2 (one stream each), each measured on a fresh proxy (at MEM_IP): memory freed by an
# earlier measurement would be reused and hide the cost.
idle_rss() { # target addr [h2]
    local pid before after
    case $1 in
        peerd) "${proxy[@]}" "$bin/bench_proxy" "$MEM_IP" "$BACKEND" "$PEERD_THREADS" >/dev/null & ;;
        haproxy) "${proxy[@]}" haproxy -f "$work/haproxy-mem.cfg" -db >/dev/null 2>&1 & ;;
    esac
    pid=$!
    wait_port "$MEM_IP" 8080
    wait_port "$MEM_IP" 8081
    before=$(rss_kib "$pid")
    "${client[@]}" "$bin/idle_clients" "$2" "$IDLE" 60 ${3:-} >"$work/idle.out" &
    local client=$!
    for _ in $(seq 300); do
        grep -q '^open' "$work/idle.out" 2>/dev/null && break
        sleep 0.1
    done
    # peerd's HTTP/2 connections give back their buffers after a second without a stream.
    sleep 2
    after=$(rss_kib "$pid")
    local opened
    opened=$(cat "$work/idle.out")
    kill "$client" "$pid" 2>/dev/null || true
    wait "$client" "$pid" 2>/dev/null || true
    echo "$before $after $opened"
}
haproxy_config "$MEM_IP" "$BACKEND" "$maxconn" >"$work/haproxy-mem.cfg"
mem_peerd=$(idle_rss peerd "$MEM_IP:8080")
mem_haproxy=$(idle_rss haproxy "$MEM_IP:8080")
mem2_peerd=$(idle_rss peerd "$MEM_IP:8081" h2)
mem2_haproxy=$(idle_rss haproxy "$MEM_IP:8081" h2)

: >"$work/results"
[ -z "$KEEP_LOGS" ] || mkdir -p "$KEEP_LOGS"
for round in $(seq "$ROUNDS"); do
    order="direct haproxy peerd bare-hyper"
    [ $((round % 2)) = 0 ] && order="direct peerd haproxy bare-hyper"
    for target in $order; do
        case $target in
            direct) pid=$backend_pid h1=$BACKEND h2=$BACKEND ;;
            haproxy) pid=$haproxy_pid h1=$HAPROXY_IP:8080 h2=$HAPROXY_IP:8081 ;;
            peerd) pid=$peerd_pid h1=$PEERD_IP:8080 h2=$PEERD_IP:8081 ;;
            bare-hyper) pid=$bare_pid h1=$BARE_IP:8080 h2= ;;
        esac
        r1=$(measure "$pid" run_wrk "$h1")
        echo "$target h1 $r1 $round" >>"$work/results"
        r2="-" r3="-"
        if [ -n "$h2" ]; then
            r2=$(measure "$pid" run_h2load "$h2")
            echo "$target h2 $r2 $round" >>"$work/results"
            [ -z "$KEEP_LOGS" ] || cp "$work/h2.log" "$KEEP_LOGS/$round.$target.log"
            r3=$(measure "$pid" run_h2load_mux "$h2")
            echo "$target h2mux $r3 $round" >>"$work/results"
        fi
        echo "round $round $target  HTTP/1.1: $r1   HTTP/2: $r2   HTTP/2 mux: $r3" >&2
    done
done

median() { # target proto column
    awk -v t="$1" -v p="$2" -v c="$3" '$1 == t && $2 == p { print $c }' "$work/results" | sort -g |
        awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
declare -A result
for target in direct haproxy peerd bare-hyper; do
    for proto in h1 h2 h2mux; do
        result[$target.$proto]="$(for c in 3 4 5 6 7 8 9; do median "$target" "$proto" "$c"; done | xargs)"
    done
done

echo
echo "wrk -t1 -c$CONNS -d$DURATION --latency; h2load -c$CONNS -n$H2_REQUESTS (h2c);" \
    "h2mux: h2load -c${MUX_CONNS:-16} -m${MUX_STREAMS:-16} -n${MUX_REQUESTS:-200000}; medians of $ROUNDS rounds;" \
    "peerd threads: $PEERD_THREADS; endpoint threads: $BACKEND_THREADS; pinned: ${proxy[*]:-no}"
printf '%-10s %-6s %10s %9s %9s %8s %8s %6s %6s\n' target proto rps p50_ms p99_ms cpu_us user_us core0% core1%
for target in direct haproxy peerd bare-hyper; do
    for proto in h1 h2 h2mux; do
        [ "$target" = bare-hyper ] && [ "$proto" != h1 ] && continue
        read -r rps p50 p99 cpu user core0 core1 <<<"${result[$target.$proto]}"
        printf '%-10s %-6s %10s %9s %9s %8s %8s %6s %6s\n' "$target" "$proto" "$rps" "$p50" "$p99" "$cpu" "$user" \
            "$core0" "$core1"
    done
done
echo
for proto in h1 h2 h2mux; do
    read -r hr hp50 hp99 hcpu huser <<<"${result[haproxy.$proto]}"
    read -r pr pp50 pp99 pcpu puser <<<"${result[peerd.$proto]}"
    awk -v proto="$proto" -v hr="$hr" -v pr="$pr" -v h50="$hp50" -v p50="$pp50" -v h99="$hp99" \
        -v p99="$pp99" -v hc="$hcpu" -v pc="$pcpu" -v hu="$huser" -v pu="$puser" 'BEGIN {
        printf "peerd/haproxy %s: rps %.2fx  p50 %.2fx  p99 %.2fx  cpu/request %.2fx  user/request %.2fx\n",
            proto, pr / hr, p50 / h50, p99 / h99, pc / hc, (hu ? pu / hu : 0) }'
done
# Round by round: peerd's p99 over HAProxy's, and in how many rounds it was no worse.
for proto in h1 h2 h2mux; do
    awk -v proto="$proto" '$2 == proto && $1 == "haproxy" { h[$NF] = $5 }
        $2 == proto && $1 == "peerd" { p[$NF] = $5 }
        END {
            for (r = 1; r in h; r++) {
                line = line sprintf(" %.2f", p[r] / h[r]); n++
                if (p[r] <= h[r]) ok++
            }
            printf "peerd/haproxy %s p99 by round:%s (no worse in %d of %d)\n", proto, line, ok, n
        }' "$work/results"
done
# The same pairs as geometric means, with 95 % bootstrap intervals over the rounds.
if command -v python3 >/dev/null; then
    python3 l7proxy/bench/paired.py "$work/results"
fi
[ -z "$KEEP_LOGS" ] || cp "$work/results" "$KEEP_LOGS/results"
read -r br _ _ bcpu <<<"${result[bare-hyper.h1]}"
read -r pr _ _ pcpu <<<"${result[peerd.h1]}"
awk -v br="$br" -v pr="$pr" -v bc="$bcpu" -v pc="$pcpu" 'BEGIN {
    printf "peerd/bare-hyper h1: rps %.2fx  cpu/request %.2fx\n", pr / br, pc / bc }'
echo
for proto in h1 h2; do
    if [ $proto = h1 ]; then
        peerd_mem=$mem_peerd haproxy_mem=$mem_haproxy label=HTTP/1.1
    else
        peerd_mem=$mem2_peerd haproxy_mem=$mem2_haproxy label=HTTP/2
    fi
    read -r pb pa popen pn pfail pf <<<"$peerd_mem"
    read -r hb ha hopen hn hfail hf <<<"$haproxy_mem"
    printf 'RSS with %s idle %s keep-alive clients: peerd %d -> %d KiB (%s open, %s failed); haproxy %d -> %d KiB (%s open, %s failed)\n' \
        "$IDLE" "$label" "$pb" "$pa" "$pn" "$pf" "$hb" "$ha" "$hn" "$hf"
    awk -v pb="$pb" -v pa="$pa" -v hb="$hb" -v ha="$ha" -v n="$IDLE" -v label="$label" 'BEGIN {
        printf "per idle %s connection: peerd %.1f KiB, haproxy %.1f KiB\n", label, (pa - pb) / n, (ha - hb) / n }'
done
