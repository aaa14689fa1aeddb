//! The phases of the benchmark: joins, steady traffic, updates and crashes, each measured in
//! virtual time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use peerd_mesh::NodeState;
use peerd_mesh::sim::Sim;

use crate::memory;
use crate::{LIMIT, TICK};

/// Seeds first, then the other nodes taking clusters in turn, as parallel per-cluster rollouts
/// would.
pub fn rollout_order(sim: &Sim, seeds: &[usize]) -> Vec<usize> {
    let mut by_cluster: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, node) in sim.nodes.iter().enumerate() {
        if !seeds.contains(&i) {
            by_cluster.entry(&node.id.cluster).or_default().push(i);
        }
    }
    let mut order = seeds.to_vec();
    let longest = by_cluster.values().map(Vec::len).max().unwrap_or(0);
    for k in 0..longest {
        order.extend(by_cluster.values().filter_map(|nodes| nodes.get(k)));
    }
    order
}

/// Join convergence of each node: from its start until it and every node already running
/// when it started (itself included, nodes started at the same instant count) hold each
/// other's current records and see each other alive. Nodes that start later are measured by
/// their own joins; counting them here would make every node wait for the end of a rollout.
pub struct Join {
    /// Each converged node's join time.
    pub took: Vec<Duration>,
    /// Nodes that had not converged (or not started) at the limit.
    pub unconverged: usize,
    /// From the first start until every running node saw every other.
    pub all: Option<Duration>,
    /// When the last node started, from the first start.
    pub last_start: Duration,
}

/// A node whose join is not yet complete.
struct Joining {
    node: usize,
    started: Instant,
    /// How many nodes of the start order were running when it started.
    peers: usize,
    watch: Watch,
}

/// Starts node `i` at offset `at` for each `(at, i)` (through the seeds other than itself) and
/// measures each node's join convergence.
pub fn join(sim: &mut Sim, starts: &[(Duration, usize)], seeds: &[usize]) -> Join {
    let t0 = sim.now;
    let mut running: Vec<usize> = Vec::new();
    let mut pending: Vec<Joining> = Vec::new();
    let mut took = Vec::new();
    let last_start = starts.last().map_or(Duration::ZERO, |(at, _)| *at);
    while sim.now - t0 <= last_start + LIMIT {
        let batch = running.len();
        while let Some(&(_, i)) = starts
            .get(running.len())
            .filter(|(at, _)| sim.now - t0 >= *at)
        {
            let through: Vec<usize> = seeds.iter().copied().filter(|s| *s != i).collect();
            sim.start(i, &through);
            running.push(i);
        }
        for &node in &running[batch..] {
            pending.push(Joining {
                node,
                started: sim.now,
                peers: running.len(),
                watch: Watch::default(),
            });
        }
        pending.retain_mut(|p| {
            let j = p.node;
            let both = |i| i == j || (sim.sees(i, j) && sim.sees(j, i));
            let done = p.watch.all(&running[..p.peers], both);
            if done {
                took.push(sim.now - p.started);
            }
            !done
        });
        if pending.is_empty() && running.len() == starts.len() {
            break;
        }
        sim.run_for(TICK);
    }
    for p in pending.iter().take(5) {
        explain(sim, p.node, &running[..p.peers]);
    }
    let unconverged = pending.len() + starts.len() - running.len();
    let rest = LIMIT.saturating_sub(sim.now - t0);
    let all = (unconverged == 0)
        .then(|| sim.run_until(rest, Sim::converged))
        .flatten()
        .map(|_| sim.now - t0);
    Join {
        took,
        unconverged,
        all,
        last_start,
    }
}

/// Prints why node `j` has not converged with `peers` (at most a few pairs).
fn explain(sim: &Sim, j: usize, peers: &[usize]) {
    let view = |i: usize, of: usize| {
        let mesh = sim.nodes[i].mesh.as_ref()?;
        let current = sim.nodes[of].mesh.as_ref()?.own().version;
        mesh.node(&sim.nodes[of].id, sim.now)
            .map(|(r, state)| (state, r.version == current))
    };
    let failing: Vec<usize> = peers
        .iter()
        .copied()
        .filter(|&i| i != j && !(sim.sees(i, j) && sim.sees(j, i)))
        .collect();
    for &i in failing.iter().take(3) {
        println!(
            "    not converged: {} -> {}: {:?}, {} -> {}: {:?} ((state, current version); {} pairs \
             fail)",
            sim.nodes[i].id,
            sim.nodes[j].id,
            view(i, j),
            sim.nodes[j].id,
            sim.nodes[i].id,
            view(j, i),
            failing.len()
        );
    }
}

/// Bytes and datagrams per node over a steady window.
pub struct Traffic {
    tx: Vec<u64>,
    rx: Vec<u64>,
    datagrams: Vec<u64>,
    by_kind: BTreeMap<&'static str, u64>,
    delivered: u64,
}

/// Runs `window` and measures what every node sent and received in it.
pub fn steady(sim: &mut Sim, window: Duration) -> Traffic {
    let before = counters(sim);
    let delivered = sim.delivered.1;
    sim.run_for(window);
    let after = counters(sim);
    let mut t = Traffic {
        tx: Vec::new(),
        rx: Vec::new(),
        datagrams: Vec::new(),
        by_kind: BTreeMap::new(),
        delivered: sim.delivered.1 - delivered,
    };
    for (i, a) in after {
        let Some(b) = before.get(&i) else { continue };
        t.tx.push(a.tx - b.tx);
        t.rx.push(a.rx - b.rx);
        t.datagrams.push(a.datagrams - b.datagrams);
        for (kind, bytes) in &a.by_kind {
            *t.by_kind.entry(kind).or_default() += bytes - b.by_kind.get(kind).unwrap_or(&0);
        }
    }
    t
}

struct Counters {
    tx: u64,
    rx: u64,
    datagrams: u64,
    by_kind: BTreeMap<&'static str, u64>,
}

fn counters(sim: &Sim) -> BTreeMap<usize, Counters> {
    let mut out = BTreeMap::new();
    for (i, node) in sim.nodes.iter().enumerate() {
        if let Some(stats) = node.mesh.as_ref().map(|m| m.stats()) {
            let counters = Counters {
                tx: stats.tx_bytes,
                rx: stats.rx_bytes,
                datagrams: stats.tx_datagrams + stats.rx_datagrams,
                by_kind: stats.tx_bytes_by_kind.clone(),
            };
            out.insert(i, counters);
        }
    }
    out
}

impl Traffic {
    /// Prints per-node rates over the window.
    pub fn print(&self, window: Duration, settle: Duration, phase: Instant) {
        let secs = window.as_secs_f64();
        let n = self.tx.len().max(1) as f64;
        let per_s = |v: &[u64]| {
            let mean = v.iter().sum::<u64>() as f64 / n / secs;
            let max = v.iter().copied().max().unwrap_or(0) as f64 / secs;
            (mean, max)
        };
        let both: Vec<u64> = self.tx.iter().zip(&self.rx).map(|(t, r)| t + r).collect();
        println!(
            "steady state, {secs:.0} s window after {:.0} s settling ({:.1} s wall for both):",
            settle.as_secs_f64(),
            phase.elapsed().as_secs_f64()
        );
        for (what, v) in [("tx", &self.tx), ("rx", &self.rx), ("tx+rx", &both)] {
            let (mean, max) = per_s(v);
            println!(
                "    {what:<6} bytes/s per node: mean {:>8.0}  max {:>8.0}",
                mean, max
            );
        }
        let (mean, max) = per_s(&self.datagrams);
        println!("    datagrams/s per node (tx+rx): mean {mean:.1}  max {max:.1}");
        let total: u64 = self.by_kind.values().sum();
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(kind, bytes)| {
                format!(
                    "{kind} {:.0} B/s ({:.0} %)",
                    *bytes as f64 / n / secs,
                    100.0 * *bytes as f64 / total.max(1) as f64
                )
            })
            .collect();
        println!("    tx per node by kind: {}", kinds.join(", "));
        println!(
            "    network delivered {:.0} bytes/s per node",
            self.delivered as f64 / n / secs
        );
    }
}

/// Nodes spread over the mesh, one for each of `count` samples, skipping `avoid`.
fn spread(sim: &Sim, count: usize, offset: usize, avoid: &[usize]) -> Vec<usize> {
    let n = sim.nodes.len();
    let mut picks = Vec::new();
    let mut k = 0;
    while picks.len() < count && k < n {
        let i = (offset + k * n / count.max(1) + k / count.max(1)) % n;
        if !avoid.contains(&i) && !picks.contains(&i) && sim.nodes[i].mesh.is_some() {
            picks.push(i);
        }
        k += 1;
    }
    picks
}

/// One node after another changes its record; time until every running node holds the new
/// version.
pub fn update(sim: &mut Sim, count: usize) -> Vec<Duration> {
    let mut took = Vec::new();
    for (k, j) in spread(sim, count, 0, &[]).into_iter().enumerate() {
        let (now, wall) = (sim.now, sim.wall());
        let extra: SocketAddr = format!("203.0.113.{}:51820", k % 250 + 1)
            .parse()
            .expect("address");
        let Some(mesh) = sim.nodes[j].mesh.as_mut() else {
            continue;
        };
        mesh.update_own(|r| r.endpoints.push(extra), now, wall);
        let version = mesh.own().version;
        let id = sim.nodes[j].id.clone();
        let others = running(sim, j);
        let mut watch = Watch::default();
        let held = sim.run_until(LIMIT, |s| {
            watch.all(&others, |i| {
                s.nodes[i].mesh.as_ref().is_some_and(|m| {
                    m.node(&id, s.now)
                        .is_some_and(|(r, _)| r.version == version)
                })
            })
        });
        took.extend(held);
        sim.run_for(Duration::from_millis(500));
    }
    took
}

/// One node after another crashes; time until every running node sees it dead. Also returns
/// the heap bytes each crash freed: one mesh's own memory.
pub fn kill(sim: &mut Sim, count: usize, seeds: &[usize]) -> (Vec<Duration>, Vec<usize>) {
    let mut took = Vec::new();
    let mut freed = Vec::new();
    let offset = sim.nodes.len() / count.max(1) / 2;
    for k in spread(sim, count, offset, seeds) {
        let live = memory::live();
        sim.kill(k);
        freed.push(live.saturating_sub(memory::live()));
        let others = running(sim, k);
        let mut watch = Watch::default();
        let dead = sim.run_until(LIMIT, |s| {
            watch.all(&others, |i| s.state(i, k) == Some(NodeState::Dead))
        });
        if dead.is_none() {
            let mut seen: BTreeMap<Option<NodeState>, usize> = BTreeMap::new();
            for &i in &others {
                *seen.entry(sim.state(i, k)).or_default() += 1;
            }
            println!(
                "    {} not seen dead by all after {LIMIT:?}: states seen {seen:?}",
                sim.nodes[k].id
            );
        }
        took.extend(dead);
        sim.run_for(Duration::from_secs(1));
    }
    (took, freed)
}

/// The running nodes but `except`.
fn running(sim: &Sim, except: usize) -> Vec<usize> {
    (0..sim.nodes.len())
        .filter(|&i| i != except && sim.nodes[i].mesh.is_some())
        .collect()
}

/// Checks a condition over many nodes starting where it last failed, so that a condition that
/// still fails costs about one lookup per tick rather than one per node. It holds only after a
/// full pass in which every node passed.
#[derive(Default)]
struct Watch {
    from: usize,
}

impl Watch {
    fn all(&mut self, nodes: &[usize], mut holds: impl FnMut(usize) -> bool) -> bool {
        for k in 0..nodes.len() {
            let at = (self.from + k) % nodes.len();
            if !holds(nodes[at]) {
                self.from = at;
                return false;
            }
        }
        true
    }
}
