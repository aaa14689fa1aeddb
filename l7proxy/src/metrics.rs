//! Prometheus metrics (prometheus-client), labelled by global name.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: Arc<str>,
    cluster: Arc<str>,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    service: Arc<str>,
    cluster: Arc<str>,
}

type HistogramFamily = Family<ServiceLabels, Histogram, fn() -> Histogram>;

/// Latency buckets in seconds, 0.5 ms to 30 s.
const BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn new_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Every metric of one proxy.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    retries: Family<ServiceLabels, Counter>,
    ejections: Family<ServiceLabels, Counter>,
    active: Family<ServiceLabels, Gauge>,
    connect_failures: Family<ServiceLabels, Counter>,
    tcp_connections: Family<ConnectionLabels, Counter>,
    upstream_h2: Family<ServiceLabels, Gauge>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let requests = Family::default();
        let durations = HistogramFamily::new_with_constructor(new_histogram as fn() -> Histogram);
        let retries = Family::default();
        let ejections = Family::default();
        let active = Family::default();
        let connect_failures = Family::default();
        let tcp_connections = Family::default();
        let upstream_h2 = Family::default();
        let mut registry = Registry::default();
        registry.register(
            "requests",
            "HTTP requests answered, by endpoint cluster (empty when the proxy answered) and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from the request to the response headers",
            durations.clone(),
        );
        registry.register(
            "retries",
            "Attempts sent again after a failed one",
            retries.clone(),
        );
        registry.register(
            "ejections",
            "Endpoints ejected by outlier detection",
            ejections.clone(),
        );
        registry.register(
            "active_connections",
            "Open client connections",
            active.clone(),
        );
        registry.register(
            "upstream_connect_failures",
            "Failed connection attempts to endpoints",
            connect_failures.clone(),
        );
        registry.register(
            "tcp_connections",
            "Opaque TCP connections forwarded, by endpoint cluster",
            tcp_connections.clone(),
        );
        registry.register(
            "upstream_http2_connections",
            "Open HTTP/2 connections to endpoints (more than one per endpoint while one is at the endpoint's stream limit)",
            upstream_h2.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            retries,
            ejections,
            active,
            connect_failures,
            tcp_connections,
            upstream_h2,
        }
    }

    /// The handles of one service.
    pub(crate) fn service(&self, name: &str) -> ServiceMetrics {
        let service: Arc<str> = Arc::from(name);
        let labels = ServiceLabels {
            service: service.clone(),
        };
        ServiceMetrics {
            duration: self.durations.get_or_create_owned(&labels),
            retries: self.retries.get_or_create_owned(&labels),
            ejections: self.ejections.get_or_create_owned(&labels),
            active: self.active.get_or_create_owned(&labels),
            connect_failures: self.connect_failures.get_or_create_owned(&labels),
            upstream_h2: self.upstream_h2.get_or_create_owned(&labels),
            requests: self.requests.clone(),
            tcp_connections: self.tcp_connections.clone(),
            service,
        }
    }

    /// Appends the Prometheus text exposition (without the OpenMetrics `# EOF` line, so that
    /// the caller can join several registries).
    pub(crate) fn encode(&self, out: &mut String) {
        if let Err(e) = prometheus_client::encoding::text::encode_registry(out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode proxy metrics");
        }
    }
}

/// One service's metric handles, resolved once so that requests only touch atomics (and, the
/// first time an endpoint answers with a status, the `requests_total` family's map).
#[derive(Debug, Clone)]
pub(crate) struct ServiceMetrics {
    service: Arc<str>,
    requests: Family<RequestLabels, Counter>,
    duration: Histogram,
    retries: Counter,
    ejections: Counter,
    active: Gauge,
    connect_failures: Counter,
    upstream_h2: Gauge,
    tcp_connections: Family<ConnectionLabels, Counter>,
}

impl ServiceMetrics {
    /// The `requests_total` counter of answers from `cluster` (empty when the proxy answered)
    /// with status `code`.
    pub(crate) fn requests(&self, cluster: &Arc<str>, code: u16) -> Counter {
        let labels = RequestLabels {
            service: self.service.clone(),
            cluster: cluster.clone(),
            code,
        };
        self.requests.get_or_create_owned(&labels)
    }

    /// Observes the time from a request to its response headers.
    pub(crate) fn duration(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub(crate) fn retry(&self) {
        self.retries.inc();
    }

    pub(crate) fn ejection(&self) {
        self.ejections.inc();
    }

    pub(crate) fn connect_failure(&self) {
        self.connect_failures.inc();
    }

    pub(crate) fn tcp_connection(&self, cluster: &Arc<str>) {
        let labels = ConnectionLabels {
            service: self.service.clone(),
            cluster: cluster.clone(),
        };
        self.tcp_connections.get_or_create(&labels).inc();
    }

    /// Counts a client connection until the guard drops.
    pub(crate) fn connection(&self) -> ActiveGuard {
        self.active.inc();
        ActiveGuard(self.active.clone())
    }

    /// Counts an HTTP/2 connection to an endpoint until the guard drops.
    pub(crate) fn upstream_h2_connection(&self) -> ActiveGuard {
        self.upstream_h2.inc();
        ActiveGuard(self.upstream_h2.clone())
    }
}

/// Decrements its gauge (`active_connections`, `upstream_http2_connections`) when dropped.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
