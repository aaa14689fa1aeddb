//! Query counters, shared by the zone handlers and the socket loops.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// How many queries the server handled, by outcome, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DnsStats {
    /// `.global` queries answered with records.
    pub global_answers: u64,
    /// `.global` queries for a name that exists but has no record of the asked type.
    pub global_nodata: u64,
    /// `.global` queries for a name that does not exist (never forwarded).
    pub global_nxdomain: u64,
    /// Queries for other names handed to the upstream resolvers (cache hits included).
    pub forwarded: u64,
    /// Forwarded queries that failed: upstream timeout or error, or no upstream configured.
    pub forward_errors: u64,
    /// Packets that are not a well-formed query: answered FORMERR, or dropped when there is no
    /// header to answer to (or the packet is itself a response).
    pub malformed: u64,
    /// Queries refused: recursion not desired for a forwarded name, or a class other than IN.
    pub refused: u64,
    /// Queries or connections dropped because too many were already in flight.
    pub dropped: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub global_answers: AtomicU64,
    pub global_nodata: AtomicU64,
    pub global_nxdomain: AtomicU64,
    pub forwarded: AtomicU64,
    pub forward_errors: AtomicU64,
    pub malformed: AtomicU64,
    pub refused: AtomicU64,
    pub dropped: AtomicU64,
}

/// Adds one; counters are statistics, so no ordering with other memory is needed.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub fn snapshot(&self) -> DnsStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsStats {
            global_answers: get(&self.global_answers),
            global_nodata: get(&self.global_nodata),
            global_nxdomain: get(&self.global_nxdomain),
            forwarded: get(&self.forwarded),
            forward_errors: get(&self.forward_errors),
            malformed: get(&self.malformed),
            refused: get(&self.refused),
            dropped: get(&self.dropped),
        }
    }
}
