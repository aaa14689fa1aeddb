#!/usr/bin/env bash
# User-space instructions per request of peerd's proxy (examples/bench_proxy), counted by
# valgrind's callgrind: deterministic, so it shows changes of a few percent that the rps of
# l7proxy/bench/http.sh cannot on a shared machine. One hyper "hello" endpoint, h2load as the
# client (HTTP/1.1 by default; h2: one stream at a time on 64 connections; h2mux: 16 at a time
# on 16), 1,000 warm-up requests, then REQUESTS counted.
#
#   l7proxy/bench/instructions.sh                       # from the repository root
#   PROTO=h2 REQUESTS=30000 l7proxy/bench/instructions.sh
#   KEEP=/tmp/cg.out l7proxy/bench/instructions.sh      # keep the profile (callgrind_annotate)
#   CG_OPTS=--dump-instr=yes KEEP=/tmp/cg.out ...       # per instruction, for atomics.py
#
# Needs valgrind and h2load. Addresses: endpoint 127.0.0.1:18080, proxy 127.0.0.3:{8080,8081}.
set -euo pipefail
cd "$(dirname "$0")/../.."

REQUESTS=${REQUESTS:-30000}
PROTO=${PROTO:-h1}
for tool in valgrind callgrind_control callgrind_annotate h2load; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
cargo build --release -p l7proxy --examples -q
bin=target/release/examples
work=$(mktemp -d)
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] && cp "$work"/cg.out.* "$KEEP" 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT

"$bin/hello" 127.0.0.1:18080 1 >/dev/null &
pids+=($!)
valgrind --tool=callgrind ${CG_OPTS:-} --callgrind-out-file="$work/cg.out" \
    "$bin/bench_proxy" 127.0.0.3 127.0.0.1:18080 1 >/dev/null 2>"$work/valgrind.err" &
proxy=$!
pids+=($proxy)
case $PROTO in
    h1) load=(h2load --h1 -c64) url=http://127.0.0.3:8080/ ;;
    h2) load=(h2load -c64) url=http://127.0.0.3:8081/ ;;
    h2mux) load=(h2load -c16 -m16) url=http://127.0.0.3:8081/ ;;
    *) echo "PROTO is h1, h2 or h2mux" >&2; exit 1 ;;
esac
for _ in $(seq 100); do
    "${load[@]}" -n1 "$url" 2>/dev/null | grep -q "1 succeeded" && break
    sleep 0.2
done
"${load[@]}" -n1000 "$url" >/dev/null
callgrind_control -z "$proxy" >/dev/null 2>&1
"${load[@]}" -n"$REQUESTS" "$url" | grep -E "^requests:"
callgrind_control -d "$proxy" >/dev/null 2>&1
sleep 1
total=$(callgrind_annotate "$work"/cg.out.* 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
echo "$PROTO: $((total / REQUESTS)) user-space instructions per request ($total over $REQUESTS requests)"
