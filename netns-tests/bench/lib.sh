# Shared by the netns benchmarks (source it; needs ROOT and TAG set first): two namespaces
# $NSA [192.0.2.1] and $NSB [192.0.2.2] joined by a veth pair, WireGuard keys a/b in $WORK,
# starting wireguard-go or peerd on a side, and cleanup of everything on exit.

NSA=$TAG-a
NSB=$TAG-b
WORK=$(mktemp -d "/tmp/peerd-bench-$TAG.XXXXXX")
PEERD=${PEERD_BIN:-$ROOT/target/release/peerd}
PIDS=()

inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
need() { command -v "$1" >/dev/null || { echo "missing $1" >&2; exit 1; }; }

stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
    rm -f /var/run/wireguard/${TAG}*.sock
}

cleanup() {
    stop_all
    for ns in "$NSA" "$NSB"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Builds peerd --release unless PEERD_BIN names one.
build_peerd() {
    if [ -z "${PEERD_BIN:-}" ]; then
        (cd "$ROOT" && cargo build --release -p peerd -j2 >&2)
    fi
}

# The two namespaces, the veth pair between them, and a WireGuard key pair per side.
make_pair() {
    ip netns add "$NSA"
    ip netns add "$NSB"
    ip link add "${TAG}va" type veth peer name "${TAG}vb"
    ip link set "${TAG}va" netns "$NSA"
    ip link set "${TAG}vb" netns "$NSB"
    ip -n "$NSA" addr add 192.0.2.1/24 dev "${TAG}va"
    ip -n "$NSB" addr add 192.0.2.2/24 dev "${TAG}vb"
    for side in a b; do
        ip -n "$TAG-$side" link set lo up
        ip -n "$TAG-$side" link set "${TAG}v$side" up
        wg genkey >"$WORK/$side.key"
        chmod 600 "$WORK/$side.key"
        wg pubkey <"$WORK/$side.key" >"$WORK/$side.pub"
    done
}

underlay() { [ "$1" = a ] && echo 192.0.2.1 || echo 192.0.2.2; }

start_wggo() { # side ifname inner-addr peer-side peer-inner
    local side=$1 ifn=$2 addr=$3 peer=$4 peer_addr=$5 ns=$TAG-$1
    ip netns exec "$ns" env LOG_LEVEL=error wireguard-go -f "$ifn" >"$WORK/wggo-$side.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do [ -S "/var/run/wireguard/$ifn.sock" ] && break; sleep 0.05; done
    inns "$ns" wg set "$ifn" private-key "$WORK/$side.key" listen-port 51820 \
        peer "$(cat "$WORK/$peer.pub")" endpoint "$(underlay "$peer"):51820" \
        allowed-ips "$peer_addr/32"
    inns "$ns" ip addr add "$addr/32" dev "$ifn"
    inns "$ns" ip link set "$ifn" mtu 1420 up
    inns "$ns" ip route add "$peer_addr/32" dev "$ifn"
}

# side ifname inner-addr peer-side peer-inner [mode] [extra TOML appended to the config]
start_peerd() {
    local side=$1 ifn=$2 addr=$3 peer=$4 peer_addr=$5 mode=${6:-kernel} extra=${7:-} ns=$TAG-$1
    cat >"$WORK/$side.toml" <<TOML
[node]
name = "$side"
cluster = "bench"
private_key_file = "$WORK/$side.key"
listen_port = 51820
interface = "$ifn"
address = "$addr"
mode = "$mode"

[admin]
socket = "$WORK/$side.sock"
uapi_dir = "$WORK"

[[peer]]
name = "$peer"
public_key = "$(cat "$WORK/$peer.pub")"
endpoint = "$(underlay "$peer"):51820"
allowed_ips = ["$peer_addr/32"]
$extra
TOML
    ip netns exec "$ns" "$PEERD" run --config "$WORK/$side.toml" >"$WORK/peerd-$side.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 200); do
        "$PEERD" status --socket "$WORK/$side.sock" --json >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "peerd $side did not start:" >&2
    cat "$WORK/peerd-$side.log" >&2
    exit 1
}
