//! Self-tests of the harness, with wireguard-go on both ends (no peerd needed).
//!
//! What is proven, so that a failing overlay test points at peerd and not at the harness:
//! - a dropped `Netns` kills what ran in it and is gone from `ip netns list`;
//! - a veth pair carries IPv4 and IPv6 ping and TCP between two namespaces;
//! - two wireguard-go nodes set up by `WgGo` ping each other over inner IPv4 and IPv6 and move
//!   20 MB (IPv4) and 5 MB (IPv6) of TCP with matching checksums, and a receiver learns the
//!   initiator's endpoint;
//! - a UDP flood from `udp_flood` reaches the target port, and wireguard-go survives 10,000 of
//!   them with the tunnel still up;
//! - the restart pattern of the overlay tests (kill one end mid-transfer, start it again, watch
//!   the receiver's counter move again, compare checksums) holds with wireguard-go;
//! - the roaming pattern (change an underlay address, ping, see the new endpoint) holds too.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use netns_tests::{
    A_UNDERLAY, B_UNDERLAY, Keypair, Lab, Need, Netns, Pair, PeerSpec, TcpSink, UdpSink, WgGo,
    WgGoConfig, addr_add, addr_del, ping, require, tcp_send, tcp_send_paced, udp_flood, wait_ping,
    wait_until,
};

const A_IN: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const B_IN: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const PORT: u16 = 51820;

fn sock(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// wireguard-go config for node `me` (1 or 2) of a pair, peer at `peer_endpoint`.
fn wg_config(
    lab: &Lab,
    me: u8,
    keys: &Keypair,
    peer: &Keypair,
    peer_endpoint: Option<SocketAddr>,
) -> WgGoConfig {
    let other = 3 - me;
    let mut spec = PeerSpec::new(
        "peer",
        &peer.public,
        &[&format!("10.0.0.{other}/32"), &format!("fd00::{other}/128")],
    );
    spec.endpoint = peer_endpoint;
    WgGoConfig {
        interface: lab.ifname(&format!("w{me}")).expect("ifname"),
        private_key: keys.private.clone(),
        listen_port: PORT,
        addresses: vec![format!("10.0.0.{me}/32"), format!("fd00::{me}/128")],
        peers: vec![spec],
    }
}

/// Two wireguard-go nodes on a pair; only `a` knows the other's endpoint (so `a` initiates).
fn wg_pair(lab: &Lab, pair: &Pair) -> (WgGo, WgGo, Keypair, Keypair) {
    let (ka, kb) = (Keypair::wg().expect("key a"), Keypair::wg().expect("key b"));
    let ca = wg_config(lab, 1, &ka, &kb, Some(sock(B_UNDERLAY.into(), PORT)));
    let cb = wg_config(lab, 2, &kb, &ka, None);
    let a = WgGo::start(&pair.a, lab.dir(), &ca).expect("wireguard-go a");
    let b = WgGo::start(&pair.b, lab.dir(), &cb).expect("wireguard-go b");
    (a, b, ka, kb)
}

#[test]
fn dropped_namespace_takes_its_processes_with_it() {
    require!(Need::Root, Need::Ip);
    let lab = Lab::new("hdrp").expect("lab");
    let ns = lab.netns("x").expect("netns");
    let name = ns.name().to_owned();
    let mut child = ns
        .spawn(
            &["sleep", "600"],
            std::process::Stdio::null(),
            std::process::Stdio::null(),
        )
        .expect("spawn sleep");
    let pid = child.id() as i32;
    // `ip netns exec` enters the namespace after the fork: wait for it.
    wait_until(
        std::time::Duration::from_secs(5),
        "sleep to enter the namespace",
        || Ok(ns.pids()?.contains(&pid)),
    )
    .unwrap_or_else(|e| panic!("sleep is not in {name}: {e:#}"));
    drop(ns);
    let status = child.wait().expect("reap sleep");
    assert!(
        !status.success(),
        "sleep should have been killed, got {status}"
    );
    assert!(!Netns::exists(&name).expect("list"), "{name} still exists");
}

#[test]
fn veth_pair_carries_ipv4_and_ipv6() {
    require!(Need::Root, Need::Ip, Need::Ping);
    let lab = Lab::new("hvet").expect("lab");
    let pair = lab.pair().expect("pair");
    assert!(ping(&pair.a, B_UNDERLAY.into(), 2), "IPv4 ping over veth");
    assert!(
        ping(&pair.b, netns_tests::A_UNDERLAY6.into(), 2),
        "IPv6 ping over veth"
    );
    let sink = TcpSink::start(&pair.b, sock(B_UNDERLAY.into(), 5001)).expect("sink");
    let sent = tcp_send(&pair.a, sock(B_UNDERLAY.into(), 5001), 1 << 20, 7).expect("send");
    let got = sink.wait(Duration::from_secs(30)).expect("receive");
    assert_eq!(got, sent, "what arrived differs from what was sent");
    assert_eq!(got.bytes, 1 << 20);
}

#[test]
fn wireguard_go_pair_pings_and_transfers() {
    require!(
        Need::Root,
        Need::Ip,
        Need::Ping,
        Need::Tun,
        Need::WireguardGo,
        Need::Wg
    );
    let lab = Lab::new("hwg").expect("lab");
    let pair = lab.pair().expect("pair");
    let (a, b, ka, kb) = wg_pair(&lab, &pair);
    wait_ping(&pair.a, B_IN, Duration::from_secs(10)).expect("a -> b over wireguard-go");
    assert!(ping(&pair.b, A_IN, 2), "b -> a");
    assert!(
        ping(&pair.a, "fd00::2".parse().unwrap(), 2),
        "a -> b inner IPv6"
    );
    assert!(
        a.latest_handshake(&kb.public).expect("wg show a") > 0,
        "a has no handshake"
    );
    let learned = b.endpoint(&ka.public).expect("wg show b");
    assert_eq!(
        learned,
        Some(format!("{A_UNDERLAY}:{PORT}")),
        "b learned a's endpoint"
    );

    let sink = TcpSink::start(&pair.b, sock(B_IN, 5001)).expect("sink");
    let sent = tcp_send(&pair.a, sock(B_IN, 5001), 20 << 20, 1).expect("send v4");
    assert_eq!(
        sink.wait(Duration::from_secs(120)).expect("receive v4"),
        sent
    );

    let a6: IpAddr = "fd00::1".parse().unwrap();
    let sink = TcpSink::start(&pair.a, sock(a6, 5002)).expect("sink v6");
    let sent = tcp_send(&pair.b, sock(a6, 5002), 5 << 20, 2).expect("send v6");
    assert_eq!(
        sink.wait(Duration::from_secs(120)).expect("receive v6"),
        sent
    );
}

#[test]
fn udp_flood_arrives_and_wireguard_go_survives_it() {
    require!(
        Need::Root,
        Need::Ip,
        Need::Ping,
        Need::Tun,
        Need::WireguardGo,
        Need::Wg
    );
    let lab = Lab::new("hfld").expect("lab");
    let pair = lab.pair().expect("pair");
    let counter = UdpSink::start(&pair.b, sock(B_UNDERLAY.into(), 9999)).expect("udp sink");
    let sent = udp_flood(&pair.a, sock(B_UNDERLAY.into(), 9999), 2000, 5).expect("flood");
    wait_until(Duration::from_secs(5), "flood datagrams to arrive", || {
        Ok(counter.received() >= sent * 9 / 10)
    })
    .expect("flood arrives");
    counter.stop().expect("stop sink");

    let (mut a, mut b, _, _) = wg_pair(&lab, &pair);
    wait_ping(&pair.a, B_IN, Duration::from_secs(10)).expect("tunnel up");
    udp_flood(&pair.a, sock(B_UNDERLAY.into(), PORT), 10_000, 6).expect("flood wireguard-go");
    assert!(
        a.is_running() && b.is_running(),
        "wireguard-go died under the flood"
    );
    assert!(
        ping(&pair.b, A_IN, 3),
        "tunnel still carries pings after the flood"
    );
}

#[test]
fn restart_pattern_holds_with_wireguard_go() {
    require!(
        Need::Root,
        Need::Ip,
        Need::Ping,
        Need::Tun,
        Need::WireguardGo,
        Need::Wg
    );
    let lab = Lab::new("hrst").expect("lab");
    let pair = lab.pair().expect("pair");
    let (a, _b, ka, kb) = wg_pair(&lab, &pair);
    wait_ping(&pair.a, B_IN, Duration::from_secs(10)).expect("tunnel up");
    let sink = TcpSink::start(&pair.b, sock(B_IN, 5001)).expect("sink");
    let a_ns = pair.a.handle();
    let sender = std::thread::spawn(move || {
        tcp_send_paced(&a_ns, sock(B_IN, 5001), 24 << 20, 3, Some(6 << 20))
    });
    wait_until(Duration::from_secs(20), "2 MB to arrive", || {
        Ok(sink.progress() >= 2 << 20)
    })
    .expect("flowing");
    drop(a); // the sender's tunnel vanishes mid-transfer
    let at_kill = sink.progress();
    let ca = wg_config(&lab, 1, &ka, &kb, Some(sock(B_UNDERLAY.into(), PORT)));
    let _a = WgGo::start(&pair.a, lab.dir(), &ca).expect("wireguard-go a again");
    let ready = Instant::now();
    wait_until(Duration::from_secs(5), "bytes to flow again", || {
        Ok(sink.progress() > at_kill + (256 << 10))
    })
    .expect("transfer resumed within 5 s");
    eprintln!("resumed {:?} after restart", ready.elapsed());
    let sent = sender.join().expect("sender thread").expect("send");
    assert_eq!(sink.wait(Duration::from_secs(60)).expect("receive"), sent);
}

#[test]
fn roaming_pattern_holds_with_wireguard_go() {
    require!(
        Need::Root,
        Need::Ip,
        Need::Ping,
        Need::Tun,
        Need::WireguardGo,
        Need::Wg
    );
    let lab = Lab::new("hrom").expect("lab");
    let pair = lab.pair().expect("pair");
    let (a, b, ka, kb) = wg_pair(&lab, &pair);
    wait_ping(&pair.a, B_IN, Duration::from_secs(10)).expect("tunnel up");
    addr_del(&pair.b, &pair.b_if, &format!("{B_UNDERLAY}/24")).expect("del old address");
    addr_add(&pair.b, &pair.b_if, "192.0.2.3/24").expect("add new address");
    assert!(
        ping(&pair.b, A_UNDERLAY.into(), 2),
        "underlay works from the new address"
    );
    // wireguard-go 0.0.20220316 keeps the old source address of an endpoint it learned and fails
    // with ENETUNREACH (it only forgets it on EINVAL); setting the endpoint clears it. peerd
    // must roam without this help.
    let mut spec = PeerSpec::new("a", &ka.public, &["10.0.0.1/32", "fd00::1/128"]);
    spec.endpoint = Some(sock(A_UNDERLAY.into(), PORT));
    b.set_peer(&spec).expect("wg set endpoint on b");
    wait_ping(&pair.b, A_IN, Duration::from_secs(10)).expect("b -> a after roaming");
    let endpoint = a.endpoint(&kb.public).expect("wg show a");
    assert_eq!(
        endpoint.as_deref(),
        Some("192.0.2.3:51820"),
        "a follows b to its new address"
    );
    assert!(ping(&pair.a, B_IN, 2), "a -> b after roaming");
}
