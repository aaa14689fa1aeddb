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

use std::time::{Duration, Instant};

use peerd_mesh::MeshConfig;
use peerd_mesh::sim::Sim;

// Next to this file, in `converge/` (a plain `mod` would look beside it, in `examples/`, where
// cargo would take each file for an example of its own).
#[path = "converge/memory.rs"]
mod memory;
#[path = "converge/phases.rs"]
mod phases;

use memory::Memory;

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
    let mut memory = Memory::start();
    let (mut sim, seeds) = build(&args);
    memory.before_meshes();

    let phase = Instant::now();
    let order = phases::rollout_order(&sim, &seeds);
    let starts: Vec<(Duration, usize)> = order
        .iter()
        .enumerate()
        .map(|(k, &i)| (args.stagger * k as u32, i))
        .collect();
    let rolling = phases::join(&mut sim, &starts, &seeds);
    let what = format!("join, rolling ({:?} apart)", args.stagger);
    report_join(&what, &rolling, phase);
    memory.after_join(&sim);

    let phase = Instant::now();
    sim.run_for(args.settle);
    let traffic = phases::steady(&mut sim, args.steady);
    traffic.print(args.steady, args.settle, phase);

    let phase = Instant::now();
    let updated = phases::update(&mut sim, args.updates);
    report("update (new version held by all)", &updated, phase);

    let phase = Instant::now();
    let (dead, freed) = phases::kill(&mut sim, args.kills, &seeds);
    report("failure detection (dead at all)", &dead, phase);

    if !args.no_cold {
        let phase = Instant::now();
        for i in 0..sim.nodes.len() {
            sim.kill(i);
        }
        sim.run_for(Duration::from_secs(1));
        let starts: Vec<(Duration, usize)> = order.iter().map(|&i| (Duration::ZERO, i)).collect();
        let cold = phases::join(&mut sim, &starts, &seeds);
        report_join("join, cold start (all at once)", &cold, phase);
    }

    memory.print(args.nodes, freed);
    println!("wall clock: {:.1} s in all", wall.elapsed().as_secs_f64());
}

/// The simulated mesh (clusters `c0`, `c1`, ... of near-equal size) and its seeds, one every
/// `nodes / seeds` nodes; prints what it built.
fn build(args: &Args) -> (Sim, Vec<usize>) {
    let wall = Instant::now();
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
    if let Some(threads) = args.threads {
        sim.threads = threads;
    }
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
    (sim, seeds)
}

const USAGE: &str = "usage: converge [--nodes N] [--clusters C] [--seeds S] [--stagger-ms MS] \
[--settle-s S] [--steady-s S] [--updates N] [--kills N] [--threads N] [--no-cold]";

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
    threads: Option<usize>,
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
            threads: None,
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
                "--threads" => a.threads = Some(n.max(1) as usize),
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

fn report_join(what: &str, join: &phases::Join, phase: Instant) {
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
    // Nearest rank: with fewer than 100 samples, p99 is the largest.
    println!(
        "{what}: n={}  p50 {:.2} s  p99 {:.2} s  max {:.2} s  ({:.1} s wall)",
        sorted.len(),
        pct(0.50),
        pct(0.99),
        sorted[sorted.len() - 1].as_secs_f64(),
        phase.elapsed().as_secs_f64()
    );
}
