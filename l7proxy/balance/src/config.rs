//! Balancer settings.

use std::time::Duration;

/// Passive outlier detection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// Consecutive failures of any kind (5xx, reset, timeout, connect) that eject an endpoint;
    /// 0 disables this trigger. Default 5.
    pub consecutive_failures: u32,
    /// Consecutive connect failures that eject an endpoint; 0 disables this trigger. Default 1:
    /// a refused connect ejects at once.
    pub consecutive_connect_failures: u32,
    /// Length of the first ejection; each further ejection doubles it. Default 1 s.
    pub base_ejection: Duration,
    /// Upper bound of one ejection, and the clean period after which the ejection count halves.
    /// Default 30 s.
    pub max_ejection: Duration,
    /// Most of a tier's endpoints that may be ejected at once for failures of any kind, in
    /// percent, rounded down but at least one; ejections for connect failures do not count
    /// against it and are not limited by it. 0 disables ejection. Default 50.
    pub max_ejected_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            consecutive_connect_failures: 1,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
            max_ejected_percent: 50,
        }
    }
}

/// Balancer settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BalancerConfig {
    /// Envoy's overprovisioning factor: a tier's health is healthy/total × this, capped at 1, so
    /// a tier keeps all its traffic while at least 1/overprovision of it is healthy. Default 1.4;
    /// a non-finite or non-positive value counts as 1.
    pub overprovision: f64,
    /// When the health of all tiers together (sum of tier healths, capped at 1) falls below
    /// this, ejected endpoints take traffic again; see the crate docs. Default 0.5; 0 disables
    /// panic except for the last resort.
    pub panic_threshold: f64,
    /// Round-trip estimate of an endpoint that has not been measured recently. Default 20 ms.
    pub default_rtt: Duration,
    /// Time constant of the peak-EWMA decay. Default 10 s.
    pub decay: Duration,
    /// Outlier detection.
    pub outlier: OutlierConfig,
    /// Only balance over endpoints in this node's cluster.
    pub local_only: bool,
    /// Only balance over endpoints in this cluster (for `cluster.svc.ns.global` names).
    pub pinned_cluster: Option<String>,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            overprovision: 1.4,
            panic_threshold: 0.5,
            default_rtt: Duration::from_millis(20),
            decay: Duration::from_secs(10),
            outlier: OutlierConfig::default(),
            local_only: false,
            pinned_cluster: None,
        }
    }
}
