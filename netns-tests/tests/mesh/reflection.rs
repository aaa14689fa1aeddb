//! Unauthenticated datagrams must not make a node send more than it received (RFC 9000 §8.1's
//! 3× anti-amplification bound is the yardstick), and a refused record must get no answer:
//! otherwise anyone who can spoof a UDP source turns mesh nodes into reflectors.
//!
//! peerd answers unknown senders with at most one Hello per source address per second and ten
//! in a burst overall, and gives a refused record no answer at all.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netns_tests::{MESH_PORT, Netns, UdpSink, in_netns, mesh_count};

use super::trust::{find, forged_hello, state_records};
use super::*;

/// How long replies are collected after the last datagram went out.
const LISTEN: Duration = Duration::from_secs(2);
/// Most bytes a node may send in answer to unauthenticated bytes (RFC 9000 §8.1).
const AMPLIFICATION: usize = 3;

#[test]
fn unknown_senders_get_no_amplified_answer() {
    require_mesh!();
    let mut mesh = two_by_two("mamp");
    let (forger, ip) = mesh.add_host(EAST, 201).expect("forger host");
    let target = SocketAddr::new(IpAddr::V4(mesh.node(0).underlay), MESH_PORT);
    // 200 minimal sealed datagrams (magic, version, type 2, sender key, time, nonce, tag), each
    // from a sender key nobody knows and its own source port.
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let datagrams: Vec<Vec<u8>> = (0..200u16)
        .map(|i| {
            let mut d = vec![peerd_mesh::wire::MAGIC, peerd_mesh::wire::VERSION, 2];
            let mut key = [0x5a; 32];
            key[..2].copy_from_slice(&i.to_be_bytes());
            d.extend_from_slice(&key);
            d.extend_from_slice(&wall.to_le_bytes());
            d.extend_from_slice(&[0; 12 + 16]);
            d
        })
        .collect();
    let sent: usize = datagrams.iter().map(Vec::len).sum();
    let replies = exchange(&forger, ip, target, datagrams);
    let got: usize = replies.iter().map(|(_, n)| n).sum();
    eprintln!(
        "{sent} bytes from unknown senders drew {} datagrams, {got} bytes ({:.1}x)",
        replies.len(),
        got as f64 / sent as f64
    );
    assert!(
        got <= AMPLIFICATION * sent,
        "{sent} unauthenticated bytes drew {got} bytes in {} replies",
        replies.len()
    );
}

#[test]
fn a_refused_hello_gets_no_answer() {
    require_mesh!();
    let mut mesh = two_by_two("mrfl");
    let (forger, ip) = mesh.add_host(EAST, 201).expect("forger host");
    // The member address a forger would point at a victim.
    let claimed = SocketAddr::new(ip.into(), 40000);
    let victim = UdpSink::start(&forger, claimed).expect("sink at the claimed address");
    let records = state_records(&mesh, 0);
    let (genuine, west0) = find(&records, "west-0");
    let mut moved = west0.clone();
    moved.endpoints = vec![claimed];
    let mut tampered = genuine.clone();
    tampered.body = postcard::to_allocvec(&moved).expect("record encodes");
    let hello = forged_hello(&moved, tampered, claimed);

    let target = SocketAddr::new(IpAddr::V4(mesh.node(0).underlay), MESH_PORT);
    let before = mesh_count(
        &mesh.node(0).status().expect("status"),
        "rejected",
        "signature",
    );
    let replies = exchange(&forger, ip, target, vec![hello]);
    let after = mesh_count(
        &mesh.node(0).status().expect("status"),
        "rejected",
        "signature",
    );
    let reflected = victim.stop().expect("sink");
    eprintln!(
        "refused Hello ({before} -> {after} signature rejections): {} replies to the source {replies:?}, {reflected} datagrams to the claimed address",
        replies.len()
    );
    assert!(after > before, "the tampered record was not refused");
    assert!(
        replies.is_empty() && reflected == 0,
        "a refused Hello drew {replies:?} to its source and {reflected} datagrams to {claimed}"
    );
}

/// Sends each datagram to `target` from its own source port on `ip` (inside `ns`), then
/// collects what comes back to those ports for [`LISTEN`]: `(from, bytes)` per reply.
fn exchange(
    ns: &Netns,
    ip: Ipv4Addr,
    target: SocketAddr,
    datagrams: Vec<Vec<u8>>,
) -> Vec<(SocketAddr, usize)> {
    in_netns(ns, move || {
        let mut sockets = Vec::new();
        for (i, d) in datagrams.iter().enumerate() {
            let socket = UdpSocket::bind(SocketAddr::new(ip.into(), 20000 + i as u16))?;
            socket.send_to(d, target)?;
            socket.set_nonblocking(true)?;
            sockets.push(socket);
        }
        let (end, mut buf, mut replies) = (Instant::now() + LISTEN, vec![0u8; 65536], Vec::new());
        while Instant::now() < end {
            for s in &sockets {
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    replies.push((from, n));
                }
            }
            std::thread::sleep(Duration::from_millis(20)); // sampling a window, not readiness
        }
        Ok(replies)
    })
    .join()
    .expect("exchange thread")
    .expect("exchange")
}
