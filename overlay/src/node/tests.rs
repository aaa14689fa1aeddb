//! The core driven in memory: two nodes exchange datagrams through a test "wire".

use std::net::SocketAddr;
use std::time::Instant;

use proptest::prelude::*;

use super::*;
use crate::packet::udp_packet;

const A_ADDR: &str = "192.0.2.1:51820";
const B_ADDR: &str = "192.0.2.2:51820";

struct Pair {
    a: Node,
    b: Node,
    a_id: PeerId, // B as seen by A
    b_id: PeerId, // A as seen by B
    now: Instant,
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A (10.0.1.0/24, fd01::/64) and B (10.0.2.0/24, fd02::/64) know each other's endpoints.
fn pair(keepalive_on_a: Option<u16>) -> Pair {
    let now = Instant::now();
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (pa, pb) = (ka.public_key(), kb.public_key());
    let mut a = Node::new(ka, now);
    let mut b = Node::new(kb, now);
    let mut to_b = PeerConfig::new(pb);
    to_b.endpoint = Some(sock(B_ADDR));
    to_b.allowed_ips = vec!["10.0.2.0/24".parse().unwrap(), "fd02::/64".parse().unwrap()];
    to_b.persistent_keepalive = keepalive_on_a;
    let mut to_a = PeerConfig::new(pa);
    to_a.endpoint = Some(sock(A_ADDR));
    to_a.allowed_ips = vec!["10.0.1.0/24".parse().unwrap(), "fd01::/64".parse().unwrap()];
    let a_id = a.upsert_peer(to_b, now).unwrap();
    let b_id = b.upsert_peer(to_a, now).unwrap();
    Pair {
        a,
        b,
        a_id,
        b_id,
        now,
    }
}

fn v4(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    udp_packet(
        sock(&format!("{src}:1111")),
        sock(&format!("{dst}:2222")),
        payload,
    )
    .unwrap()
}

/// Everything a node wants sent after some input: timer packets and drained queues.
fn flush(node: &mut Node) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = vec![0u8; 2048];
    let mut sent = Vec::new();
    while let Some(t) = node.poll_transmit(&mut out) {
        sent.push((t.to, t.packet.to_vec()));
    }
    sent
}

/// Delivers `datagram` from `from` to `node`; returns (inner packets, replies).
fn deliver(
    node: &mut Node,
    from: &str,
    datagram: &[u8],
    now: Instant,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut out = vec![0u8; 2048];
    let mut inner = Vec::new();
    let mut replies = Vec::new();
    match node.decapsulate(sock(from), datagram, &mut out, now) {
        Inbound::Tunnel { packet, .. } => inner.push(packet.to_vec()),
        Inbound::Network { packet, .. } => replies.push(packet.to_vec()),
        Inbound::Done | Inbound::Dropped(_) => {}
    }
    replies.extend(flush(node).into_iter().map(|(_, p)| p));
    (inner, replies)
}

fn send(node: &mut Node, packet: &[u8], now: Instant) -> Option<Vec<u8>> {
    let mut out = vec![0u8; 2048];
    match node.encapsulate(packet, &mut out, now) {
        Outbound::Send { packet, .. } => Some(packet.to_vec()),
        _ => None,
    }
}

/// Ping-pongs datagrams between A and B until both are quiet; returns what reached each host.
fn settle(
    p: &mut Pair,
    mut to_b: Vec<Vec<u8>>,
    mut to_a: Vec<Vec<u8>>,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut at_a, mut at_b) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        if to_a.is_empty() && to_b.is_empty() {
            break;
        }
        let mut next_a = Vec::new();
        for d in to_b.drain(..) {
            let (inner, replies) = deliver(&mut p.b, A_ADDR, &d, p.now);
            at_b.extend(inner);
            next_a.extend(replies);
        }
        let mut next_b = Vec::new();
        for d in to_a.drain(..) {
            let (inner, replies) = deliver(&mut p.a, B_ADDR, &d, p.now);
            at_a.extend(inner);
            next_b.extend(replies);
        }
        to_a = next_a;
        to_b = next_b;
    }
    (at_a, at_b)
}

#[test]
fn handshake_on_demand_delivers_the_queued_packet() {
    let mut p = pair(None);
    let packet = v4("10.0.1.5", "10.0.2.7", b"first");
    let init = send(&mut p.a, &packet, p.now).expect("a handshake initiation");
    assert_eq!(init.len(), 148);
    let (_, at_b) = settle(&mut p, vec![init], vec![]);
    assert_eq!(
        at_b,
        vec![packet.clone()],
        "the queued packet arrives after the handshake"
    );
    assert!(p.a.peer_status(p.a_id).unwrap().last_handshake.is_some());
    assert!(p.b.peer_status(p.b_id).unwrap().last_handshake.is_some());

    // Both directions now flow without another handshake, IPv4 and IPv6.
    let back = udp_packet(sock("[fd02::9]:53"), sock("[fd01::1]:5353"), b"reply").unwrap();
    let wire = send(&mut p.b, &back, p.now).unwrap();
    assert_eq!(wire[0], 4, "a data message");
    let (at_a, _) = settle(&mut p, vec![], vec![wire]);
    assert_eq!(at_a, vec![back]);
    let status = p.a.peer_status(p.a_id).unwrap();
    assert!(status.rx_bytes > 0 && status.tx_bytes > 0);
}

#[test]
fn outbound_without_route_or_endpoint_is_counted() {
    let mut p = pair(None);
    let mut out = [0u8; 256];
    let r =
        p.a.encapsulate(&v4("10.0.1.5", "10.9.9.9", b"x"), &mut out, p.now);
    assert!(matches!(r, Outbound::Dropped(DropReason::NoRoute)));
    let r = p.a.encapsulate(&[0x20; 40], &mut out, p.now);
    assert!(matches!(r, Outbound::Dropped(DropReason::InvalidOutbound)));
    assert_eq!(p.a.drops().get(DropReason::NoRoute), 1);

    let mut silent = PeerConfig::new(PrivateKey::generate().public_key());
    silent.allowed_ips = vec!["10.0.3.0/24".parse().unwrap()];
    let id = p.a.upsert_peer(silent, p.now).unwrap();
    let r =
        p.a.encapsulate(&v4("10.0.1.5", "10.0.3.1", b"x"), &mut out, p.now);
    assert!(matches!(r, Outbound::Dropped(DropReason::NoEndpoint)));
    assert_eq!(
        p.a.peer_status(id)
            .unwrap()
            .drops
            .get(DropReason::NoEndpoint),
        1
    );
}

#[test]
fn inner_source_outside_allowed_ips_is_dropped_and_counted() {
    let mut p = pair(None);
    let init = send(&mut p.a, &v4("10.0.1.5", "10.0.2.7", b"ok"), p.now).unwrap();
    settle(&mut p, vec![init], vec![]);
    // A forges a source from B's own range and from nowhere.
    for src in ["10.0.2.99", "10.7.7.7"] {
        let wire = send(&mut p.a, &v4(src, "10.0.2.7", b"spoof"), p.now).unwrap();
        let (inner, _) = deliver(&mut p.b, A_ADDR, &wire, p.now);
        assert!(inner.is_empty(), "{src} must not pass");
    }
    assert_eq!(
        p.b.peer_status(p.b_id)
            .unwrap()
            .drops
            .get(DropReason::SourceNotAllowed),
        2
    );
}

#[test]
fn replayed_data_is_dropped() {
    let mut p = pair(None);
    let init = send(&mut p.a, &v4("10.0.1.5", "10.0.2.7", b"ok"), p.now).unwrap();
    settle(&mut p, vec![init], vec![]);
    let wire = send(&mut p.a, &v4("10.0.1.5", "10.0.2.7", b"once"), p.now).unwrap();
    assert_eq!(deliver(&mut p.b, A_ADDR, &wire, p.now).0.len(), 1);
    assert!(deliver(&mut p.b, A_ADDR, &wire, p.now).0.is_empty());
    assert_eq!(
        p.b.peer_status(p.b_id)
            .unwrap()
            .drops
            .get(DropReason::Replay),
        1
    );
}

#[test]
fn roaming_follows_authenticated_packets_only() {
    let mut p = pair(None);
    let init = send(&mut p.a, &v4("10.0.1.5", "10.0.2.7", b"ok"), p.now).unwrap();
    settle(&mut p, vec![init], vec![]);
    let wire = send(&mut p.a, &v4("10.0.1.5", "10.0.2.7", b"moved"), p.now).unwrap();
    let moved = "198.51.100.7:40000";
    assert_eq!(deliver(&mut p.b, moved, &wire, p.now).0.len(), 1);
    assert_eq!(p.b.peer_status(p.b_id).unwrap().endpoint, Some(sock(moved)));

    // A forged data packet (random ciphertext under A's session index) from elsewhere moves
    // nothing.
    let mut forged = wire.clone();
    forged[16..].iter_mut().for_each(|b| *b ^= 0x5a);
    forged[8] ^= 1; // a new counter, so it is not just a replay
    deliver(&mut p.b, "203.0.113.66:1", &forged, p.now);
    assert_eq!(p.b.peer_status(p.b_id).unwrap().endpoint, Some(sock(moved)));
    assert_eq!(
        p.b.peer_status(p.b_id)
            .unwrap()
            .drops
            .get(DropReason::Decrypt),
        1
    );
}

#[test]
fn handshakes_from_strangers_and_garbage_are_counted() {
    let mut p = pair(None);
    // A stranger knows B's public key but is not B's peer.
    let mut stranger = Node::new(PrivateKey::generate(), p.now);
    let mut to_b = PeerConfig::new(p.b.public_key());
    to_b.endpoint = Some(sock(B_ADDR));
    to_b.allowed_ips = vec!["0.0.0.0/0".parse().unwrap()];
    stranger.upsert_peer(to_b, p.now).unwrap();
    let init = send(&mut stranger, &v4("10.0.1.5", "10.0.2.7", b"hi"), p.now).unwrap();
    let (_, replies) = deliver(&mut p.b, "203.0.113.5:9", &init, p.now);
    assert!(replies.is_empty());
    assert_eq!(p.b.drops().get(DropReason::UnknownPeer), 1);

    // An initiation for somebody else fails its MAC.
    let mut other = init.clone();
    other[120] ^= 0xff;
    deliver(&mut p.b, "203.0.113.5:9", &other, p.now);
    assert_eq!(p.b.drops().get(DropReason::InvalidMac), 1);

    // Data for an index nobody owns.
    let mut data = vec![4u8, 0, 0, 0];
    data.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    data.extend_from_slice(&[0u8; 40]);
    deliver(&mut p.b, "203.0.113.5:9", &data, p.now);
    assert_eq!(p.b.drops().get(DropReason::UnknownIndex), 1);

    deliver(&mut p.b, "203.0.113.5:9", b"GET / HTTP/1.1\r\n\r\n", p.now);
    assert_eq!(p.b.drops().get(DropReason::Malformed), 1);
}

/// Sends 400 fresh initiations from A's key to B; returns the index of the first one answered
/// with a cookie.
fn flood(p: &mut Pair) -> Option<usize> {
    let mut first_cookie = None;
    for i in 0..400 {
        let init = fresh_initiation(p);
        let mut out = [0u8; 256];
        if let Inbound::Network { packet, .. } =
            p.b.decapsulate(sock(A_ADDR), &init, &mut out, p.now)
            && packet[0] == COOKIE_REPLY
        {
            first_cookie.get_or_insert(i);
        }
    }
    first_cookie
}

/// A new handshake initiation from A's key (as a flood would forge or replay them).
fn fresh_initiation(p: &Pair) -> Vec<u8> {
    let mut a = Node::new(p.a.private_key().clone(), p.now);
    let mut to_b = PeerConfig::new(p.b.public_key());
    to_b.endpoint = Some(sock(B_ADDR));
    to_b.allowed_ips = vec!["10.0.2.0/24".parse().unwrap()];
    a.upsert_peer(to_b, p.now).unwrap();
    send(&mut a, &v4("10.0.1.5", "10.0.2.7", b"x"), p.now).unwrap()
}

#[test]
fn handshake_flood_is_answered_with_cookies() {
    let mut p = pair(None);
    let first = flood(&mut p).expect("a flood is answered with cookies");
    assert!(
        first >= 90,
        "cookies only past the rate limit, got one at {first}"
    );
    assert!(p.b.drops().get(DropReason::UnderLoad) > 0);
}

#[test]
fn peer_updates_move_prefixes_and_removal_forgets_routes() {
    let mut p = pair(None);
    let mut c = PeerConfig::new(PrivateKey::generate().public_key());
    c.allowed_ips = vec![
        "10.0.2.128/25".parse().unwrap(),
        "10.0.2.0/24".parse().unwrap(),
    ];
    let c_id = p.a.upsert_peer(c.clone(), p.now).unwrap();
    // C took 10.0.2.0/24 from B: last claim wins, as in WireGuard.
    assert_eq!(p.a.route("10.0.2.1".parse().unwrap()), Some(c_id));
    let b_nets = p.a.peer_status(p.a_id).unwrap().allowed_ips;
    assert_eq!(b_nets, vec!["fd02::/64".parse::<ipnet::IpNet>().unwrap()]);
    assert!(p.a.remove_peer(&c.public_key));
    assert_eq!(p.a.route("10.0.2.1".parse().unwrap()), None);
    assert!(!p.a.remove_peer(&c.public_key));
    assert!(matches!(
        p.a.upsert_peer(PeerConfig::new(p.a.public_key()), p.now),
        Err(NodeError::OwnKey(_))
    ));
}

#[test]
fn a_peer_with_an_endpoint_gets_a_proactive_handshake_smaller_key_first() {
    let mut p = pair(None);
    // Both know each other's endpoint: only the node with the smaller key starts at once.
    let (first, second) = if p.a.public_key() < p.b.public_key() {
        (&mut p.a, &mut p.b)
    } else {
        (&mut p.b, &mut p.a)
    };
    first.handle_timeout(p.now);
    second.handle_timeout(p.now);
    let sent = flush(first);
    assert_eq!(sent.len(), 1, "one initiation from the smaller key");
    assert_eq!(sent[0].1[0], HANDSHAKE_INIT);
    assert!(flush(second).is_empty(), "the larger key waits");
    // The larger key still initiates on its own later (the other side may have no endpoint).
    let later = p.now + YIELD_FIRST_HANDSHAKE + std::time::Duration::from_millis(1);
    second.handle_timeout(later);
    assert_eq!(flush(second).len(), 1);
}

proptest! {
    /// Whatever arrives from the network, the node answers with a value, never a panic.
    #[test]
    fn random_datagrams_never_panic(datagrams in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..400), 1..30)
    ) {
        let mut p = pair(None);
        let mut out = vec![0u8; 2048];
        for mut d in datagrams {
            // Steer some datagrams into each message type's parser.
            if let Some(first) = d.first_mut() {
                *first %= 6;
            }
            let _ = p.b.decapsulate(sock(A_ADDR), &d, &mut out, p.now);
        }
        let _ = flush(&mut p.b);
    }
}

/// Tests that move boringtun's clock (feature `mock-time`): rekey, retry, expiry, re-arm.
#[cfg(feature = "mock-time")]
mod timed {
    use super::*;
    use mock_instant::MockClock;
    use std::time::Duration;

    /// Advances both clocks (ours and boringtun's) in steps, running timers on both nodes and
    /// carrying their timer packets across. Returns what the hosts received.
    fn run_for(p: &mut Pair, total: Duration, wire_up: bool) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let step = Duration::from_millis(100);
        let (mut at_a, mut at_b) = (Vec::new(), Vec::new());
        let mut elapsed = Duration::ZERO;
        while elapsed < total {
            MockClock::advance(step);
            p.now += step;
            elapsed += step;
            p.a.handle_timeout(p.now);
            p.b.handle_timeout(p.now);
            let to_b: Vec<_> = flush(&mut p.a).into_iter().map(|(_, d)| d).collect();
            let to_a: Vec<_> = flush(&mut p.b).into_iter().map(|(_, d)| d).collect();
            if wire_up {
                let (a, b) = settle(p, to_b, to_a);
                at_a.extend(a);
                at_b.extend(b);
            }
        }
        (at_a, at_b)
    }

    fn established(p: &mut Pair) {
        let init = send(&mut p.a, &v4("10.0.1.5", "10.0.2.7", b"hello"), p.now).unwrap();
        let (_, at_b) = settle(p, vec![init], vec![]);
        assert_eq!(at_b.len(), 1);
    }

    #[test]
    fn rate_limit_window_resets_every_second() {
        let mut p = pair(None);
        assert!(flood(&mut p).is_some());
        run_for(&mut p, Duration::from_millis(1100), false);
        let init = fresh_initiation(&p);
        let mut out = [0u8; 256];
        match p.b.decapsulate(sock(A_ADDR), &init, &mut out, p.now) {
            Inbound::Network { packet, .. } => assert_eq!(packet[0], 2, "a handshake response"),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    #[test]
    fn rekey_after_120_seconds_keeps_data_flowing() {
        let mut p = pair(None);
        established(&mut p);
        let first = p.a.peer_status(p.a_id).unwrap().last_handshake.unwrap();
        // Traffic every 10 s for 130 s: the initiator rekeys after REKEY_AFTER_TIME (120 s).
        for _ in 0..13 {
            run_for(&mut p, Duration::from_secs(10), true);
            let packet = v4("10.0.1.5", "10.0.2.7", b"tick");
            let wire = send(&mut p.a, &packet, p.now).unwrap();
            let (_, at_b) = settle(&mut p, vec![wire], vec![]);
            assert_eq!(at_b, vec![packet]);
        }
        run_for(&mut p, Duration::from_secs(1), true);
        let last = p.a.peer_status(p.a_id).unwrap().last_handshake.unwrap();
        assert!(
            last - first >= Duration::from_secs(120),
            "a second handshake happened"
        );
        // Data still flows on the new session, both ways.
        let back = v4("10.0.2.7", "10.0.1.5", b"after rekey");
        let wire = send(&mut p.b, &back, p.now).unwrap();
        assert_eq!(settle(&mut p, vec![], vec![wire]).0, vec![back]);
    }

    #[test]
    fn lost_initiation_is_retried_after_rekey_timeout() {
        let mut p = pair(None);
        let _lost = send(&mut p.a, &v4("10.0.1.5", "10.0.2.7", b"q"), p.now).unwrap();
        // Discard the proactive initiations, then let the retry through after ~5 s.
        run_for(&mut p, Duration::from_millis(4500), false);
        let (_, at_b) = run_for(&mut p, Duration::from_secs(2), true);
        assert!(
            p.b.peer_status(p.b_id).unwrap().last_handshake.is_some(),
            "retry handshake"
        );
        assert!(
            at_b.iter().any(|d| d.ends_with(b"q")),
            "queued packet delivered: {at_b:?}"
        );
    }

    #[test]
    fn always_on_peer_rearms_after_expiry() {
        // A keeps B always-on (persistent keepalive); B is unreachable for 100 s.
        let mut p = pair(Some(25));
        run_for(&mut p, Duration::from_secs(100), false);
        // Attempts expired after 90 s (REKEY_ATTEMPT_TIME); A re-arms on its own and the
        // handshake completes as soon as B is back, without any traffic from the host.
        run_for(&mut p, Duration::from_secs(35), true);
        assert!(p.a.peer_status(p.a_id).unwrap().last_handshake.is_some());
    }
}
