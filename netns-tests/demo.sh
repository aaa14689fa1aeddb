#!/usr/bin/env bash
# A two-node peerd overlay on this machine, in two network namespaces joined by a veth pair.
# Builds peerd, starts both nodes, pings across the tunnel, prints `peerd status`, and keeps
# running until Ctrl-C, then removes everything it made. Needs root (TUN devices, namespaces).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ "$(id -u)" -eq 0 ] || { echo "the kernel-mode demo needs root: sudo $0" >&2; exit 1; }
cargo build --release -p peerd -j2 >&2
PEERD=$ROOT/target/release/peerd
TAG=pdemo$$
WORK=$(mktemp -d /tmp/peerd-demo.XXXXXX)

cleanup() {
    for ns in $TAG-a $TAG-b; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    done
    sleep 0.3
    for ns in $TAG-a $TAG-b; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$WORK"
    echo "demo stopped; namespaces and $WORK removed"
}
trap cleanup EXIT
trap "exit 130" INT TERM

ip netns add $TAG-a
ip netns add $TAG-b
ip link add ${TAG}a type veth peer name ${TAG}b
ip link set ${TAG}a netns $TAG-a
ip link set ${TAG}b netns $TAG-b
ip -n $TAG-a addr add 192.0.2.1/24 dev ${TAG}a
ip -n $TAG-b addr add 192.0.2.2/24 dev ${TAG}b
for s in a b; do ip -n $TAG-$s link set lo up; ip -n $TAG-$s link set ${TAG}$s up; done

for s in a b; do
    "$PEERD" keygen >"$WORK/$s.key"
    chmod 600 "$WORK/$s.key"
done
node() { # me peer my-octet peer-octet
    cat >"$WORK/$1.toml" <<TOML
[node]
name = "$1"
cluster = "demo-$1"
zone = "zone-$1"
private_key_file = "$WORK/$1.key"
interface = "${TAG}t$1"
address = "10.99.0.$3"
address6 = "fd99::$3"

[admin]
socket = "$WORK/$1.sock"
uapi_dir = "$WORK/wg"

[[peer]]
name = "$2"
cluster = "demo-$2"
zone = "zone-$2"
public_key = "$("$PEERD" pubkey <"$WORK/$2.key")"
endpoint = "192.0.2.$4:51820"
allowed_ips = ["10.99.0.$4/32", "fd99::$4/128"]
persistent_keepalive = 25
TOML
    ip netns exec $TAG-$1 "$PEERD" run --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
}
node a b 1 2
node b a 2 1
for s in a b; do
    for _ in $(seq 100); do "$PEERD" status --socket "$WORK/$s.sock" --json >/dev/null 2>&1 && break; sleep 0.1; done
done

echo "== ping a -> b through the tunnel (IPv4 and IPv6)"
ip netns exec $TAG-a ping -c 3 -i 0.2 10.99.0.2
ip netns exec $TAG-a ping -6 -c 3 -i 0.2 fd99::2
echo
echo "== peerd status on node a"
"$PEERD" status --socket "$WORK/a.sock"
cat <<TXT

The overlay is up. In another terminal (as root):
  ip netns exec $TAG-a ping 10.99.0.2
  $PEERD status --socket $WORK/a.sock
  $PEERD status --socket $WORK/b.sock --json
Logs: $WORK/a.log $WORK/b.log
Press Ctrl-C to stop.
TXT
while sleep 3600; do :; done
