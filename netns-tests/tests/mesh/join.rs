//! Joining: pods of two clusters reach each other and carry TCP; a third cluster's node becomes
//! reachable from every pod; `peerd ping` across clusters.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use netns_tests::{MeshLab, TcpSink, peer_field, reach_times, tcp_send};

use super::*;

/// Enough TCP to span many windows and a few WireGuard rekey-free minutes of a debug build.
const TRANSFER: u64 = 8 << 20;

#[test]
fn two_clusters_pods_reach_each_other_and_carry_tcp() {
    require_mesh!();
    let mesh = two_by_two("mjn");
    mesh.pods_ping_all(PING).unwrap_or_else(|e| panic!("{e:#}"));

    // Cross-cluster, pod to pod, both directions: east-0's pod -> west-1's pod, and back.
    for (from, to, seed) in [(0, 3, 1), (3, 0, 2)] {
        let (src, dst) = (mesh.node(from), mesh.node(to));
        let addr = SocketAddr::new(dst.pod_ip.into(), 5001);
        let sink = TcpSink::start(dst.pod(), addr).expect("tcp sink in the pod");
        let sent = tcp_send(src.pod(), addr, TRANSFER, seed)
            .unwrap_or_else(|e| panic!("{} -> {}: {e:#}\n{}", src.name, dst.name, mesh.logs()));
        let got = sink
            .wait(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("receive at {addr}: {e:#}\n{}", mesh.logs()));
        assert_eq!(got, sent, "{} -> {}: stream damaged", src.name, dst.name);
        assert_eq!(got.bytes, TRANSFER);
    }

    // The bytes went through the tunnel between those two nodes, not some other way.
    let status = mesh.node(0).status().expect("east-0 status");
    let tx = peer_field(&status, "west-1", "tx_bytes").and_then(|v| v.as_u64());
    assert!(
        tx >= Some(TRANSFER),
        "east-0 sent {tx:?} bytes to west-1: {status}"
    );
    assert_eq!(
        peer_field(&status, "west-1", "tunnel").and_then(|v| v.as_str()),
        Some("up"),
        "{status}"
    );
}

#[test]
fn a_third_cluster_joins_and_is_reachable_within_2s() {
    require_mesh!();
    let mut mesh = two_by_two("mnth");
    let north = mesh
        .add_node_with(
            NORTH,
            netns_tests::NodeOptions {
                seeds: vec![MeshLab::seed(WEST, 1)],
                deferred: true,
                ..Default::default()
            },
        )
        .expect("north-0 prepared");
    let started = Instant::now();
    mesh.start(north).expect("north-0 starts");
    let ready = Instant::now();
    let target = mesh.node(north).pod_ip;
    let pods: Vec<(&str, &netns_tests::Netns)> = mesh.nodes()[..4]
        .iter()
        .map(|n| (n.name.as_str(), n.pod()))
        .collect();
    let times = reach_times(&pods, target, ready, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    let slowest = times.iter().map(|(_, t)| *t).max().unwrap_or_default();
    eprintln!(
        "north-0 ready {:?} after its start; reachable from every pod {slowest:?} after ready: {times:?}",
        ready - started
    );
    assert!(
        slowest < Duration::from_secs(2),
        "north-0's pod unreachable from some pod for {slowest:?} after north-0 was ready: {times:?}"
    );
    mesh.wait_converged(CONVERGE)
        .unwrap_or_else(|e| panic!("{e:#}"));
    // And the other way: north's pod reaches every pod.
    mesh.pods_ping_all(PING).unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn peerd_ping_crosses_clusters() {
    require_mesh!();
    let mesh = two_by_two("mpng");
    let east0 = mesh.node(0).peerd().expect("east-0");
    let socket = east0.socket().to_string_lossy().into_owned();

    // By name, as JSON.
    let out = Command::new(mesh.bin())
        .args([
            "ping", "west-1", "--socket", &socket, "--count", "3", "--json",
        ])
        .output()
        .expect("peerd ping runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "peerd ping --json failed: {text} {:?}\n{}",
        out.stderr,
        mesh.logs()
    );
    let report: serde_json::Value = serde_json::from_str(&text).expect("ping JSON");
    assert_eq!(report["sent"], 3, "{report}");
    assert!(report["replies"].as_u64() > Some(0), "no replies: {report}");
    assert_eq!(
        report["address"],
        mesh.node(3).address.to_string(),
        "{report}"
    );
    let endpoint = format!("{}:{}", mesh.node(3).underlay, netns_tests::MESH_PORT);
    assert_eq!(report["endpoint"], endpoint.as_str(), "{report}");

    // By cluster/name, as the human table.
    let out = Command::new(mesh.bin())
        .args(["ping", "west/west-0", "--socket", &socket, "--count", "2"])
        .output()
        .expect("peerd ping runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "peerd ping failed: {text} {:?}",
        out.stderr
    );
    let pong = format!("pong from west/west-0 ({})", mesh.node(2).address);
    assert!(
        text.lines().any(|l| l.starts_with(&pong)),
        "no line starting {pong:?}: {text}"
    );

    // A node nobody knows gets an error, not a hang.
    let out = Command::new(mesh.bin())
        .args(["ping", "west-9", "--socket", &socket, "--count", "1"])
        .output()
        .expect("peerd ping runs");
    assert!(!out.status.success(), "ping of an unknown node succeeded");
}
