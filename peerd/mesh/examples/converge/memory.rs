//! Memory figures: process RSS, and live heap through a counting allocator (which also weighs
//! one mesh alone, by dropping it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use peerd_mesh::sim::Sim;

/// The system allocator, counting live heap bytes.
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

/// Live heap bytes now.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Memory figures taken along the run.
#[derive(Default)]
pub struct Memory {
    rss_start: u64,
    rss_before: u64,
    rss_after: u64,
    heap_before: usize,
    heap_after: usize,
    /// Records node 0 holds: count, bytes as sent, certificate chain bytes.
    held: Option<(usize, usize, usize)>,
}

impl Memory {
    /// Takes the figures at process start.
    pub fn start() -> Self {
        Self {
            rss_start: rss_kib(),
            ..Self::default()
        }
    }

    /// Takes the figures once the identities exist, before the first mesh.
    pub fn before_meshes(&mut self) {
        self.rss_before = rss_kib();
        self.heap_before = live();
    }

    /// Takes the figures once every mesh has joined.
    pub fn after_join(&mut self, sim: &Sim) {
        self.rss_after = rss_kib();
        self.heap_after = live();
        self.held = held_records(sim);
    }

    /// Prints the figures; `freed` is the heap each crashed mesh gave back.
    pub fn print(&self, nodes: usize, mut freed: Vec<usize>) {
        println!(
            "memory: RSS {} MiB at start, {} MiB before any mesh, {} MiB after the rolling join \
             converged: {:.0} KiB per node (meshes plus the simulator's share: in-flight \
             datagrams, per-node certificates and the verify cache shared by all nodes)",
            self.rss_start / 1024,
            self.rss_before / 1024,
            self.rss_after / 1024,
            self.rss_after.saturating_sub(self.rss_before) as f64 / nodes as f64
        );
        println!(
            "    live heap {} MiB before any mesh, {} MiB after: {:.0} KiB per node",
            self.heap_before >> 20,
            self.heap_after >> 20,
            self.heap_after.saturating_sub(self.heap_before) as f64 / 1024.0 / nodes as f64
        );
        if !freed.is_empty() {
            freed.sort();
            println!(
                "    one mesh alone (heap freed when a node was killed, over {} kills): median {} \
                 KiB, max {} KiB",
                freed.len(),
                freed[freed.len() / 2] / 1024,
                freed[freed.len() - 1] / 1024
            );
        }
        if let Some((count, bytes, chains)) = self.held {
            println!(
                "    node 0 holds {count} signed records: {} KiB as sent ({} KiB of it \
                 certificate chains), once more decoded",
                bytes / 1024,
                chains / 1024
            );
        }
    }
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
