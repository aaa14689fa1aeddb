//! The reasons `peerd explain` prints per endpoint.

use std::fmt::Write;
use std::time::Instant;

use crate::balancer::{Endpoint, ewma_duration};
use crate::outlier::{human, max_ejected};
use crate::shares::{Basis, Plan, TierCounts};
use crate::{BalancerConfig, EndpointExplain, Locality, Tier};

/// Balancer-wide state the reasons refer to.
pub(crate) struct Context<'a> {
    pub(crate) counts: [TierCounts; 4],
    pub(crate) plan: Option<Plan>,
    pub(crate) panic: bool,
    pub(crate) total_health: f64,
    pub(crate) local: &'a Locality,
    pub(crate) config: &'a BalancerConfig,
    pub(crate) now: Instant,
}

impl Context<'_> {
    /// One endpoint's row.
    pub(crate) fn row(&self, e: &Endpoint) -> EndpointExplain {
        let share = match (&self.plan, e.in_scope) {
            (Some(plan), true) => plan.shares[e.tier.index()],
            _ => 0.0,
        };
        EndpointExplain {
            addr: e.info.addr,
            locality: e.info.locality.clone(),
            tier: e.tier,
            ready: e.info.ready,
            ejected_until: e.outlier.ejected_until(self.now),
            ewma: ewma_duration(e, self.config, self.now),
            in_flight: e.in_flight,
            tier_share: share,
            reason: self.reason(e, share),
        }
    }

    fn reason(&self, e: &Endpoint, share: f64) -> String {
        if !e.in_scope {
            return self.out_of_scope(&e.info.locality);
        }
        if !e.info.ready {
            return "not ready".into();
        }
        let mut reason = match e.outlier.ejected_until(self.now) {
            Some(until) => self.ejected(e, until, share),
            None => self.healthy(e.tier, share),
        };
        if let Some(cause) = e.outlier.held() {
            let cap = max_ejected(self.counts[e.tier.index()].total, &self.config.outlier);
            let _ = write!(
                reason,
                "; {cause}, not ejected: {cap} of the tier already ejected (cap)"
            );
        } else if e.outlier.consecutive() > 0 {
            let _ = write!(reason, "; {} consecutive failures", e.outlier.consecutive());
        }
        reason
    }

    fn out_of_scope(&self, locality: &Locality) -> String {
        match &self.config.pinned_cluster {
            Some(pinned) if *pinned != locality.cluster => {
                format!(
                    "not used: cluster {:?}, name pinned to cluster {pinned:?}",
                    locality.cluster
                )
            }
            _ => format!(
                "not used: cluster {:?}, local_only to {:?}",
                locality.cluster, self.local.cluster
            ),
        }
    }

    fn ejected(&self, e: &Endpoint, until: Instant, share: f64) -> String {
        let mut s = format!("ejected for {}", human(until - self.now));
        if let Some(cause) = e.outlier.cause() {
            let _ = write!(s, " after {cause}");
        }
        let n = e.outlier.ejections_at(self.now, &self.config.outlier);
        let _ = write!(s, " (ejection {n})");
        match self.plan {
            Some(Plan {
                basis: Basis::Ready,
                ..
            }) if share > 0.0 => {
                s.push_str("; used as last resort: no endpoint is healthy");
            }
            Some(_) if self.panic && share > 0.0 => {
                let _ = write!(
                    s,
                    "; used anyway: panic, total health {:.0}% below {:.0}%",
                    self.total_health * 100.0,
                    self.config.panic_threshold * 100.0
                );
            }
            _ => {}
        }
        s
    }

    fn healthy(&self, tier: Tier, share: f64) -> String {
        let above: Vec<String> = Tier::ALL[..tier.index()]
            .iter()
            .map(|t| (t, self.counts[t.index()]))
            .filter(|(_, c)| c.total > 0)
            .map(|(t, c)| format!("{t} has {}/{} healthy", c.healthy, c.total))
            .collect();
        let pct = share * 100.0;
        if share <= 0.0 {
            "healthy, standby: preferred tiers take all traffic".into()
        } else if !above.is_empty() {
            format!("spillover ({pct:.1}% of traffic): {}", above.join(", "))
        } else if share < 1.0 {
            let c = self.counts[tier.index()];
            format!(
                "healthy; tier keeps {pct:.1}% ({}/{} healthy), rest spills over",
                c.healthy, c.total
            )
        } else {
            "healthy".into()
        }
    }
}
