//! The control plane in a simulated network: joins, failure detection, restarts, partitions,
//! record updates, and forged or foreign records. Real certificates, signatures and sealing;
//! virtual time and an in-memory network.

use std::time::Duration;

use peerd_mesh::sim::Sim;
use peerd_mesh::trust::{self, NodeIdentity, NodeSigner, TrustAnchor};
use peerd_mesh::wire::{self, Hello};
use peerd_mesh::{MeshConfig, NodeRecord, NodeState, SignedRecord};

fn two_by_two() -> Sim {
    let mut sim = Sim::new(&[("east", 2), ("west", 2)], MeshConfig::default());
    // Everyone joins through node 0 (east-0).
    sim.start(0, &[]);
    for i in 1..4 {
        sim.start(i, &[0]);
    }
    sim
}

#[test]
fn four_nodes_of_two_clusters_converge_through_one_seed() {
    let mut sim = two_by_two();
    let took = sim
        .run_until(Duration::from_secs(5), Sim::converged)
        .expect("converges");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // Every node knows every other's WireGuard key, endpoint and pod CIDR.
    for i in 0..4 {
        let view = sim.view(i);
        assert_eq!(view.len(), 3);
        for n in view {
            assert_eq!(n.state, NodeState::Alive);
            assert_eq!(n.record.endpoints.len(), 1);
            assert_eq!(n.record.pod_cidrs.len(), 1);
        }
    }
}

#[test]
fn a_crashed_node_is_dead_within_3_seconds_and_comes_back() {
    let mut sim = two_by_two();
    sim.run_until(Duration::from_secs(5), Sim::converged)
        .expect("converges");
    sim.kill(3);
    let took = sim
        .run_until(Duration::from_secs(10), |s| {
            (0..3).all(|i| s.state(i, 3) == Some(NodeState::Dead))
        })
        .expect("declared dead");
    assert!(took <= Duration::from_secs(3), "dead after {took:?}");
    sim.start(3, &[1]);
    let back = sim
        .run_until(Duration::from_secs(10), Sim::converged)
        .expect("rejoins");
    assert!(back < Duration::from_secs(3), "rejoined after {back:?}");
}

#[test]
fn a_graceful_stop_is_seen_at_once() {
    let mut sim = two_by_two();
    sim.run_until(Duration::from_secs(5), Sim::converged)
        .expect("converges");
    sim.stop(2);
    let took = sim
        .run_until(Duration::from_secs(5), |s| {
            [0, 1, 3]
                .iter()
                .all(|&i| s.state(i, 2) == Some(NodeState::Dead))
        })
        .expect("leave seen");
    assert!(
        took < Duration::from_millis(500),
        "leave seen after {took:?}"
    );
}

#[test]
fn a_cut_between_clusters_heals_without_restarts() {
    let mut sim = two_by_two();
    sim.run_until(Duration::from_secs(5), Sim::converged)
        .expect("converges");
    sim.partition("east", "west");
    sim.run_until(Duration::from_secs(10), |s| {
        s.state(0, 2) == Some(NodeState::Dead) && s.state(2, 0) == Some(NodeState::Dead)
    })
    .expect("each side declares the other dead");
    // Inside each cluster, nodes stay alive to each other.
    assert_eq!(sim.state(0, 1), Some(NodeState::Alive));
    assert_eq!(sim.state(2, 3), Some(NodeState::Alive));
    sim.heal();
    // Simulated time. Over 200 runs: median 1.25 s, 90th percentile 2.25 s, slowest 2.5 s.
    // Before suspects that foca stops timing were declared down by the mesh itself
    // (`Mesh::expire_suspects`): median 0.75 s, 90th percentile 10.75 s, slowest 40.25 s.
    let took = sim
        .run_until(Duration::from_secs(60), Sim::converged)
        .expect("reconverges after the cut");
    assert!(took < Duration::from_secs(5), "the heal took {took:?}");
}

#[test]
fn a_third_cluster_joins_and_an_update_propagates() {
    let mut sim = Sim::new(
        &[("east", 2), ("west", 2), ("north", 1)],
        MeshConfig::default(),
    );
    for i in 0..4 {
        sim.start(i, &[0]);
    }
    sim.run_until(Duration::from_secs(5), Sim::converged)
        .expect("converges");
    sim.start(4, &[2]);
    let took = sim
        .run_until(Duration::from_secs(5), Sim::converged)
        .expect("north joins");
    assert!(took < Duration::from_secs(2), "join took {took:?}");

    // West-1 moves to a new endpoint: everyone learns the new version.
    let (now, wall) = (sim.now, sim.wall());
    let mesh = sim.nodes[3].mesh.as_mut().unwrap();
    mesh.update_own(
        |r| r.endpoints = vec!["203.0.113.9:51820".parse().unwrap()],
        now,
        wall,
    );
    let took = sim
        .run_until(Duration::from_secs(5), Sim::converged)
        .expect("update propagates");
    assert!(took < Duration::from_secs(1), "update took {took:?}");
    let seen = sim
        .view(0)
        .into_iter()
        .find(|n| n.record.name == "west-1")
        .unwrap();
    assert_eq!(
        seen.record.endpoints,
        vec!["203.0.113.9:51820".parse().unwrap()]
    );
}

/// A signer for a node that is not in the simulation, certified by `ca`.
fn outsider(ca: &std::path::Path, dir: &std::path::Path, name: &str, cidr: &str) -> NodeSigner {
    let identity = NodeIdentity {
        name: name.into(),
        cluster: "east".into(),
        region: "region-east".into(),
        zone: "zone-east-0".into(),
        pod_cidrs: vec![cidr.parse().unwrap()],
    };
    trust::issue_node(ca, &identity, Duration::from_secs(3600), dir).unwrap();
    NodeSigner::load(&dir.join("node.pem"), &dir.join("node.key")).unwrap()
}

fn record_for(signer: &NodeSigner, cidr: &str, address: &str) -> NodeRecord {
    let id = signer.identity();
    NodeRecord {
        name: id.name.clone(),
        cluster: id.cluster.clone(),
        region: id.region.clone(),
        zone: id.zone.clone(),
        wg_public_key: [7; 32],
        endpoints: vec!["198.51.100.50:51820".parse().unwrap()],
        pod_cidrs: vec![cidr.parse().unwrap()],
        address: address.parse().unwrap(),
        address6: None,
        services: Vec::new(),
        member_gen: 1,
        version: 1,
    }
}

fn hello_from(signer: &NodeSigner, record: &NodeRecord) -> Vec<u8> {
    let member = peerd_mesh::member::Member {
        cluster: record.cluster.clone(),
        name: record.name.clone(),
        addr: record.endpoints[0],
        generation: 1,
    };
    wire::encode_hello(&Hello {
        member,
        record: SignedRecord::sign(record, signer),
        reply: true,
    })
}

#[test]
fn foreign_forged_and_out_of_bounds_records_are_refused() {
    let mut sim = two_by_two();
    sim.run_until(Duration::from_secs(5), Sim::converged)
        .expect("converges");
    let dir = tempfile::tempdir().unwrap();
    let from = "198.51.100.50:51820".parse().unwrap();

    // 1. A node certified by another CA.
    let other_ca = dir.path().join("other-ca");
    trust::init_ca(&other_ca).unwrap();
    let stranger = outsider(
        &other_ca,
        &dir.path().join("stranger"),
        "east-9",
        "10.1.9.0/24",
    );
    sim.inject(
        from,
        0,
        hello_from(&stranger, &record_for(&stranger, "10.1.9.0/24", "10.1.9.1")),
    );

    // 2. A real mesh node announcing a pod CIDR outside its certificate.
    let greedy = outsider(
        &sim.ca_dir(),
        &dir.path().join("greedy"),
        "east-7",
        "10.1.7.0/24",
    );
    sim.inject(
        from,
        0,
        hello_from(&greedy, &record_for(&greedy, "10.2.0.0/16", "10.1.7.1")),
    );

    // 3. A relayed record with one field changed after signing.
    let honest = outsider(
        &sim.ca_dir(),
        &dir.path().join("honest"),
        "east-8",
        "10.1.8.0/24",
    );
    let mut signed = SignedRecord::sign(&record_for(&honest, "10.1.8.0/24", "10.1.8.1"), &honest);
    let mut tampered: NodeRecord = signed.decode_unverified().unwrap();
    tampered.endpoints = vec!["203.0.113.66:51820".parse().unwrap()];
    signed.body = postcard_body(&tampered);
    let member = peerd_mesh::member::Member {
        cluster: "east".into(),
        name: "east-8".into(),
        addr: from,
        generation: 1,
    };
    sim.inject(
        from,
        0,
        wire::encode_hello(&Hello {
            member,
            record: signed,
            reply: true,
        }),
    );

    sim.run_for(Duration::from_secs(2));
    let stats = sim.nodes[0].mesh.as_ref().unwrap().stats().clone();
    assert_eq!(stats.rejected.get("certificate"), Some(&1), "{stats:?}");
    assert_eq!(
        stats.rejected.get("cidr_outside_certificate"),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(stats.rejected.get("signature"), Some(&1), "{stats:?}");
    // Nobody learned any of them, and the real nodes are untouched.
    for i in 0..4 {
        let names: Vec<String> = sim.view(i).into_iter().map(|n| n.record.name).collect();
        assert!(
            !names
                .iter()
                .any(|n| n == "east-7" || n == "east-8" || n == "east-9"),
            "{names:?}"
        );
    }
    assert!(sim.converged());
}

fn postcard_body(record: &NodeRecord) -> Vec<u8> {
    // Same encoding as SignedRecord::sign, without a signature over it.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    trust::init_ca(&ca).unwrap();
    let scratch = outsider(
        &ca,
        &dir.path().join("n"),
        &record.name,
        &record.pod_cidrs[0].to_string(),
    );
    SignedRecord::sign(record, &scratch).body
}

#[test]
fn garbage_datagrams_are_counted_not_fatal() {
    let mut sim = two_by_two();
    sim.run_until(Duration::from_secs(5), Sim::converged)
        .expect("converges");
    let from = "203.0.113.1:4000".parse().unwrap();
    let mut rng = 0x1234_5678u64;
    for len in 0..300usize {
        let mut d: Vec<u8> = (0..len)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        if let Some(b) = d.first_mut() {
            *b = wire::MAGIC;
        }
        if len > 2 {
            d[1] = wire::VERSION;
            d[2] = (len % 3) as u8;
        }
        sim.inject(from, 1, d);
    }
    let stats = sim.nodes[1].mesh.as_ref().unwrap().stats().clone();
    let dropped: u64 = stats.dropped.values().sum::<u64>() + stats.rejected.values().sum::<u64>();
    assert!(dropped >= 290, "{stats:?}");
    sim.run_for(Duration::from_secs(1));
    assert!(sim.converged());
}

#[test]
fn an_anchor_from_another_ca_refuses_mesh_records() {
    let sim = two_by_two();
    let dir = tempfile::tempdir().unwrap();
    trust::init_ca(&dir.path().join("ca")).unwrap();
    let anchor = TrustAnchor::load(&dir.path().join("ca/ca.pem")).unwrap();
    let signer = NodeSigner::load(
        &sim.ca_dir().join("../east-0/node.pem"),
        &sim.ca_dir().join("../east-0/node.key"),
    )
    .unwrap();
    assert!(
        anchor
            .verify_chain(signer.chain(), std::time::SystemTime::now())
            .is_err()
    );
}
