//! One window of the simulation: the nodes that have work in it run side by side on all cores.
//!
//! This is conservative parallel discrete-event simulation with the network latency as
//! lookahead: whatever a node sends at time `t` arrives at `t + latency`, so the events of
//! different nodes inside `[now, now + latency)` cannot affect one another, and each node can
//! run its own events of the window in order, independently of the rest.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::mesh::Mesh;

/// A datagram delivered in this window: arrival, sequence number, sender address, bytes.
pub(super) type Arrival = (Instant, u64, SocketAddr, Vec<u8>);

/// The window's bounds and the clock mapping.
pub(super) struct Window {
    /// Its start (virtual time).
    pub now: Instant,
    /// Events strictly before this run in the window.
    pub before: Instant,
    /// Events after this are left for the next run (the end of `Sim::run_for`).
    pub end: Instant,
    /// One-way latency of every datagram.
    pub latency: Duration,
    /// Virtual and wall time at the start of the simulation.
    pub origin: (Instant, SystemTime),
}

impl Window {
    /// Whether an event at `t` belongs to this window (with no latency, only events at `now`).
    pub fn holds(&self, t: Instant) -> bool {
        t <= self.end && (t < self.before || t == self.now)
    }

    fn wall(&self, t: Instant) -> SystemTime {
        self.origin.1 + (t - self.origin.0)
    }
}

/// One node's work in a window: its datagrams and due timers, and what it sent.
pub(super) struct Job {
    /// The node's index.
    pub node: usize,
    /// Its mesh, taken out of the simulation for the window.
    pub mesh: Mesh,
    /// Datagrams to deliver to it in this window.
    pub arrivals: Vec<Arrival>,
    /// What it sent: arrival time at the destination, destination, bytes.
    pub sent: Vec<(Instant, SocketAddr, Vec<u8>)>,
    /// Datagrams delivered to it and their bytes.
    pub delivered: (u64, u64),
}

impl Job {
    /// Runs the node's events of the window in time order (datagrams before timers due at the
    /// same instant, as a sequential run would).
    fn run(&mut self, window: &Window) {
        self.arrivals
            .sort_unstable_by_key(|(at, seq, ..)| (*at, *seq));
        let mut arrivals = std::mem::take(&mut self.arrivals).into_iter().peekable();
        let mut t = window.now;
        loop {
            let timer = self.mesh.poll_timeout().max(t);
            match arrivals.next_if(|(at, ..)| *at <= timer) {
                Some((at, _, from, datagram)) => {
                    t = t.max(at);
                    self.delivered.0 += 1;
                    self.delivered.1 += datagram.len() as u64;
                    self.mesh
                        .handle_datagram(from, &datagram, t, window.wall(t));
                }
                None if window.holds(timer) => {
                    t = timer;
                    self.mesh.handle_timeout(t, window.wall(t));
                }
                None => break,
            }
            while let Some((to, datagram)) = self.mesh.poll_transmit() {
                self.sent.push((t + window.latency, to, datagram));
            }
        }
    }
}

/// Runs every job of a window, spread over the available cores (each thread takes the next
/// job left, so that a few busy nodes do not hold one thread up).
pub(super) fn run(jobs: &mut [Job], window: &Window, threads: usize) {
    // Starting threads costs tens of microseconds: not worth it for a handful of events.
    let events: usize = jobs.iter().map(|j| j.arrivals.len() + 1).sum();
    if threads < 2 || jobs.len() < 2 || events < 128 {
        for job in jobs {
            job.run(window);
        }
        return;
    }
    let jobs: Vec<Mutex<&mut Job>> = jobs.iter_mut().map(Mutex::new).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        while let Some(job) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
            job.lock().unwrap_or_else(|e| e.into_inner()).run(window);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..threads.min(jobs.len()) {
            s.spawn(work);
        }
        work();
    });
}
