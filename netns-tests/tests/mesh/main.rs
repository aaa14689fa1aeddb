//! End-to-end tests of the peerd mesh control plane on real network namespaces: several
//! clusters of real `peerd` nodes that find each other through seeds, certify each other
//! through the mesh CA, and program WireGuard peers and kernel routes for each other's pod
//! CIDRs. Every test asserts what crosses the network between pods, or what the kernel's routing
//! table holds, not only what `peerd status` says.
//!
//! Topology ([`netns_tests::MeshLab`]): a router namespace with one bridge per cluster (east
//! 192.0.2.0/24, west 198.51.100.0/24, north 203.0.113.0/24); node `k` of a cluster owns pod
//! CIDR `10.<cluster+1>.<k>.0/24` and has a pod namespace behind it at `.10`.
//!
//! What is proven (one module per theme):
//! - `join`: in 2 clusters × 2 nodes every pod pings every other pod and 8 MB of TCP crosses
//!   clusters pod to pod with a matching checksum; a node of a third cluster is reachable from
//!   every pod within 2 s of answering `status`; `peerd ping` across clusters gets pongs.
//! - `failure`: a SIGKILLed node is `dead` everywhere within 3 s and its routes leave every
//!   kernel table, then it restarts and is reachable again; a cut between clusters makes each
//!   side declare the other dead (routes withdrawn), and after the link returns both sides
//!   reconverge without restarts.
//! - `trust`: a node certified by another CA never appears anywhere (every node counts a
//!   certificate rejection); a forged Hello claiming a pod CIDR outside its certificate and a
//!   relayed record changed after signing are refused and counted while routes and pod traffic
//!   stay as they were.
//! - `restart`: a node SIGKILLed under traffic, whose seeds are unreachable, gets its routes back
//!   from its state directory in under 1 s (also when unplugged from the network altogether),
//!   pod traffic flows again and the TCP stream across the crash arrives intact.
//! - `reflection`: unauthenticated datagrams draw no more than 3× their size in answers, and a
//!   refused Hello draws no answer at all.
//! - `userspace`: a kernel-mode and a userspace-mode node exchange TCP through their endpoints,
//!   both ways.
//!
//! Build the daemon first (`cargo build -p peerd`) or set `PEERD_BIN`; without it (or root,
//! /dev/net/tun, `ip`, `ping`) each test says SKIPPED, or fails under `CI=true`.

/// Skips (or fails under `CI=true`) unless the machine has what every test here needs.
macro_rules! require_mesh {
    () => {
        netns_tests::require!(
            netns_tests::Need::Root,
            netns_tests::Need::Tun,
            netns_tests::Need::Ip,
            netns_tests::Need::Ping,
            netns_tests::Need::Peerd
        )
    };
}

mod failure;
mod join;
mod reflection;
mod restart;
mod trust;
mod userspace;

use std::net::SocketAddr;
use std::time::Duration;

use netns_tests::MeshLab;

/// Clusters of the tests, by index.
const EAST: usize = 0;
const WEST: usize = 1;
const NORTH: usize = 2;
const CLUSTERS: [&str; 3] = ["east", "west", "north"];
/// Deadline for a mesh to converge from scratch (the mesh itself takes about a second).
const CONVERGE: Duration = Duration::from_secs(15);
/// Deadline for one pod-to-pod ping (the first one of a pair may pay for a handshake).
const PING: Duration = Duration::from_secs(5);

/// Two clusters of two nodes, converged: east-0 (index 0) starts alone, east-1 (1) and west-0
/// (2) join through east-0, west-1 (3) through west-0 (so it learns of east only by gossip).
fn two_by_two(tag: &str) -> MeshLab {
    let mut mesh = MeshLab::new(tag, &CLUSTERS).expect("mesh lab");
    start_two_by_two(&mut mesh, &[]);
    mesh
}

/// Starts the four nodes of [`two_by_two`] in `mesh`, with `east0_seeds` as east-0's seeds,
/// and waits for convergence.
fn start_two_by_two(mesh: &mut MeshLab, east0_seeds: &[SocketAddr]) {
    let east0 = MeshLab::seed(EAST, 0);
    mesh.add_node(EAST, east0_seeds).expect("east-0");
    mesh.add_node(EAST, &[east0]).expect("east-1");
    mesh.add_node(WEST, &[east0]).expect("west-0");
    mesh.add_node(WEST, &[MeshLab::seed(WEST, 0)])
        .expect("west-1");
    let took = mesh
        .wait_converged(CONVERGE)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("2x2 mesh converged {took:?} after the last node was ready");
}
