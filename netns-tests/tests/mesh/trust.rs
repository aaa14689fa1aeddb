//! Trust: only nodes certified by the mesh CA join, and a record is only believed as its
//! certificate and signature allow. Forged control datagrams are built with `peerd-mesh` and
//! sent over UDP from a namespace on the east bridge that is no mesh node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netns_tests::{MESH_PORT, MeshLab, NodeOptions, mesh_count, ping, udp_send};
use peerd_mesh::member::Member;
use peerd_mesh::trust::NodeSigner;
use peerd_mesh::wire::{self, Hello};
use peerd_mesh::{NodeRecord, SignedRecord};

use super::*;

/// The forger's host number on the east bridge.
const FORGER: u8 = 201;
/// How long nothing may change after a forgery (longer than the ~1.5 s failure detection, so a
/// membership hijack would show as a node going dead).
const UNTOUCHED: Duration = Duration::from_secs(3);
/// peerd's state file inside `state_dir`.
const STATE_FILE: &str = "state/mesh-records.bin";

#[test]
fn a_node_certified_by_another_ca_never_joins() {
    require_mesh!();
    let mut mesh = two_by_two("mfca");
    let members = [0, 1, 2, 3];
    let before = counters(&mesh, &members, "certificate");
    let other_ca = mesh.foreign_ca("ca-other").expect("another CA");
    // It knows every member as a seed, so every member hears from it.
    let seeds = (0..2)
        .flat_map(|c| (0..2).map(move |k| MeshLab::seed(c, k)))
        .collect();
    let stranger = mesh
        .add_node_with(
            EAST,
            NodeOptions {
                seeds,
                foreign_ca: Some(other_ca),
                ..NodeOptions::default()
            },
        )
        .expect("the stranger starts");
    let (name, cidr) = {
        let s = mesh.node(stranger);
        (s.name.clone(), s.pod_cidr.clone())
    };

    mesh.wait_for(
        Duration::from_secs(10),
        "every member to count the stranger's certificate as rejected",
        |m| {
            let now = counters(m, &members, "certificate");
            Ok(members
                .iter()
                .find(|&&i| now[&i] <= before[&i])
                .map(|&i| format!("{} counts {} rejections", m.node(i).name, now[&i])))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    mesh.hold(UNTOUCHED, "the stranger staying out", |m| {
        for &i in &members {
            let node = m.node(i);
            if let Some(state) = node.state_of(&name)? {
                return Ok(Some(format!("{} lists {name} as {state}", node.name)));
            }
            if node.routes()?.contains(&cidr) {
                return Ok(Some(format!("{} routes {cidr}", node.name)));
            }
        }
        let own = m.node(stranger).status()?;
        let alive = own["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["state"] == "alive")
            .count();
        Ok((alive > 0).then(|| format!("the stranger sees {alive} members alive: {own}")))
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let after = counters(&mesh, &members, "certificate");
    eprintln!("certificate rejections per member: before {before:?}, after {after:?}");

    assert_eq!(
        mesh.missing().expect("status"),
        None,
        "the members fell apart"
    );
    let (s, e0) = (mesh.node(stranger), mesh.node(0));
    assert!(
        !ping(s.pod(), e0.pod_ip.into(), 1),
        "the stranger's pod reached east-0's pod"
    );
    assert!(
        !ping(e0.pod(), s.pod_ip.into(), 1),
        "east-0's pod reached the stranger's pod"
    );
}

/// (b) east-1's own certificate and key (as if the node were compromised) sign a record that
/// claims west's whole pod space, and (c) west-0's genuine record, as a relay would forward it,
/// has its endpoint changed to the forger's address after signing. Both are sent to every
/// member, with a membership identity of a newer generation at the forger's address. Every
/// member must refuse both and count them, and nothing may change: routes, states, endpoints,
/// pod traffic.
#[test]
fn forged_records_are_refused_and_change_nothing() {
    require_mesh!();
    let mut mesh = two_by_two("mfrg");
    let (forger, forger_ip) = mesh.add_host(EAST, FORGER).expect("forger host");
    let from = SocketAddr::new(forger_ip.into(), MESH_PORT);
    let members = [0, 1, 2, 3];
    let baseline = snapshot(&mesh, &members);
    let records = state_records(&mesh, 0);

    // (b) A pod CIDR outside the certificate, signed with the certificate's own key.
    let (_, east1) = find(&records, "east-1");
    let dir = mesh.lab().path("east-1");
    let signer = NodeSigner::load(&dir.join("node.pem"), &dir.join("node.key"))
        .expect("east-1's certificate and key");
    let mut greedy = east1.clone();
    greedy.pod_cidrs = vec!["10.2.0.0/16".parse().expect("cidr")];
    greedy.version += 1000;
    let hello = forged_hello(&greedy, SignedRecord::sign(&greedy, &signer), from);
    let before = counters(&mesh, &members, "cidr_outside_certificate");
    send_to_all(&mesh, &forger, from, &members, &hello);
    mesh.wait_for(
        Duration::from_secs(5),
        "every member to count cidr_outside_certificate",
        |m| risen(m, &members, "cidr_outside_certificate", &before),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    mesh.hold(UNTOUCHED, "the mesh after the greedy record", |m| {
        changed(m, &members, &baseline)
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    mesh.pods_ping_all(PING)
        .unwrap_or_else(|e| panic!("after the greedy record: {e:#}"));

    // (c) A relayed record with a field changed after signing.
    let (genuine, west0) = find(&records, "west-0");
    let mut moved = west0.clone();
    moved.endpoints = vec![from];
    moved.version += 1000;
    let mut tampered = genuine.clone();
    tampered.body = postcard::to_allocvec(&moved).expect("record encodes");
    let hello = forged_hello(&moved, tampered, from);
    let before = counters(&mesh, &members, "signature");
    send_to_all(&mesh, &forger, from, &members, &hello);
    mesh.wait_for(
        Duration::from_secs(5),
        "every member to count a signature rejection",
        |m| risen(m, &members, "signature", &before),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    mesh.hold(UNTOUCHED, "the mesh after the tampered record", |m| {
        changed(m, &members, &baseline)
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    mesh.pods_ping_all(PING)
        .unwrap_or_else(|e| panic!("after the tampered record: {e:#}"));
}

/// What a member shows that a forgery could change: its kernel routes, and each peer's name,
/// state and endpoint.
type View = (BTreeSet<String>, Vec<(String, String, String)>);
/// The [`View`] of every member.
type Snapshot = BTreeMap<usize, View>;

fn snapshot(mesh: &MeshLab, members: &[usize]) -> Snapshot {
    members
        .iter()
        .map(|&i| (i, view(mesh, i).expect("status and routes")))
        .collect()
}

fn view(mesh: &MeshLab, i: usize) -> anyhow::Result<View> {
    let node = mesh.node(i);
    let status = node.status()?;
    let peers = status["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
            (s("name"), s("state"), s("endpoint"))
        })
        .collect();
    Ok((node.routes()?, peers))
}

fn changed(
    mesh: &MeshLab,
    members: &[usize],
    baseline: &Snapshot,
) -> anyhow::Result<Option<String>> {
    for &i in members {
        let now = view(mesh, i)?;
        if now != baseline[&i] {
            return Ok(Some(format!(
                "{} changed from {:?} to {now:?}",
                mesh.node(i).name,
                baseline[&i]
            )));
        }
    }
    Ok(None)
}

/// `rejected.<reason>` of every member.
fn counters(mesh: &MeshLab, members: &[usize], reason: &str) -> BTreeMap<usize, u64> {
    members
        .iter()
        .map(|&i| {
            let status = mesh.node(i).status().expect("status");
            (i, mesh_count(&status, "rejected", reason))
        })
        .collect()
}

fn risen(
    mesh: &MeshLab,
    members: &[usize],
    reason: &str,
    before: &BTreeMap<usize, u64>,
) -> anyhow::Result<Option<String>> {
    for &i in members {
        let status = mesh.node(i).status()?;
        let now = mesh_count(&status, "rejected", reason);
        if now <= before[&i] {
            return Ok(Some(format!("{}: {reason} still {now}", mesh.node(i).name)));
        }
    }
    Ok(None)
}

/// The signed records node `i` keeps in its state directory (what a relay would forward).
pub(super) fn state_records(mesh: &MeshLab, i: usize) -> Vec<(SignedRecord, NodeRecord)> {
    let path = mesh.lab().path(&mesh.node(i).name).join(STATE_FILE);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let records: Vec<SignedRecord> = postcard::from_bytes(&bytes).expect("state file decodes");
    records
        .into_iter()
        .map(|s| {
            let r = s.decode_unverified().expect("record decodes");
            (s, r)
        })
        .collect()
}

pub(super) fn find<'a>(
    records: &'a [(SignedRecord, NodeRecord)],
    name: &str,
) -> &'a (SignedRecord, NodeRecord) {
    records
        .iter()
        .find(|(_, r)| r.name == name)
        .unwrap_or_else(|| panic!("no record of {name} in the state file"))
}

/// A Hello carrying `signed`, introducing the record's node as a newer generation at `addr`.
pub(super) fn forged_hello(record: &NodeRecord, signed: SignedRecord, addr: SocketAddr) -> Vec<u8> {
    wire::encode_hello(&Hello {
        member: Member {
            cluster: record.cluster.clone(),
            name: record.name.clone(),
            addr,
            generation: record.member_gen + 1,
        },
        record: signed,
        reply: true,
    })
}

fn send_to_all(
    mesh: &MeshLab,
    forger: &netns_tests::Netns,
    from: SocketAddr,
    members: &[usize],
    datagram: &[u8],
) {
    for &i in members {
        let to = SocketAddr::new(IpAddr::V4(mesh.node(i).underlay), MESH_PORT);
        udp_send(forger, from, to, datagram, 1).expect("send the forged datagram");
    }
}
