//! The state behind one listener (one global name on one port): its balancer, policy, retry
//! budget, upstream pools and metric handles. Everything here survives configuration updates
//! that keep the name and protocol.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use foldhash::fast;
use l7proxy_balance::{Balancer, EndpointInfo, FailureKind, Outcome, Tier};
use peerd_types::{Locality, ServicePort};
use prometheus_client::metrics::counter::Counter;

use crate::budget::RetryBudget;
use crate::config::Policy;
use crate::dial::Dialer;
use crate::metrics::{Metrics, ServiceMetrics};
use crate::pool::Upstream;
use crate::sync::{lock, read, write};

/// One listener's routing state.
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    pub(crate) port: ServicePort,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) metrics: ServiceMetrics,
    local: Locality,
    balancer: Mutex<Balancer>,
    policy: RwLock<Arc<Policy>>,
    budget: Mutex<RetryBudget>,
    /// Endpoint address → cluster, for metric labels.
    clusters: RwLock<HashMap<SocketAddr, Arc<str>, fast::RandomState>>,
    /// `requests_total` counters by endpoint (`None` when the proxy answered) and status,
    /// resolved once each: a request then costs one cheap hash instead of hashing its labels'
    /// strings.
    requests: RwLock<HashMap<(Option<SocketAddr>, u16), Counter, fast::RandomState>>,
    /// The ejection each endpoint was last seen in, so that each is counted once.
    ejections: Mutex<HashMap<SocketAddr, Instant>>,
}

impl Route {
    pub(crate) fn new(
        name: &str,
        port: ServicePort,
        local: Locality,
        dialer: Arc<dyn Dialer>,
        metrics: &Metrics,
    ) -> Self {
        let policy = Policy::default();
        let balancer = Balancer::new(local.clone(), policy.balancer_config(), seed(name, &port));
        let now = Instant::now();
        let metrics = metrics.service(name);
        Self {
            name: Arc::from(name),
            port,
            upstream: Arc::new(Upstream::new(dialer, metrics.clone())),
            metrics,
            balancer: Mutex::new(balancer),
            local,
            budget: Mutex::new(RetryBudget::new(
                policy.retry_budget_ratio,
                policy.retry_budget_min_per_sec,
                now,
            )),
            policy: RwLock::new(Arc::new(policy)),
            clusters: RwLock::default(),
            requests: RwLock::default(),
            ejections: Mutex::default(),
        }
    }

    /// Applies a new endpoint set and policy. Balancer state (latency estimates, ejections) is
    /// kept unless the policy changes what the balancer may pick from.
    pub(crate) fn apply(&self, endpoints: Vec<EndpointInfo>, policy: Policy) {
        let now = Instant::now();
        let clusters: HashMap<SocketAddr, Arc<str>, fast::RandomState> = endpoints
            .iter()
            .map(|e| (e.addr, Arc::from(e.locality.cluster.as_str())))
            .collect();
        self.upstream.retain(|addr| clusters.contains_key(addr));
        lock(&self.ejections).retain(|addr, _| clusters.contains_key(addr));
        {
            let mut balancer = lock(&self.balancer);
            if policy.balancer_config() != self.policy().balancer_config() {
                *balancer = Balancer::new(
                    self.local.clone(),
                    policy.balancer_config(),
                    seed(&self.name, &self.port),
                );
            }
            balancer.set_endpoints(endpoints, now);
        }
        *write(&self.clusters) = clusters;
        // Clusters may have changed: resolve the counters again.
        write(&self.requests).clear();
        lock(&self.budget).set_limits(policy.retry_budget_ratio, policy.retry_budget_min_per_sec);
        *write(&self.policy) = Arc::new(policy);
    }

    pub(crate) fn policy(&self) -> Arc<Policy> {
        read(&self.policy).clone()
    }

    /// Picks an endpoint for one attempt; the returned guard reports its outcome.
    pub(crate) fn pick(&self, avoid: &[SocketAddr]) -> Option<Attempt<'_>> {
        let now = Instant::now();
        let pick = lock(&self.balancer).pick(now, avoid)?;
        Some(Attempt {
            route: self,
            addr: pick.addr,
            tier: pick.tier,
            started: now,
            reported: false,
        })
    }

    /// The cluster label of an endpoint.
    pub(crate) fn cluster(&self, addr: &SocketAddr) -> Arc<str> {
        read(&self.clusters)
            .get(addr)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }

    /// Counts an answered request in `requests_total` and `request_duration_seconds`;
    /// `upstream` is the endpoint that answered, `None` when the proxy did.
    pub(crate) fn count_request(&self, upstream: Option<SocketAddr>, code: u16, elapsed: Duration) {
        self.metrics.duration(elapsed);
        let key = (upstream, code);
        if let Some(counter) = read(&self.requests).get(&key) {
            counter.inc();
            return;
        }
        let cluster = upstream.map_or_else(|| Arc::from(""), |addr| self.cluster(&addr));
        let counter = self.metrics.requests(&cluster, code);
        counter.inc();
        write(&self.requests).insert(key, counter);
    }

    /// Counts a request that arrived at `now` against the retry budget.
    pub(crate) fn deposit(&self, now: Instant) {
        lock(&self.budget).deposit(now);
    }

    /// Takes a retry from the budget; counts it in `retries_total` when granted.
    pub(crate) fn withdraw_retry(&self) -> bool {
        let granted = lock(&self.budget).try_withdraw(Instant::now());
        if granted {
            self.metrics.retry();
        }
        granted
    }

    /// Runs `f` on the balancer (for `explain`).
    pub(crate) fn with_balancer<T>(&self, f: impl FnOnce(&Balancer) -> T) -> T {
        f(&lock(&self.balancer))
    }

    fn report(&self, addr: SocketAddr, outcome: Outcome, now: Instant) {
        let mut balancer = lock(&self.balancer);
        balancer.report(addr, outcome, now);
        if matches!(outcome, Outcome::Failure { .. })
            && let Some(until) = balancer.ejected_until(addr, now)
        {
            drop(balancer);
            let mut seen = lock(&self.ejections);
            if seen.get(&addr) != Some(&until) {
                seen.insert(addr, until);
                self.metrics.ejection();
                tracing::debug!(service = %self.name, %addr, "endpoint ejected");
            }
        }
    }
}

/// One attempt against one endpoint. Its outcome is reported to the balancer exactly once:
/// explicitly, or when dropped (the client went away: no evidence against the endpoint).
pub(crate) struct Attempt<'a> {
    route: &'a Route,
    pub(crate) addr: SocketAddr,
    pub(crate) tier: Tier,
    started: Instant,
    reported: bool,
}

impl Attempt<'_> {
    /// When the endpoint was picked.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    pub(crate) fn succeeded(mut self) {
        self.reported = true;
        self.report(|latency| Outcome::Success { latency });
    }

    pub(crate) fn failed(mut self, kind: FailureKind) {
        self.reported = true;
        if kind == FailureKind::Connect {
            self.route.metrics.connect_failure();
        }
        self.report(|latency| Outcome::Failure { kind, latency });
    }

    /// Reports the outcome `of` the attempt's latency, reading the clock once.
    fn report(&self, of: impl FnOnce(Duration) -> Outcome) {
        let now = Instant::now();
        let latency = now.saturating_duration_since(self.started);
        self.route.report(self.addr, of(latency), now);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.report(|latency| Outcome::Success { latency });
        }
    }
}

/// A balancer's random seed, different per proxy run and per route.
fn seed(name: &str, port: &ServicePort) -> u64 {
    std::collections::hash_map::RandomState::new().hash_one((name, port.port))
}

/// The tier's name in logs and `explain`.
pub(crate) fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::SameNode => "same-node",
        Tier::SameZone => "same-zone",
        Tier::SameRegion => "same-region",
        Tier::Remote => "remote",
    }
}
