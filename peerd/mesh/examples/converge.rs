//! Control-plane benchmark (issue 3): `--nodes` simulated nodes in `--clusters` clusters run the
//! real control plane (certificates, signatures, sealing, foca) over the in-memory network of
//! [`Sim`], in virtual time. Prints join convergence (rolling and cold start), update
//! propagation, failure detection, steady-state bytes per node, memory per node and wall time.
//!
//! ```text
//! cargo run --release -p peerd-mesh --example converge -- --nodes 1000 --clusters 4
//! ```
//!
//! Every time printed is virtual (simulated) time unless it says "wall".

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use peerd_mesh::sim::Sim;
use peerd_mesh::{MeshConfig, NodeState};

/// The system allocator, counting live heap bytes (to weigh one mesh by dropping it).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How often convergence is checked (the resolution of every time printed).
const TICK: Duration = Duration::from_millis(10);
/// Longest wait for any one phase before it reports what did not converge.
const LIMIT: Duration = Duration::from_secs(120);

fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("converge: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let wall = Instant::now();
    let rss_start = rss_kib();
    let config = MeshConfig::default();
    let names: Vec<String> = (0..args.clusters).map(|c| format!("c{c}")).collect();
    let sizes: Vec<(&str, usize)> = names
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let n = args.nodes / args.clusters + usize::from(c < args.nodes % args.clusters);
            (name.as_str(), n)
        })
        .collect();
    let mut sim = Sim::new(&sizes, config.clone());
    let seeds: Vec<usize> = (0..args.seeds)
        .map(|k| k * args.nodes / args.seeds)
        .collect();
    println!(
        "peerd-mesh control plane: {} nodes in {} clusters, seeds {:?}, one-way latency {:?}",
        args.nodes, args.clusters, seeds, sim.latency
    );
    println!(
        "timing: probe every {:?} (rtt {:?}), suspect->down {:?}, anti-entropy every {:?}; \
         convergence checked every {TICK:?} of virtual time",
        config.probe_period, config.probe_rtt, config.suspect_to_down, config.anti_entropy
    );
    println!(
        "certificates and identities for {} nodes: {:.1} s wall",
        args.nodes,
        wall.elapsed().as_secs_f64()
    );
    let rss_before = rss_kib();
    let heap_before = LIVE.load(Ordering::Relaxed);

    let phase = Instant::now();
    let order = rollout_order(&sim, &seeds);
    let starts: Vec<(Duration, usize)> = order
        .iter()
        .enumerate()
        .map(|(k, &i)| (args.stagger * k as u32, i))
        .collect();
    let rolling = join(&mut sim, &starts, &seeds);
    report_join(
        &format!("join, rolling ({:?} apart)", args.stagger),
        &rolling,
        phase,
    );
    let rss_after = rss_kib();
    let heap_after = LIVE.load(Ordering::Relaxed);
    let held = held_records(&sim);

    let phase = Instant::now();
    sim.run_for(args.settle);
    let traffic = steady(&mut sim, args.steady);
    traffic.print(args.steady, args.settle, phase);

    let phase = Instant::now();
    let updated = update(&mut sim, args.updates);
    report("update (new version held by all)", &updated, phase);

    let phase = Instant::now();
    let (dead, freed) = kill(&mut sim, args.kills, &seeds);
    report("failure detection (dead at all)", &dead, phase);

    if !args.no_cold {
        let phase = Instant::now();
        for i in 0..sim.nodes.len() {
            sim.kill(i);
        }
        sim.run_for(Duration::from_secs(1));
        let starts: Vec<(Duration, usize)> = order.iter().map(|&i| (Duration::ZERO, i)).collect();
        let cold = join(&mut sim, &starts, &seeds);
        report_join("join, cold start (all at once)", &cold, phase);
    }

    println!(
        "memory: RSS {} MiB at start, {} MiB before any mesh, {} MiB after the rolling join \
         converged: {:.0} KiB per node (meshes plus the simulator's share: in-flight datagrams, \
         per-node certificates and the verify cache shared by all nodes)",
        rss_start / 1024,
        rss_before / 1024,
        rss_after / 1024,
        rss_after.saturating_sub(rss_before) as f64 / args.nodes as f64
    );
    println!(
        "    live heap {} MiB before any mesh, {} MiB after: {:.0} KiB per node",
        heap_before >> 20,
        heap_after >> 20,
        heap_after.saturating_sub(heap_before) as f64 / 1024.0 / args.nodes as f64
    );
    if !freed.is_empty() {
        let mut freed = freed;
        freed.sort();
        println!(
            "    one mesh alone (heap freed when a node was killed, over {} kills): median {} \
             KiB, max {} KiB",
            freed.len(),
            freed[freed.len() / 2] / 1024,
            freed[freed.len() - 1] / 1024
        );
    }
    if let Some((count, bytes, chains)) = held {
        println!(
            "    node 0 holds {count} signed records: {} KiB as sent ({} KiB of it certificate \
             chains), once more decoded",
            bytes / 1024,
            chains / 1024
        );
    }
    println!("wall clock: {:.1} s in all", wall.elapsed().as_secs_f64());
}

const USAGE: &str = "usage: converge [--nodes N] [--clusters C] [--seeds S] [--stagger-ms MS] \
[--settle-s S] [--steady-s S] [--updates N] [--kills N] [--no-cold]";

/// Command line (plain flags: the crate has no CLI dependency).
struct Args {
    nodes: usize,
    clusters: usize,
    seeds: usize,
    stagger: Duration,
    settle: Duration,
    steady: Duration,
    updates: usize,
    kills: usize,
    no_cold: bool,
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut a = Self {
            nodes: 1000,
            clusters: 4,
            seeds: 3,
            stagger: Duration::from_millis(10),
            settle: Duration::from_secs(10),
            steady: Duration::from_secs(30),
            updates: 20,
            kills: 20,
            no_cold: false,
        };
        while let Some(flag) = it.next() {
            if flag == "--no-cold" {
                a.no_cold = true;
                continue;
            }
            let value = it.next().ok_or(format!("{flag} needs a value"))?;
            let n: u64 = value
                .parse()
                .map_err(|_| format!("{flag}: {value:?} is not a number"))?;
            match flag.as_str() {
                "--nodes" => a.nodes = n as usize,
                "--clusters" => a.clusters = n as usize,
                "--seeds" => a.seeds = n as usize,
                "--stagger-ms" => a.stagger = Duration::from_millis(n),
                "--settle-s" => a.settle = Duration::from_secs(n),
                "--steady-s" => a.steady = Duration::from_secs(n),
                "--updates" => a.updates = n as usize,
                "--kills" => a.kills = n as usize,
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        // Sim numbers pod CIDRs 10.<cluster>.<node>.0/24.
        if a.clusters == 0 || a.clusters > 250 || a.nodes.div_ceil(a.clusters) > 250 {
            return Err("need 1-250 clusters of at most 250 nodes each".into());
        }
        if a.seeds == 0 || a.seeds > a.nodes || a.kills + a.seeds > a.nodes {
            return Err("need 1 <= seeds <= nodes and kills + seeds <= nodes".into());
        }
        if a.steady.is_zero() {
            return Err("--steady-s must be positive".into());
        }
        Ok(a)
    }
}

/// Seeds first, then the other nodes taking clusters in turn, as parallel per-cluster rollouts
/// would.
fn rollout_order(sim: &Sim, seeds: &[usize]) -> Vec<usize> {
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
struct Join {
    took: Vec<Duration>,
    unconverged: usize,
    /// From the first start until every running node saw every other.
    all: Option<Duration>,
    last_start: Duration,
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
fn join(sim: &mut Sim, starts: &[(Duration, usize)], seeds: &[usize]) -> Join {
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

fn report_join(what: &str, join: &Join, phase: Instant) {
    report(what, &join.took, phase);
    if join.unconverged > 0 {
        println!(
            "    {} nodes had not converged {LIMIT:?} after the last start",
            join.unconverged
        );
    }
    match join.all {
        Some(all) => println!(
            "    the whole mesh converged {:.2} s after the first start ({:.2} s after the last)",
            all.as_secs_f64(),
            (all - join.last_start).as_secs_f64()
        ),
        None => println!("    the whole mesh had not converged"),
    }
}

/// Bytes and datagrams per node over a steady window.
struct Traffic {
    tx: Vec<u64>,
    rx: Vec<u64>,
    datagrams: Vec<u64>,
    by_kind: BTreeMap<&'static str, u64>,
    delivered: u64,
}

fn steady(sim: &mut Sim, window: Duration) -> Traffic {
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
    fn print(&self, window: Duration, settle: Duration, phase: Instant) {
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
fn update(sim: &mut Sim, count: usize) -> Vec<Duration> {
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
fn kill(sim: &mut Sim, count: usize, seeds: &[usize]) -> (Vec<Duration>, Vec<usize>) {
    let mut took = Vec::new();
    let mut freed = Vec::new();
    let offset = sim.nodes.len() / count.max(1) / 2;
    for k in spread(sim, count, offset, seeds) {
        let live = LIVE.load(Ordering::Relaxed);
        sim.kill(k);
        freed.push(live.saturating_sub(LIVE.load(Ordering::Relaxed)));
        let others = running(sim, k);
        let mut watch = Watch::default();
        let dead = sim.run_until(LIMIT, |s| {
            watch.all(&others, |i| s.state(i, k) == Some(NodeState::Dead))
        });
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

fn report(what: &str, took: &[Duration], phase: Instant) {
    let mut sorted = took.to_vec();
    sorted.sort();
    let pct = |p: f64| {
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1].as_secs_f64()
    };
    if sorted.is_empty() {
        println!("{what}: no sample converged");
        return;
    }
    println!(
        "{what}: n={}  p50 {:.2} s  p99 {:.2} s  max {:.2} s  ({:.1} s wall)",
        sorted.len(),
        pct(0.50),
        pct(0.99),
        sorted[sorted.len() - 1].as_secs_f64(),
        phase.elapsed().as_secs_f64()
    );
}

/// How many signed records node 0 holds, their wire bytes and the certificate chains' share.
fn held_records(sim: &Sim) -> Option<(usize, usize, usize)> {
    let records = sim.nodes[0].mesh.as_ref()?.export();
    let bytes = records.iter().map(|r| r.size()).sum();
    let chains = records.iter().flat_map(|r| &r.chain).map(Vec::len).sum();
    Some((records.len(), bytes, chains))
}

/// Resident set size of this process, in KiB (0 where /proc is missing).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
