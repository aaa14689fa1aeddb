//! peerd ↔ wireguard-go: a handshake initiated by either side, data both ways, `wg show` on a
//! peerd interface, and key tools that agree with `wg`.
//!
//! Who initiates is forced, not hoped for: the side that must not speak first has no endpoint for
//! the other and no keepalive runs, so it cannot send anything until the other's initiation
//! tells it where to answer. That it then knows the initiator's endpoint proves the initiation
//! came from there.

use netns_tests::{
    A_UNDERLAY, B_UNDERLAY, Keypair, Lab, Need, peerd_bin, peerd_pubkey, ping, require, wait_ping,
    wg_pubkey,
};

use super::*;

const FEW_MB: u64 = 4 << 20;

#[test]
fn peerd_initiates_to_wireguard_go() {
    require!(
        Need::Root,
        Need::Tun,
        Need::Ip,
        Need::Ping,
        Need::WireguardGo,
        Need::Wg,
        Need::Peerd
    );
    let lab = Lab::new("ipi").expect("lab");
    let pair = lab.pair().expect("underlay");
    let m = mixed(
        &lab,
        &pair,
        true,
        false,
        &str_refs(&inner(true)),
        None,
        |_| {},
    );
    assert_eq!(
        m.wg.endpoint(&m.peerd_keys.public).expect("wg show"),
        None,
        "wireguard-go must not know peerd yet"
    );

    wait_ping(&pair.a, B_IN.into(), UP)
        .unwrap_or_else(|e| panic!("peerd -> wireguard-go: {e:#}\n{}", m.peerd.logs()));
    let learned =
        m.wg.endpoint(&m.peerd_keys.public)
            .expect("wg show endpoints");
    assert_eq!(
        learned,
        Some(format!("{A_UNDERLAY}:{PORT}")),
        "wireguard-go learned peerd's endpoint from its initiation"
    );
    assert!(
        m.wg.latest_handshake(&m.peerd_keys.public)
            .expect("wg show")
            > 0,
        "wireguard-go saw no handshake"
    );
    both_ways(&pair, &m);
}

#[test]
fn wireguard_go_initiates_to_peerd() {
    require!(
        Need::Root,
        Need::Tun,
        Need::Ip,
        Need::Ping,
        Need::WireguardGo,
        Need::Wg,
        Need::Peerd
    );
    let lab = Lab::new("iwi").expect("lab");
    let pair = lab.pair().expect("underlay");
    let m = mixed(
        &lab,
        &pair,
        false,
        true,
        &str_refs(&inner(true)),
        None,
        |_| {},
    );
    let before = m.peerd.status().expect("status");
    assert_eq!(
        endpoint_of(&before, "w"),
        None,
        "peerd must not know wireguard-go yet: {before}"
    );

    wait_ping(&pair.b, A_IN.into(), UP)
        .unwrap_or_else(|e| panic!("wireguard-go -> peerd: {e:#}\n{}", m.peerd.logs()));
    let wg_at = format!("{B_UNDERLAY}:{PORT}");
    let status = m
        .peerd
        .wait_status(UP, "peerd to learn wireguard-go's endpoint", |s| {
            endpoint_of(s, "w") == Some(wg_at.as_str())
        })
        .expect("peerd learned the initiator's endpoint");
    let peer = status["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "w"))
        .cloned();
    assert!(
        peer.as_ref()
            .and_then(|p| p["last_handshake_unix"].as_u64())
            > Some(0),
        "no handshake: {status}"
    );
    both_ways(&pair, &m);
}

/// Pings both ways, then a TCP transfer in each direction with matching checksums.
fn both_ways(pair: &netns_tests::Pair, m: &Mixed) {
    assert!(
        ping(&pair.a, B_IN.into(), 3),
        "peerd -> wireguard-go ping\n{}",
        m.peerd.logs()
    );
    assert!(
        ping(&pair.b, A_IN.into(), 3),
        "wireguard-go -> peerd ping\n{}",
        m.peerd.logs()
    );
    assert!(
        ping(&pair.b, A_IN6.into(), 3),
        "wireguard-go -> peerd ping over IPv6\n{}",
        m.peerd.logs()
    );
    transfer(&pair.a, &pair.b, sa(B_IN, 5001), FEW_MB, 21);
    transfer(&pair.b, &pair.a, sa(A_IN, 5002), FEW_MB, 22);
}

/// `wg show IFACE` talks to peerd through `/var/run/wireguard/IFACE.sock` and shows the
/// wireguard-go peer with its endpoint, allowed IPs, latest handshake and transfer.
#[test]
fn wg_show_reads_a_peerd_interface() {
    require!(
        Need::Root,
        Need::Tun,
        Need::Ip,
        Need::Ping,
        Need::WireguardGo,
        Need::Wg,
        Need::Peerd
    );
    let lab = Lab::new("iwgs").expect("lab");
    let pair = lab.pair().expect("underlay");
    let m = mixed(
        &lab,
        &pair,
        true,
        true,
        &str_refs(&inner(true)),
        None,
        |cfg| cfg.default_uapi_dir = true,
    );
    wait_ping(&pair.a, B_IN.into(), UP)
        .unwrap_or_else(|e| panic!("peerd -> wireguard-go: {e:#}\n{}", m.peerd.logs()));

    let iface = m.peerd.config().interface.clone();
    let show = pair
        .a
        .run(&["wg", "show", &iface])
        .expect("wg show on peerd");
    for want in [
        format!("interface: {iface}"),
        format!("public key: {}", m.peerd_keys.public),
        format!("listening port: {PORT}"),
        format!("peer: {}", m.wg_keys.public),
        format!("endpoint: {B_UNDERLAY}:{PORT}"),
        "allowed ips: 10.0.0.2/32, fd00::2/128".to_owned(),
        "latest handshake: ".to_owned(),
        "transfer: ".to_owned(),
    ] {
        assert!(
            show.contains(&want),
            "`wg show {iface}` lacks {want:?}:\n{show}"
        );
    }
    let dump = pair
        .a
        .run(&["wg", "show", &iface, "latest-handshakes"])
        .expect("wg show latest-handshakes");
    let when: u64 = dump
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(when > 0, "no handshake time in {dump:?}");
}

#[test]
fn peerd_keys_agree_with_wg() {
    require!(Need::Wg, Need::Peerd);
    let bin = peerd_bin().expect("peerd binary");
    let from_wg = Keypair::wg().expect("wg genkey");
    assert_eq!(
        peerd_pubkey(&bin, &from_wg.private).expect("peerd pubkey"),
        from_wg.public,
        "peerd pubkey of a wg key"
    );
    let from_peerd = Keypair::peerd(&bin).expect("peerd keygen");
    assert_eq!(
        wg_pubkey(&from_peerd.private).expect("wg pubkey"),
        from_peerd.public,
        "wg pubkey of a peerd key"
    );
}
