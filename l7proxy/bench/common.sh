# Helpers shared by http.sh and ab.sh (sourced). They use the caller's `client` array (the
# command prefix that pins the client, possibly empty), `work` (a scratch directory), and, for
# run_h2load, CONNS and H2_REQUESTS (run_h2load_mux: MUX_CONNS, MUX_STREAMS, MUX_REQUESTS).

wait_port() { # host port
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1:$2" >&2
    exit 1
}

# Refuses to start when something already listens where the benchmark's own processes will:
# a process left from an earlier run would answer in their place (and unpinned).
ports_free() { # host:port...
    local addr
    for addr in "$@"; do
        if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
            echo "something already listens on $addr: stop it first" >&2
            exit 1
        fi
    done
}

cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; } # user system
ticks=$(getconf CLK_TCK)

# h2load: rps p50_ms p99_ms requests (latencies from the per-request log). One stream at a time
# per connection; run_h2load_mux: MUX_CONNS connections of MUX_STREAMS streams each, as gRPC
# clients multiplex.
run_h2load() {
    h2load_with -c"$CONNS" -n"$H2_REQUESTS" "http://$1/"
}

run_h2load_mux() {
    h2load_with -c"${MUX_CONNS:-16}" -m"${MUX_STREAMS:-16}" -n"${MUX_REQUESTS:-200000}" "http://$1/"
}

h2load_with() {
    rm -f "$work/h2.log" # h2load appends to it
    "${client[@]}" h2load "$@" --log-file="$work/h2.log" >"$work/h2.out"
    local rps
    rps=$(awk '/^finished in/ { print $4 }' "$work/h2.out")
    sort -n -k3,3 "$work/h2.log" | awk -v rps="$rps" '
        { d[NR] = $3; if ($2 != 200) bad++ }
        END {
            if (bad) print "h2load: " bad " responses were not 200" > "/dev/stderr"
            printf "%.0f %.3f %.3f %d\n", rps, d[int(NR * 0.50)] / 1000, d[int(NR * 0.99)] / 1000, NR - bad
        }'
}

# Busy and total jiffies of CPUs 0 and 1 (/proc/stat): "busy0 total0 busy1 total1".
cores_ticks() {
    awk '$1 == "cpu0" || $1 == "cpu1" { busy = $2 + $3 + $4 + $7 + $8; printf "%d %d ", busy, busy + $5 + $6 }
        END { print "" }' /proc/stat
}

# measure PID TOOL ADDR: rps p50 p99 cpu_us_per_request user_us_per_request core0_busy% core1_busy%
# (how busy CPUs 0 and 1 were meanwhile: the client and endpoint's core and the proxy's, pinned)
measure() {
    local u0 s0 u1 s1 rps p50 p99 n c0 c1
    c0=$(cores_ticks)
    read -r u0 s0 <<<"$(cpu_ticks "$1")"
    read -r rps p50 p99 n <<<"$("$2" "$3")"
    read -r u1 s1 <<<"$(cpu_ticks "$1")"
    c1=$(cores_ticks)
    awk -v rps="$rps" -v p50="$p50" -v p99="$p99" -v n="$n" -v u="$((u1 - u0))" -v s="$((s1 - s0))" \
        -v hz="$ticks" -v c0="$c0" -v c1="$c1" 'BEGIN {
        per = n ? 1e6 / hz / n : 0
        split(c0, a, " "); split(c1, b, " ")
        t0 = b[2] - a[2]; t1 = b[4] - a[4]
        printf "%s %s %s %.1f %.1f %.0f %.0f\n", rps, p50, p99, (u + s) * per, u * per,
            t0 ? 100 * (b[1] - a[1]) / t0 : 0, t1 ? 100 * (b[3] - a[3]) / t1 : 0 }'
}

# HAProxy as the benchmarks run it: one thread, HTTP mode, connections to the endpoint reused
# (`http-reuse always`); HTTP/1.1 on IP:8080 and HTTP/2 with prior knowledge on IP:8081, each
# to the endpoint in the same version.
haproxy_config() { # ip endpoint maxconn
    cat <<EOF
global
    nbthread 1
    maxconn $3
    no strict-limits
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always
frontend h1
    bind $1:8080
    default_backend h1
frontend h2
    bind $1:8081 proto h2
    default_backend h2
backend h1
    server hello $2
backend h2
    server hello $2 proto h2
EOF
}
