//! What `peerd explain NAME` shows: per port, how traffic splits across locality tiers and the
//! balancer's view of every endpoint. Plain serde data.

use std::net::SocketAddr;
use std::time::Instant;

use l7proxy_balance::EndpointExplain;
use peerd_types::Locality;
use serde::{Deserialize, Serialize};

use crate::route::{Route, tier_name};

/// A global name as the proxy serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The global name.
    pub name: String,
    /// One entry per listening port, by port number.
    pub ports: Vec<PortExplanation>,
}

/// One listener of a name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortExplanation {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// The port's name.
    pub port_name: String,
    /// `http`, `http2`, `grpc` or `tcp`.
    pub protocol: String,
    /// Share of new requests each tier gets now.
    pub tier_shares: TierShares,
    /// Every endpoint, as the balancer sees it.
    pub endpoints: Vec<EndpointExplanation>,
}

/// Traffic shares per locality tier, summing to 1 (or 0 with no usable endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TierShares {
    /// Same node.
    pub same_node: f64,
    /// Same zone.
    pub same_zone: f64,
    /// Same region.
    pub same_region: f64,
    /// Everywhere else.
    pub remote: f64,
}

/// One endpoint as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointExplanation {
    /// Address the proxy connects to.
    pub addr: SocketAddr,
    /// Where it runs.
    pub locality: Locality,
    /// `same-node`, `same-zone`, `same-region` or `remote`.
    pub tier: String,
    /// Catalog readiness.
    pub ready: bool,
    /// Time left in the current ejection, in milliseconds, if ejected.
    pub ejected_for_ms: Option<u64>,
    /// Peak-EWMA round-trip estimate, in milliseconds.
    pub rtt_ewma_ms: f64,
    /// Requests in flight to it.
    pub in_flight: u32,
    /// Share of traffic its tier gets.
    pub tier_share: f64,
    /// Why it gets (or does not get) traffic.
    pub reason: String,
}

impl From<[f64; 4]> for TierShares {
    fn from(s: [f64; 4]) -> Self {
        Self {
            same_node: s[0],
            same_zone: s[1],
            same_region: s[2],
            remote: s[3],
        }
    }
}

/// One listener's explanation.
pub(crate) fn port(listen: SocketAddr, route: &Route) -> PortExplanation {
    let now = Instant::now();
    let (shares, endpoints) = route.with_balancer(|b| (b.tier_shares(now), b.explain(now)));
    PortExplanation {
        listen,
        port_name: route.port.name.clone(),
        protocol: route.port.protocol.as_str().to_owned(),
        tier_shares: shares.into(),
        endpoints: endpoints.into_iter().map(|e| endpoint(e, now)).collect(),
    }
}

fn endpoint(e: EndpointExplain, now: Instant) -> EndpointExplanation {
    EndpointExplanation {
        addr: e.addr,
        tier: tier_name(e.tier).to_owned(),
        ready: e.ready,
        ejected_for_ms: e
            .ejected_until
            .filter(|&until| until > now)
            .map(|until| (until - now).as_millis() as u64),
        rtt_ewma_ms: e.ewma.as_secs_f64() * 1000.0,
        in_flight: e.in_flight,
        tier_share: e.tier_share,
        reason: e.reason,
        locality: e.locality,
    }
}
