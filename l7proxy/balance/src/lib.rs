//! Locality-aware load balancing for the l7proxy: which endpoint gets the next attempt.
//!
//! Sans-IO: no sockets, no clocks, no threads, no spawning, no logging. The proxy passes `now`
//! into every call, calls [`Balancer::pick`] once per attempt and [`Balancer::report`] exactly
//! once per pick with the attempt's [`Outcome`]. Randomness comes from a small seeded generator,
//! so a test with a fixed seed and fixed times is fully reproducible. Nothing here needs to run
//! on a timer: ejections end and estimates decay as a function of `now`.
//!
//! # Scope
//! With [`BalancerConfig::pinned_cluster`] only that cluster's endpoints count; with
//! [`BalancerConfig::local_only`] only this node's cluster's (both set: both must hold). Other
//! endpoints are kept for [`Balancer::explain`] but never picked and not counted anywhere.
//!
//! # Tiers and spillover (Envoy priority load)
//! Endpoints fall into [`Tier`]s by locality relative to this node. An endpoint is *healthy* when
//! it is ready and not ejected. A tier's health is healthy/total × `overprovision`, capped at 1.
//! Tier 0 takes its health as its share, the remainder flows to the next tier up to that tier's
//! health, and so on; when the healths sum to less than 1 they are normalised. Each pick samples
//! a tier by these shares.
//!
//! # Panic and the last resort
//! Readiness is authoritative (the catalog or the membership layer says the endpoint or its node
//! is gone), so a not-ready endpoint is never picked, and `pick` returns `None` when no endpoint
//! in scope is ready. Outlier ejection is only a guess from passive signals, so:
//! - **Panic.** When the health of all tiers together (sum of tier healths, capped at 1) is below
//!   `panic_threshold`, the healthy endpoints would carry well over their fair load (Envoy uses
//!   the same total-health trigger). Tier shares stay as computed from healthy endpoints, but
//!   inside every tier that gets traffic, ejections are disregarded: the tier's traffic is
//!   balanced over all its ready endpoints. Failing endpoints still get little of it, because
//!   their peak-EWMA carries the failure penalty, unless the healthy ones are saturated. Unlike
//!   Envoy's panic we never send to not-ready endpoints, and panic never moves traffic to a tier
//!   that has no healthy endpoint.
//! - **Last resort.** When no endpoint is healthy but some are ready (all of them ejected), shares
//!   are computed from ready endpoints instead, whatever `panic_threshold` is. So `pick` never
//!   returns `None` while a ready endpoint exists.
//!
//! [`Balancer::tier_shares`] sums to 1 whenever a ready endpoint is in scope, and is all zeros
//! otherwise (no traffic can flow).
//!
//! # Inside a tier
//! Power of two choices on `cost = peak_ewma_rtt × (in_flight + 1)` (Linkerd, Finagle). A sample
//! above the estimate replaces it at once; lower samples pull it down with time constant `decay`,
//! and an idle estimate drifts back to `default_rtt`, where new endpoints start. A failure counts
//! as a sample of max(latency, 10 × `default_rtt`), so a failing endpoint loses traffic before it
//! is ejected.
//!
//! # Outlier detection
//! `consecutive_failures` failures in a row (any kind), or `consecutive_connect_failures` connect
//! failures in a row, eject an endpoint for `base_ejection × 2^(ejections − 1)`, capped at
//! `max_ejection`; a success resets the run, and the ejection count halves for every clean
//! `max_ejection` since the last ejection ended. Ejections for failures of any kind are capped:
//! at most `max_ejected_percent` of a tier's endpoints are ejected at once, rounded down but at
//! least one, because 5xx answers and timeouts may come from the requests or from an overload of
//! the whole fleet. Ejections for connect failures are not capped: a refused connection is direct
//! evidence that nothing serves there, so when two of three local endpoints die, both leave and
//! the tier's share drops to 1.4 × 1/3 at once (if no endpoint is left at all, the last resort
//! keeps using them). Ejected endpoints return by themselves when the time is up, and the first
//! pick in their tier that draws a returning endpoint takes it whatever its cost (a probe), so
//! its penalised estimate cannot keep it counted healthy without ever being tried; outcomes of
//! attempts still in flight never extend an ejection.
//!
//! # Retries
//! `avoid` lists endpoints this request already tried. The retry sees the world without them:
//! they count as unavailable when shares are computed, so a retry stays in its tier while the
//! tier has other healthy endpoints (up to the tier's reduced health) and spills to the next
//! tier when it has none. Next come ready-but-ejected endpoints that were not tried, and only
//! when nothing else is ready, the avoided ones.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use peerd_types::Locality;

mod balancer;
mod config;
mod ewma;
mod explain;
mod outlier;
mod rng;
mod shares;
mod tier;

pub use balancer::Balancer;
pub use config::{BalancerConfig, OutlierConfig};
pub use tier::Tier;

/// One endpoint as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Address the proxy connects to; identifies the endpoint across [`Balancer::set_endpoints`].
    pub addr: SocketAddr,
    /// Where the endpoint runs.
    pub locality: Locality,
    /// Catalog readiness and the endpoint's node alive.
    pub ready: bool,
}

/// The result of one attempt against an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The attempt succeeded.
    Success {
        /// Time from sending the request to the response head (or connect, for plain TCP).
        latency: Duration,
    },
    /// The attempt failed.
    Failure {
        /// How it failed.
        kind: FailureKind,
        /// Time until the failure was seen.
        latency: Duration,
    },
}

/// How an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The connection was refused or could not be set up.
    Connect,
    /// The connection was reset mid-request.
    Reset,
    /// No answer in time.
    Timeout,
    /// The endpoint answered with a 5xx status.
    Status5xx,
}

/// The endpoint chosen for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Where to send the attempt.
    pub addr: SocketAddr,
    /// The endpoint's tier.
    pub tier: Tier,
}

/// One endpoint's state, for `peerd explain`.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointExplain {
    /// Endpoint address.
    pub addr: SocketAddr,
    /// Where it runs.
    pub locality: Locality,
    /// Its tier from this node.
    pub tier: Tier,
    /// Catalog readiness and node alive.
    pub ready: bool,
    /// End of the current ejection, if ejected now.
    pub ejected_until: Option<Instant>,
    /// Current peak-EWMA round-trip estimate.
    pub ewma: Duration,
    /// Attempts picked and not yet reported.
    pub in_flight: u32,
    /// Share of all traffic the endpoint's tier gets now (0 for endpoints out of scope).
    pub tier_share: f64,
    /// Why the endpoint gets, or does not get, traffic.
    pub reason: String,
}
