//! The balancer: endpoint set, picks and reports. See the crate docs for the algorithm.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::ewma::PeakEwma;
use crate::outlier::{self, Outlier};
use crate::rng::Rng;
use crate::shares::{self, Basis, TierCounts};
use crate::{BalancerConfig, EndpointExplain, EndpointInfo, Locality, Outcome, Pick, Tier};

mod choose;

/// A failure counts as a latency sample of at least this many default RTTs.
const FAILURE_PENALTY: u32 = 10;

/// Locality-aware balancer over one service's endpoints.
#[derive(Debug, Clone)]
pub struct Balancer {
    local: Locality,
    config: BalancerConfig,
    rng: Rng,
    /// Sorted by address, so picks do not depend on the catalog's order.
    endpoints: Vec<Endpoint>,
    /// Indexes into `endpoints` of the endpoints in scope, per tier.
    tiers: [Vec<usize>; 4],
    /// Per-tier counts, valid from `at` until the next ejection ends.
    cache: Option<CountsCache>,
}

#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) info: EndpointInfo,
    pub(crate) tier: Tier,
    pub(crate) in_scope: bool,
    pub(crate) ewma: PeakEwma,
    pub(crate) in_flight: u32,
    pub(crate) outlier: Outlier,
}

#[derive(Debug, Clone)]
struct CountsCache {
    at: Instant,
    until: Option<Instant>,
    counts: [TierCounts; 4],
}

impl Balancer {
    /// A balancer for a proxy at `local`; `seed` makes its random choices reproducible.
    pub fn new(local: Locality, config: BalancerConfig, seed: u64) -> Self {
        Self {
            local,
            config,
            rng: Rng::new(seed),
            endpoints: Vec::new(),
            tiers: Default::default(),
            cache: None,
        }
    }

    /// Replaces the endpoint set; endpoints that stay (same address) keep their EWMA, in-flight
    /// and ejection state, and take the new locality and readiness. Of duplicate addresses the
    /// first wins.
    pub fn set_endpoints(&mut self, mut endpoints: Vec<EndpointInfo>, now: Instant) {
        endpoints.sort_by_key(|e| e.addr); // stable: the first of duplicates stays first
        endpoints.dedup_by_key(|e| e.addr);
        let mut old = std::mem::take(&mut self.endpoints).into_iter().peekable();
        let mut next = Vec::with_capacity(endpoints.len());
        for info in endpoints {
            while old.next_if(|o| o.info.addr < info.addr).is_some() {}
            let kept = old.next_if(|o| o.info.addr == info.addr);
            let tier = Tier::of(&self.local, &info.locality);
            let in_scope = self.in_scope(&info.locality);
            next.push(match kept {
                Some(o) => Endpoint {
                    info,
                    tier,
                    in_scope,
                    ..o
                },
                None => Endpoint {
                    info,
                    tier,
                    in_scope,
                    ewma: PeakEwma::new(self.config.default_rtt, now),
                    in_flight: 0,
                    outlier: Outlier::default(),
                },
            });
        }
        self.endpoints = next;
        self.tiers = Default::default();
        for (i, e) in self
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.in_scope)
        {
            self.tiers[e.tier.index()].push(i);
        }
        self.cache = None;
    }

    /// Picks an endpoint for one attempt, skipping `avoid` (endpoints already tried by this
    /// request) when possible; counts it in flight. `None` only when no endpoint in scope is
    /// ready.
    pub fn pick(&mut self, now: Instant, avoid: &[SocketAddr]) -> Option<Pick> {
        let fleet = self.counts_cached(now);
        let panic = self.in_panic(&fleet);
        let view = self.retry_view(fleet, avoid, now);
        let elsewhere = self.other_localities(view, avoid);
        let overprovision = self.config.overprovision;
        // A retry goes to another locality when one can take it (the endpoints of a failed one
        // often fail together: a node or zone going down), else to another endpoint, else to
        // anything.
        let (plan, counts, avoid) = match shares::plan(&elsewhere, overprovision) {
            Some(plan) => (plan, elsewhere, avoid),
            None => match shares::plan(&view, overprovision) {
                Some(plan) => (plan, view, avoid),
                None => (shares::plan(&fleet, overprovision)?, fleet, &[][..]),
            },
        };
        let tier = choose::tier(&mut self.rng, &plan.shares);
        let any_ready = plan.basis == Basis::Ready || panic;
        let candidates = if any_ready {
            counts[tier].ready
        } else {
            counts[tier].healthy
        };
        let endpoints = &self.endpoints;
        let eligible = |i: usize| {
            let e = &endpoints[i];
            e.info.ready
                && (any_ready || !e.outlier.is_ejected(now))
                && !avoid.contains(&e.info.addr)
        };
        let (default_rtt, decay) = (self.config.default_rtt, self.config.decay);
        let cost = |i: usize| {
            let e = &endpoints[i];
            if e.outlier.awaits_probe(now) {
                return 0.0;
            }
            e.ewma.at(now, default_rtt, decay) * f64::from(e.in_flight.saturating_add(1))
        };
        let i = choose::p2c(
            &mut self.rng,
            &self.tiers[tier],
            candidates as usize,
            eligible,
            cost,
        )?;
        let e = &mut self.endpoints[i];
        e.in_flight = e.in_flight.saturating_add(1);
        e.outlier.picked(now);
        Some(Pick {
            addr: e.info.addr,
            tier: e.tier,
        })
    }

    /// Reports the outcome of an attempt `pick` returned: decrements in flight, updates the
    /// peak-EWMA and outlier state. Reports for unknown addresses are ignored.
    pub fn report(&mut self, addr: SocketAddr, outcome: Outcome, now: Instant) {
        let Some(i) = self.find(addr) else { return };
        let config = &self.config;
        let e = &mut self.endpoints[i];
        e.in_flight = e.in_flight.saturating_sub(1);
        let sample = match outcome {
            Outcome::Success { latency } => latency,
            Outcome::Failure { latency, .. } => {
                latency.max(config.default_rtt.saturating_mul(FAILURE_PENALTY))
            }
        };
        e.ewma
            .observe(sample, now, config.default_rtt, config.decay);
        let Some(cause) = e.outlier.record(outcome, now, &config.outlier) else {
            return;
        };
        if !e.in_scope {
            return;
        }
        let tier = e.tier.index();
        let ejected = self.tiers[tier]
            .iter()
            .filter(|&&j| self.endpoints[j].outlier.is_ejected(now))
            .count();
        let allowed = outlier::max_ejected(self.tiers[tier].len() as u32, &self.config.outlier);
        let e = &mut self.endpoints[i];
        // A refused connection is certain; only ejections on ambiguous signals are capped.
        let uncapped = matches!(cause, outlier::Cause::Connect(_)) && allowed > 0;
        if uncapped || (ejected as u32) < allowed {
            e.outlier.eject(cause, now, &self.config.outlier);
            self.cache = None;
        } else {
            e.outlier.hold(cause);
        }
    }

    /// Share of traffic each tier gets now (after spillover), in tier order. Sums to 1 when any
    /// endpoint in scope is ready; all zeros otherwise.
    pub fn tier_shares(&self, now: Instant) -> [f64; 4] {
        let counts = self.counts(now).0;
        shares::plan(&counts, self.config.overprovision).map_or([0.0; 4], |p| p.shares)
    }

    /// One entry per endpoint (in scope or not) for `peerd explain`, ordered by scope, tier and
    /// address.
    pub fn explain(&self, now: Instant) -> Vec<EndpointExplain> {
        let counts = self.counts(now).0;
        let ctx = crate::explain::Context {
            counts,
            plan: shares::plan(&counts, self.config.overprovision),
            panic: self.in_panic(&counts),
            total_health: shares::total_health(&counts, self.config.overprovision),
            local: &self.local,
            config: &self.config,
            now,
        };
        let mut rows: Vec<EndpointExplain> = self.endpoints.iter().map(|e| ctx.row(e)).collect();
        let out_of_scope = |r: &EndpointExplain| !self.in_scope(&r.locality);
        rows.sort_by(|a, b| {
            (out_of_scope(a), a.tier, a.addr).cmp(&(out_of_scope(b), b.tier, b.addr))
        });
        rows
    }

    /// End of `addr`'s current ejection, if it is ejected at `now`: a cheap check after a
    /// failed attempt (each ejection has its own end, so it also tells ejections apart).
    pub fn ejected_until(&self, addr: SocketAddr, now: Instant) -> Option<Instant> {
        self.find(addr)
            .and_then(|i| self.endpoints[i].outlier.ejected_until(now))
    }

    /// Number of endpoints in scope (ready or not).
    pub fn len(&self) -> usize {
        self.tiers.iter().map(Vec::len).sum()
    }

    /// Whether no endpoint is in scope.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether endpoints at `locality` count, given `local_only` and `pinned_cluster`.
    fn in_scope(&self, locality: &Locality) -> bool {
        (!self.config.local_only || locality.cluster == self.local.cluster)
            && self
                .config
                .pinned_cluster
                .as_ref()
                .is_none_or(|c| *c == locality.cluster)
    }

    /// The counts as a retry sees them: endpoints it already tried count as unavailable.
    fn retry_view(
        &self,
        mut counts: [TierCounts; 4],
        avoid: &[SocketAddr],
        now: Instant,
    ) -> [TierCounts; 4] {
        for (k, addr) in avoid.iter().enumerate() {
            if avoid[..k].contains(addr) {
                continue; // counted already
            }
            let Some(e) = self.find(*addr).map(|i| &self.endpoints[i]) else {
                continue;
            };
            if e.in_scope {
                let c = &mut counts[e.tier.index()];
                c.ready -= u32::from(e.info.ready);
                c.healthy -= u32::from(e.info.ready && !e.outlier.is_ejected(now));
            }
        }
        counts
    }

    /// `counts` with every tier that holds an endpoint of `avoid` emptied.
    fn other_localities(
        &self,
        mut counts: [TierCounts; 4],
        avoid: &[SocketAddr],
    ) -> [TierCounts; 4] {
        for addr in avoid {
            if let Some(e) = self.find(*addr).map(|i| &self.endpoints[i])
                && e.in_scope
            {
                let c = &mut counts[e.tier.index()];
                c.ready = 0;
                c.healthy = 0;
            }
        }
        counts
    }

    fn in_panic(&self, counts: &[TierCounts; 4]) -> bool {
        shares::total_health(counts, self.config.overprovision) < self.config.panic_threshold
    }

    fn find(&self, addr: SocketAddr) -> Option<usize> {
        self.endpoints
            .binary_search_by_key(&addr, |e| e.info.addr)
            .ok()
    }

    /// Per-tier counts at `now`, from the cache while no ejection has ended since.
    fn counts_cached(&mut self, now: Instant) -> [TierCounts; 4] {
        if let Some(c) = &self.cache
            && c.at <= now
            && c.until.is_none_or(|until| now < until)
        {
            return c.counts;
        }
        let (counts, until) = self.counts(now);
        self.cache = Some(CountsCache {
            at: now,
            until,
            counts,
        });
        counts
    }

    /// Per-tier counts at `now`, and when the next ejection ends.
    fn counts(&self, now: Instant) -> ([TierCounts; 4], Option<Instant>) {
        let mut counts = [TierCounts::default(); 4];
        let mut until: Option<Instant> = None;
        for e in self.endpoints.iter().filter(|e| e.in_scope) {
            let c = &mut counts[e.tier.index()];
            c.total += 1;
            let ejected_until = e.outlier.ejected_until(now);
            if let Some(t) = ejected_until {
                until = Some(until.map_or(t, |u| u.min(t)));
            }
            if e.info.ready {
                c.ready += 1;
                c.healthy += u32::from(ejected_until.is_none());
            }
        }
        (counts, until)
    }
}

/// The estimate as a `Duration`, for explanations.
pub(crate) fn ewma_duration(e: &Endpoint, config: &BalancerConfig, now: Instant) -> Duration {
    Duration::from_nanos(e.ewma.at(now, config.default_rtt, config.decay) as u64)
}

#[cfg(test)]
mod tests;
