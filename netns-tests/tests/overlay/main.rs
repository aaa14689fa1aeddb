//! End-to-end tests of the peerd overlay on real network namespaces, against the real `peerd`
//! binary and real wireguard-go + `wg`. Every test asserts what crossed the network.
//!
//! What is proven (one module per theme):
//! - `peerd_pair`: two peerd nodes ping each other both ways and carry 100 MB of TCP with a
//!   matching checksum, over inner IPv4 and over inner IPv6; a peer whose underlay address
//!   changes mid-transfer is followed to its new endpoint (status shows it) and the transfer
//!   completes intact.
//! - `interop`: peerd and wireguard-go complete a handshake whichever side speaks first (the
//!   other side has no endpoint configured and no keepalive runs, so it cannot have initiated),
//!   then carry pings and TCP both ways; `wg show` reads a peerd interface and shows the peer's
//!   latest handshake; `peerd keygen`/`pubkey` agree with `wg genkey`/`pubkey`.
//! - `hostile`: packets decrypted from a peer but sourced outside its allowed IPs never reach
//!   the node (the crypto-RP filter) and are counted as `source_not_allowed`; 10,000 garbage
//!   datagrams are counted as node drops, and peerd survives with its tunnel working.
//! - `restart`: SIGKILL of peerd in the middle of a TCP stream to wireguard-go, then a restart
//!   with the same config: bytes flow again within 5 s and the whole stream arrives intact.
//!
//! Build the daemon first (`cargo build -p peerd`) or set `PEERD_BIN`; without it (or without
//! root, /dev/net/tun, `ip`, wireguard-go, `wg`) each test says SKIPPED, or fails under `CI=true`.

mod hostile;
mod interop;
mod peerd_pair;
mod restart;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use netns_tests::{
    A_UNDERLAY, B_UNDERLAY, Keypair, Lab, Netns, Pair, PeerSpec, Peerd, PeerdConfig, TcpSink,
    Transfer, WgGo, WgGoConfig, peerd_bin, tcp_send,
};

/// WireGuard port of every node.
const PORT: u16 = 51820;
/// Overlay addresses of the node in namespace `a` and of the one in `b`.
const A_IN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B_IN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const A_IN6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const B_IN6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// Long enough for 100 MB through a debug build on a 2-core machine.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);
/// For readiness: the first ping also pays for a handshake.
const UP: Duration = Duration::from_secs(10);

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The overlay /32 and /128 of node `a` (true) or `b` (false).
fn inner(a: bool) -> Vec<String> {
    let (v4, v6) = if a { (A_IN, A_IN6) } else { (B_IN, B_IN6) };
    vec![format!("{v4}/32"), format!("{v6}/128")]
}

fn str_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Keys from `peerd keygen`/`peerd pubkey`.
fn peerd_keys() -> Keypair {
    Keypair::peerd(&peerd_bin().expect("peerd binary")).expect("peerd keygen")
}

/// Config of peerd node `a` (in namespace a) or `b`, with one peer whose endpoint is given only
/// when `peer_endpoint` is set.
fn peerd_config(
    lab: &Lab,
    a: bool,
    keys: &Keypair,
    peer: &Keypair,
    peer_name: &str,
    peer_endpoint: bool,
) -> PeerdConfig {
    let (name, addr, addr6, peer_ul) = if a {
        ("a", A_IN, A_IN6, B_UNDERLAY)
    } else {
        ("b", B_IN, B_IN6, A_UNDERLAY)
    };
    let iface = lab.ifname(if a { "pa" } else { "pb" }).expect("ifname");
    let mut cfg = PeerdConfig::new(name, &iface, &keys.private, addr);
    cfg.address6 = Some(addr6);
    let mut spec = PeerSpec::new(peer_name, &peer.public, &str_refs(&inner(!a)));
    if peer_endpoint {
        spec.endpoint = Some(sa(peer_ul, PORT));
    }
    cfg.peers.push(spec);
    cfg
}

/// peerd in both namespaces of `pair`, each knowing the other's endpoint.
fn two_peerd(lab: &Lab, pair: &Pair) -> (Peerd, Peerd) {
    let (ka, kb) = (peerd_keys(), peerd_keys());
    let a = Peerd::start(
        &pair.a,
        lab.dir(),
        &peerd_config(lab, true, &ka, &kb, "b", true),
    )
    .expect("peerd a");
    let b = Peerd::start(
        &pair.b,
        lab.dir(),
        &peerd_config(lab, false, &kb, &ka, "a", true),
    )
    .expect("peerd b");
    (a, b)
}

/// peerd (namespace a, its peer named `w`) and wireguard-go (namespace b).
struct Mixed {
    peerd: Peerd,
    wg: WgGo,
    peerd_keys: Keypair,
    wg_keys: Keypair,
}

/// Builds a [`Mixed`] pair: `peerd_knows`/`wg_knows` say whether each side is configured with
/// the other's endpoint; `wg_allows` are wireguard-go's allowed IPs for peerd and
/// `wg_extra_addr` an extra address on its interface. `tweak` edits peerd's config.
fn mixed(
    lab: &Lab,
    pair: &Pair,
    peerd_knows: bool,
    wg_knows: bool,
    wg_allows: &[&str],
    wg_extra_addr: Option<&str>,
    tweak: impl FnOnce(&mut PeerdConfig),
) -> Mixed {
    let (kp, kw) = (peerd_keys(), Keypair::wg().expect("wg genkey"));
    let mut cfg = peerd_config(lab, true, &kp, &kw, "w", peerd_knows);
    tweak(&mut cfg);
    let peerd = Peerd::start(&pair.a, lab.dir(), &cfg).expect("peerd");
    let mut spec = PeerSpec::new("p", &kp.public, wg_allows);
    spec.endpoint = wg_knows.then(|| sa(A_UNDERLAY, PORT));
    let mut addresses = inner(false);
    addresses.extend(wg_extra_addr.map(str::to_owned));
    let wg_cfg = WgGoConfig {
        interface: lab.ifname("wg").expect("ifname"),
        private_key: kw.private.clone(),
        listen_port: PORT,
        addresses,
        peers: vec![spec],
    };
    let wg = WgGo::start(&pair.b, lab.dir(), &wg_cfg).expect("wireguard-go");
    Mixed {
        peerd,
        wg,
        peerd_keys: kp,
        wg_keys: kw,
    }
}

/// Sends `bytes` from `from` to a sink at `dst` in `to` and asserts that exactly what was sent
/// arrived (length and checksum).
fn transfer(from: &Netns, to: &Netns, dst: SocketAddr, bytes: u64, seed: u64) -> Transfer {
    let sink = TcpSink::start(to, dst).expect("tcp sink");
    let sent = tcp_send(from, dst, bytes, seed)
        .unwrap_or_else(|e| panic!("send {bytes} bytes to {dst}: {e:#}"));
    let got = sink
        .wait(TRANSFER_TIMEOUT)
        .unwrap_or_else(|e| panic!("receive at {dst}: {e:#}"));
    assert_eq!(
        got, sent,
        "what arrived at {dst} differs from what was sent"
    );
    assert_eq!(got.bytes, bytes);
    got
}

/// The sum of a drop-counter map.
fn total(drops: &std::collections::BTreeMap<String, u64>) -> u64 {
    drops.values().sum()
}

/// The endpoint `status` shows for peer `name`.
fn endpoint_of<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    let peers = status["peers"].as_array()?;
    peers.iter().find(|p| p["name"] == name)?["endpoint"].as_str()
}
