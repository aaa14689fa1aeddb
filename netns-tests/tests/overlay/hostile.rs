//! Hostile input: a peer that sends from addresses it was not given (the crypto-RP filter), and
//! a flood of garbage datagrams at the WireGuard port.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use netns_tests::{
    End, Lab, Need, UdpSink, connect, ping, ping_from, require, udp_flood, udp_send, wait_ping,
    wait_until,
};

use super::*;

/// An address wireguard-go holds on its interface but peerd does not allow for it.
const SPOOFED: Ipv4Addr = Ipv4Addr::new(10, 9, 9, 9);

/// wireguard-go believes peerd accepts all of 10.0.0.0/8 from it and sends from 10.9.9.9; peerd
/// allows it only 10.0.0.2/32. The spoofed packets decrypt fine but must not reach peerd's
/// namespace, and must be counted as the peer's `source_not_allowed` drops. The kernel's own
/// reverse-path filter is off in peerd's namespace, so only peerd can be what stops them.
#[test]
fn crypto_rp_filter_drops_sources_outside_allowed_ips() {
    require!(
        Need::Root,
        Need::Tun,
        Need::Ip,
        Need::Ping,
        Need::WireguardGo,
        Need::Wg,
        Need::Peerd
    );
    let lab = Lab::new("hrp").expect("lab");
    let pair = lab.pair().expect("underlay");
    for key in [
        "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter",
    ] {
        pair.a.sysctl(key, "0").expect("rp_filter off");
    }
    let spoofed_cidr = format!("{SPOOFED}/32");
    let m = mixed(
        &lab,
        &pair,
        true,
        true,
        &["10.0.0.0/8", "fd00::/64"],
        Some(&spoofed_cidr),
        |_| {},
    );
    wait_ping(&pair.b, A_IN.into(), UP)
        .unwrap_or_else(|e| panic!("genuine ping: {e:#}\n{}", m.peerd.logs()));

    let sink = UdpSink::start(&pair.a, sa(A_IN, 7000)).expect("udp sink in peerd's namespace");
    let before = m
        .peerd
        .peer_drops("w")
        .expect("drops")
        .get("source_not_allowed")
        .copied()
        .unwrap_or(0);
    assert!(
        !ping_from(&pair.b, SPOOFED.into(), A_IN.into(), 3),
        "a ping from {SPOOFED} got an answer"
    );
    udp_send(&pair.b, sa(SPOOFED, 0), sa(A_IN, 7000), b"spoofed", 20)
        .expect("send spoofed datagrams");
    // 3 echo requests + 20 datagrams, each decrypted and then dropped by peerd.
    m.peerd
        .wait_status(Duration::from_secs(5), "23 source_not_allowed drops", |s| {
            source_not_allowed(s) >= before + 23
        })
        .expect("spoofed packets counted");
    assert_eq!(
        sink.received(),
        0,
        "spoofed datagrams reached peerd's namespace"
    );

    udp_send(&pair.b, sa(B_IN, 0), sa(A_IN, 7000), b"genuine", 5).expect("send genuine datagrams");
    wait_until(Duration::from_secs(5), "genuine datagrams", || {
        Ok(sink.received() >= 5)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", m.peerd.logs()));
    assert!(ping(&pair.b, A_IN.into(), 3), "a genuine ping still works");
    assert_eq!(
        sink.stop().expect("stop sink"),
        5,
        "only the 5 genuine datagrams arrived"
    );
}

fn source_not_allowed(status: &serde_json::Value) -> u64 {
    let peers = status["peers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let peer = peers.iter().find(|p| p["name"] == "w");
    peer.and_then(|p| p["drops"]["source_not_allowed"].as_u64())
        .unwrap_or(0)
}

/// 10,000 random datagrams (random lengths, many shaped like WireGuard messages) from a third
/// namespace at peerd's port: peerd keeps running, counts them as node drops, and its tunnel
/// still carries a ping and a TCP transfer.
#[test]
fn garbage_flood_is_counted_and_survived() {
    require!(Need::Root, Need::Tun, Need::Ip, Need::Ping, Need::Peerd);
    let lab = Lab::new("hfl").expect("lab");
    let pair = lab.pair().expect("underlay");
    let x = lab.netns("x").expect("flooder namespace");
    let (a_x, x_a) = (
        lab.ifname("ax").expect("ifname"),
        lab.ifname("xa").expect("ifname"),
    );
    connect(
        End {
            ns: &pair.a,
            ifname: &a_x,
            addrs: &["198.51.100.1/24"],
        },
        End {
            ns: &x,
            ifname: &x_a,
            addrs: &["198.51.100.2/24"],
        },
    )
    .expect("flooder link");
    let (mut a, b) = two_peerd(&lab, &pair);
    wait_ping(&pair.a, B_IN.into(), UP)
        .unwrap_or_else(|e| panic!("tunnel up: {e:#}\n{}", a.logs()));
    let before = total(&a.node_drops().expect("node drops"));

    let target = sa(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), PORT);
    let sent = udp_flood(&x, target, 10_000, 0x5eed).expect("flood");
    assert!(sent >= 9_000, "only {sent} datagrams left the flooder");
    let status = a
        .wait_status(Duration::from_secs(20), "8,000 more node drops", |s| {
            let drops = serde_json::from_value(s["node"]["drops"].clone()).unwrap_or_default();
            total(&drops) >= before + 8_000
        })
        .expect("garbage counted as node drops");
    eprintln!(
        "node drops after {sent} garbage datagrams: {}",
        status["node"]["drops"]
    );
    assert!(a.is_running(), "peerd died under the flood\n{}", a.logs());

    assert!(
        ping(&pair.a, B_IN.into(), 3),
        "a -> b after the flood\n{}",
        a.logs()
    );
    assert!(
        ping(&pair.b, A_IN.into(), 3),
        "b -> a after the flood\n{}",
        b.logs()
    );
    transfer(&pair.a, &pair.b, sa(B_IN, 5001), 10 << 20, 31);
}
