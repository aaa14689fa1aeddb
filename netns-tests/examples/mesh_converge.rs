//! Mesh convergence benchmark on real namespaces (not a test): how long until a node that joins
//! is routed by every other node, and how long until a killed node's routes are withdrawn
//! everywhere.
//!
//! ```text
//! cargo build --release -p peerd -j2
//! cargo run --release -p netns-tests --example mesh_converge -- --nodes 20 [--clusters 4] [--reps 10] [--graceful]
//! ```
//!
//! It starts `nodes - 1` peerd nodes one after another, spread round-robin over `clusters`
//! clusters (each joining through the first node of the mesh and the first of its cluster), and
//! waits until the mesh converges. Then, `reps` times, it starts one more node (a new one each
//! time, so it is always the node started last), times from its process start to the moment its
//! pod CIDR's route appears in the kernel of every other live node, then SIGKILLs it (SIGTERM with
//! `--graceful`) and times until that route is deleted everywhere. Route changes are read from
//! `ip monitor route` in every node namespace, so the figures are kernel events, not polls.
//! Needs root; uses `$PEERD_BIN` or the `peerd` next to this example's target directory.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use netns_tests::{MeshLab, NodeOptions, RouteMonitor, check};

const CLUSTER_NAMES: [&str; 4] = ["east", "west", "north", "south"];
/// How long one join or withdrawal may take before the run is abandoned.
const DEADLINE: Duration = Duration::from_secs(60);

struct Args {
    nodes: usize,
    clusters: usize,
    reps: usize,
    graceful: bool,
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if let Err(why) = check(&[
        netns_tests::Need::Root,
        netns_tests::Need::Tun,
        netns_tests::Need::Ip,
        netns_tests::Need::Peerd,
    ]) {
        bail!("cannot run: {why}");
    }
    let bin = netns_tests::peerd_bin()?;
    println!(
        "command: cargo run --release -p netns-tests --example mesh_converge -- {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    println!(
        "settings: --nodes {} --clusters {} --reps {}{}",
        args.nodes,
        args.clusters,
        args.reps,
        if args.graceful { " --graceful" } else { "" }
    );
    println!(
        "peerd: {}; {} CPUs",
        bin.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut mesh = MeshLab::new("mcb", &CLUSTER_NAMES[..args.clusters])?;

    // The base mesh: nodes - 1 nodes, started one after another.
    let base = args.nodes - 1;
    let started = Instant::now();
    for i in 0..base {
        let opts = options(&mesh, i % args.clusters, false);
        mesh.add_node_with(i % args.clusters, opts)
            .with_context(|| format!("base node {i}"))?;
    }
    let all_started = started.elapsed();
    let converged = mesh.wait_converged(DEADLINE)?;
    println!(
        "base mesh: {base} nodes started in {all_started:.2?}, converged {converged:.2?} after the last one"
    );
    let monitors = (0..base)
        .map(|i| RouteMonitor::start(mesh.node(i).ns()))
        .collect::<Result<Vec<_>>>()?;

    let (mut joins, mut withdrawals) = (Vec::new(), Vec::new());
    for rep in 0..args.reps {
        let c = (base + rep) % args.clusters;
        let opts = options(&mesh, c, true);
        let i = mesh.add_node_with(c, opts)?;
        let (name, cidr) = (mesh.node(i).name.clone(), mesh.node(i).pod_cidr.clone());

        let t0 = Instant::now();
        mesh.start(i)?;
        let ready = t0.elapsed();
        let join = wait_everywhere(&mesh, &monitors, &cidr, false, t0)
            .with_context(|| format!("{name} joining\n{}", mesh.logs()))?;

        let t1 = Instant::now();
        let node = mesh.node_mut(i)?;
        if args.graceful {
            node.terminate()?;
        } else {
            node.kill()?;
        }
        let gone = wait_everywhere(&mesh, &monitors, &cidr, true, t1)
            .with_context(|| format!("{name} leaving\n{}", mesh.logs()))?;
        println!(
            "rep {:>2}: {name:<8} ready {:>4} ms; routed by all {base} others after {:>5} ms (first {:>5} ms); {} -> withdrawn everywhere after {:>5} ms (first {:>5} ms)",
            rep + 1,
            ready.as_millis(),
            join.1.as_millis(),
            join.0.as_millis(),
            if args.graceful { "SIGTERM" } else { "SIGKILL" },
            gone.1.as_millis(),
            gone.0.as_millis()
        );
        joins.push(join.1);
        withdrawals.push(gone.1);
    }
    drop(monitors);

    println!(
        "--- {} nodes in {} clusters, {} reps ---",
        args.nodes, args.clusters, args.reps
    );
    summary("join: start -> route on every other node", &mut joins);
    let how = if args.graceful { "SIGTERM" } else { "SIGKILL" };
    summary(
        &format!("leave: {how} -> route gone on every other node"),
        &mut withdrawals,
    );
    Ok(())
}

/// Seeds for a new node of cluster `c`: the mesh's first node and its cluster's first node.
fn options(mesh: &MeshLab, c: usize, deferred: bool) -> NodeOptions {
    let mut seeds = Vec::new();
    if !mesh.nodes().is_empty() {
        seeds.push(MeshLab::seed(0, 0));
    }
    if c != 0 && mesh.nodes().iter().any(|n| n.cluster == c) {
        seeds.push(MeshLab::seed(c, 0));
    }
    NodeOptions {
        seeds,
        deferred,
        ..NodeOptions::default()
    }
}

/// Waits until every monitor saw `cidr` added (or deleted) after `since`; returns the earliest
/// and the latest of those moments, as durations since `since`.
fn wait_everywhere(
    mesh: &MeshLab,
    monitors: &[RouteMonitor],
    cidr: &str,
    deleted: bool,
    since: Instant,
) -> Result<(Duration, Duration)> {
    let what = if deleted { "deleted" } else { "added" };
    let mut times = Vec::new();
    netns_tests::wait_until(DEADLINE, &format!("{cidr} {what} on every node"), || {
        times = monitors
            .iter()
            .filter_map(|m| m.first(cidr, deleted, since))
            .collect();
        Ok(times.len() == monitors.len())
    })
    .with_context(|| {
        let missing: Vec<&str> = monitors
            .iter()
            .zip(mesh.nodes())
            .filter(|(m, _)| m.first(cidr, deleted, since).is_none())
            .map(|(_, n)| n.name.as_str())
            .collect();
        format!("not {what} on {missing:?}")
    })?;
    let first = times.iter().min().map_or(Duration::ZERO, |t| *t - since);
    let last = times.iter().max().map_or(Duration::ZERO, |t| *t - since);
    Ok((first, last))
}

fn summary(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let pct = |p: f64| {
        let rank = ((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
        samples[rank - 1]
    };
    if samples.is_empty() {
        return;
    }
    let ms = |d: Duration| d.as_millis();
    println!(
        "{what}: p50 {} ms  p99 {} ms  max {} ms  (min {} ms, n={})",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(samples[samples.len() - 1]),
        ms(samples[0]),
        samples.len()
    );
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        nodes: 20,
        clusters: 0,
        reps: 10,
        graceful: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<usize> {
            it.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--nodes" => args.nodes = value("--nodes")?,
            "--clusters" => args.clusters = value("--clusters")?,
            "--reps" => args.reps = value("--reps")?,
            "--graceful" => args.graceful = true,
            "-h" | "--help" => {
                println!(
                    "mesh_converge [--nodes N (20)] [--clusters C (2-4; default 4, or 2 under 8 nodes)] [--reps R (10)] [--graceful]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if args.clusters == 0 {
        args.clusters = if args.nodes < 8 { 2 } else { 4 };
    }
    if !(2..=4).contains(&args.clusters) || args.nodes < args.clusters + 1 || args.reps == 0 {
        bail!("need 2-4 clusters, more nodes than clusters, and at least one rep");
    }
    Ok(args)
}
