//! peerd ↔ peerd: inner IPv4 and IPv6 ping both ways and 100 MB TCP transfers whose checksums
//! match; roaming of a peer to a new underlay address in the middle of a transfer.

use std::time::Duration;

use netns_tests::{
    B_UNDERLAY, Lab, Need, TcpSink, addr_add, addr_del, ping, require, tcp_send_paced, wait_ping,
    wait_until,
};

use super::*;

const HUNDRED_MB: u64 = 100 << 20;

#[test]
fn two_peerd_nodes_carry_inner_ipv4() {
    require!(Need::Root, Need::Tun, Need::Ip, Need::Ping, Need::Peerd);
    let lab = Lab::new("pp4").expect("lab");
    let pair = lab.pair().expect("underlay");
    let (a, b) = two_peerd(&lab, &pair);
    wait_ping(&pair.a, B_IN.into(), UP)
        .unwrap_or_else(|e| panic!("a -> b: {e:#}\n{}\n{}", a.logs(), b.logs()));
    assert!(ping(&pair.b, A_IN.into(), 3), "b -> a ping");

    transfer(&pair.a, &pair.b, sa(B_IN, 5001), HUNDRED_MB, 11);

    let peer = a.peer_status("b").expect("a's status of b");
    assert_eq!(peer["state"], "static", "{peer}");
    assert!(
        peer["last_handshake_unix"].as_u64() > Some(0),
        "no handshake in {peer}"
    );
    assert!(
        peer["tx_bytes"].as_u64() >= Some(HUNDRED_MB),
        "a sent less than 100 MB: {peer}"
    );
    let peer = b.peer_status("a").expect("b's status of a");
    assert!(
        peer["rx_bytes"].as_u64() >= Some(HUNDRED_MB),
        "b received less than 100 MB: {peer}"
    );
}

#[test]
fn two_peerd_nodes_carry_inner_ipv6() {
    require!(Need::Root, Need::Tun, Need::Ip, Need::Ping, Need::Peerd);
    let lab = Lab::new("pp6").expect("lab");
    let pair = lab.pair().expect("underlay");
    let (a, b) = two_peerd(&lab, &pair);
    wait_ping(&pair.b, A_IN6.into(), UP)
        .unwrap_or_else(|e| panic!("b -> a over IPv6: {e:#}\n{}\n{}", a.logs(), b.logs()));
    assert!(ping(&pair.a, B_IN6.into(), 3), "a -> b ping over IPv6");

    transfer(&pair.b, &pair.a, sa(A_IN6, 5001), HUNDRED_MB, 12);
}

/// B's underlay address changes (old one deleted, new one added in the same subnet) while B
/// streams to A: A must follow B to its new endpoint on authenticated packets, and the stream
/// must complete intact.
#[test]
fn roaming_peer_is_followed_to_its_new_address() {
    require!(Need::Root, Need::Tun, Need::Ip, Need::Ping, Need::Peerd);
    let lab = Lab::new("roam").expect("lab");
    let pair = lab.pair().expect("underlay");
    let (a, b) = two_peerd(&lab, &pair);
    wait_ping(&pair.b, A_IN.into(), UP)
        .unwrap_or_else(|e| panic!("b -> a: {e:#}\n{}\n{}", a.logs(), b.logs()));
    let old = format!("{B_UNDERLAY}:{PORT}");
    a.wait_status(UP, "a to show b at its first address", |s| {
        endpoint_of(s, "b") == Some(old.as_str())
    })
    .expect("b's first endpoint");

    let sink = TcpSink::start(&pair.a, sa(A_IN, 5001)).expect("sink");
    let b_ns = pair.b.handle();
    let sender = std::thread::spawn(move || {
        tcp_send_paced(&b_ns, sa(A_IN, 5001), 16 << 20, 13, Some(4 << 20))
    });
    wait_until(Duration::from_secs(20), "2 MB before roaming", || {
        Ok(sink.progress() >= 2 << 20)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", a.logs(), b.logs()));

    addr_del(&pair.b, &pair.b_if, &format!("{B_UNDERLAY}/24")).expect("remove b's old address");
    addr_add(&pair.b, &pair.b_if, "192.0.2.3/24").expect("add b's new address");
    let at_roam = sink.progress();

    wait_ping(&pair.b, A_IN.into(), UP)
        .unwrap_or_else(|e| panic!("b -> a after roaming: {e:#}\n{}\n{}", a.logs(), b.logs()));
    let new = format!("192.0.2.3:{PORT}");
    a.wait_status(UP, "a to show b's new endpoint", |s| {
        endpoint_of(s, "b") == Some(new.as_str())
    })
    .expect("a follows b");
    assert!(ping(&pair.a, B_IN.into(), 3), "a -> b at b's new address");
    wait_until(
        Duration::from_secs(5),
        "the stream to move after roaming",
        || Ok(sink.progress() > at_roam),
    )
    .expect("stream resumes");

    let sent = sender
        .join()
        .expect("sender thread")
        .expect("send across the roam");
    assert_eq!(
        sink.wait(TRANSFER_TIMEOUT).expect("receive"),
        sent,
        "stream damaged by roaming"
    );
}
