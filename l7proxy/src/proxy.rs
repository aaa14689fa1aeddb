//! The proxy: a set of listeners built from configuration snapshots.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use peerd_types::Locality;

use crate::access_log::{AccessLog, AccessLogSink};
use crate::config::{ProxyConfig, ServiceRoute, endpoint_infos};
use crate::dial::Dialer;
use crate::explain::{self, Explanation};
use crate::listener::Listener;
use crate::metrics::Metrics;
use crate::route::Route;
use crate::sync::lock;

/// What every connection of the proxy shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) metrics: Metrics,
    pub(crate) access_log: AccessLog,
    /// See [`Proxy::set_client_idle_timeout`], in milliseconds.
    client_idle_ms: AtomicU64,
}

/// How long a client may take to send a request head, and how long an idle client connection
/// stays open, unless [`Proxy::set_client_idle_timeout`] says otherwise.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Shared {
    /// Fresh metrics, no access log, the default idle timeout.
    pub(crate) fn new() -> Self {
        Self {
            metrics: Metrics::new(),
            access_log: AccessLog::default(),
            client_idle_ms: AtomicU64::new(millis(DEFAULT_CLIENT_IDLE_TIMEOUT)),
        }
    }

    /// The limit for new client connections.
    pub(crate) fn client_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.client_idle_ms.load(Ordering::Relaxed))
    }
}

/// The L7 proxy of one node. Dropping it closes its listeners (open connections finish).
pub struct Proxy {
    local: Locality,
    dialer: Arc<dyn Dialer>,
    shared: Arc<Shared>,
    listeners: Mutex<BTreeMap<SocketAddr, Listener>>,
    /// Serializes [`Proxy::update`] calls.
    updating: tokio::sync::Mutex<()>,
}

impl Proxy {
    /// A proxy with no listeners, ranking endpoints relative to `local` and reaching them
    /// through `dialer`.
    pub fn new(local: Locality, dialer: Arc<dyn Dialer>) -> Self {
        Self {
            local,
            dialer,
            shared: Arc::new(Shared::new()),
            listeners: Mutex::default(),
            updating: tokio::sync::Mutex::new(()),
        }
    }

    /// Makes `config` the running configuration: closes listeners no longer in it (their open
    /// connections finish), binds new ones, and updates endpoints and policy of the others in
    /// place, keeping balancer state. Returns the listeners that could not be bound (and
    /// addresses configured twice); everything else is applied regardless.
    pub async fn update(&self, config: ProxyConfig) -> Vec<(SocketAddr, io::Error)> {
        let _serial = self.updating.lock().await;
        let mut failures = Vec::new();
        let mut desired: BTreeMap<SocketAddr, (&ServiceRoute, usize)> = BTreeMap::new();
        for service in &config.services {
            for (i, port) in service.ports.iter().enumerate() {
                let addr = SocketAddr::new(service.vip, port.port);
                if let Some((other, _)) = desired.get(&addr) {
                    let message = format!(
                        "{addr} is configured for both {} and {}",
                        other.name, service.name
                    );
                    failures.push((addr, io::Error::new(io::ErrorKind::AddrInUse, message)));
                    continue;
                }
                desired.insert(addr, (service, i));
            }
        }

        let removed: Vec<(SocketAddr, Listener)> = {
            let mut listeners = self.listeners();
            let gone: Vec<SocketAddr> = listeners
                .keys()
                .filter(|addr| !desired.contains_key(addr))
                .copied()
                .collect();
            gone.into_iter()
                .filter_map(|addr| listeners.remove(&addr).map(|l| (addr, l)))
                .collect()
        };
        for (addr, listener) in removed {
            listener.task.abort();
            // Wait for the socket to close, so that the address is free when this returns.
            let _ = listener.task.await;
            tracing::info!(%addr, "listener closed");
        }

        let mut listeners = self.listeners();
        for (addr, (service, i)) in desired {
            let port = &service.ports[i];
            let endpoints = endpoint_infos(service, port);
            let policy = service.policy.clone();
            if let Some(listener) = listeners.get(&addr) {
                let current = listener.route();
                if *current.name == *service.name && current.port == *port {
                    current.apply(endpoints, policy);
                } else {
                    let route = self.route(service, port);
                    route.apply(endpoints, policy);
                    listener.set_route(route);
                    tracing::info!(%addr, name = %service.name, "listener now serves another route");
                }
                continue;
            }
            let route = self.route(service, port);
            route.apply(endpoints, policy);
            match Listener::start(addr, route, self.shared.clone()) {
                Ok(listener) => {
                    tracing::info!(%addr, name = %service.name, protocol = port.protocol.as_str(), "listening");
                    listeners.insert(addr, listener);
                }
                Err(error) => {
                    tracing::warn!(%addr, %error, "cannot listen");
                    failures.push((addr, error));
                }
            }
        }
        failures
    }

    /// How `name`'s traffic is balanced now, per listening port; `None` for an unknown name.
    pub fn explain(&self, name: &str) -> Option<Explanation> {
        let ports: Vec<_> = self
            .listeners()
            .iter()
            .filter_map(|(addr, listener)| {
                let route = listener.route();
                (*route.name == *name).then(|| explain::port(*addr, &route))
            })
            .collect();
        (!ports.is_empty()).then(|| Explanation {
            name: name.to_owned(),
            ports,
        })
    }

    /// Appends the proxy's metrics in the Prometheus text format (no `# EOF` line): counters
    /// `requests_total{service,cluster,code}`, `retries_total{service}`,
    /// `ejections_total{service}`, `upstream_connect_failures_total{service}`,
    /// `tcp_connections_total{service,cluster}`, the histogram
    /// `request_duration_seconds{service}` (to response headers) and the gauge
    /// `active_connections{service}`.
    pub fn encode_metrics(&self, out: &mut String) {
        self.shared.metrics.encode(out);
    }

    /// Sets (or, with `None`, removes) the access log sink, called once per request or TCP
    /// connection on the proxy's worker threads: it should be quick (hand off, don't block).
    pub fn set_access_log(&self, sink: Option<AccessLogSink>) {
        self.shared.access_log.set(sink);
    }

    /// How long a client may take to send its first request head, and how long a client
    /// connection stays open without a request in progress: an HTTP/1.1 keep-alive connection
    /// waiting for its next request is closed, an HTTP/2 connection without a stream is shut
    /// down gracefully (GOAWAY). Default [`DEFAULT_CLIENT_IDLE_TIMEOUT`]; applies to connections
    /// accepted from then on.
    pub fn set_client_idle_timeout(&self, limit: Duration) {
        self.shared
            .client_idle_ms
            .store(millis(limit).max(1), Ordering::Relaxed);
    }

    /// The addresses the proxy listens on.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.listeners().keys().copied().collect()
    }

    fn route(&self, service: &ServiceRoute, port: &peerd_types::ServicePort) -> Route {
        Route::new(
            &service.name,
            port.clone(),
            self.local.clone(),
            self.dialer.clone(),
            &self.shared.metrics,
        )
    }

    fn listeners(&self) -> MutexGuard<'_, BTreeMap<SocketAddr, Listener>> {
        lock(&self.listeners)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for listener in self.listeners().values() {
            listener.task.abort();
        }
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("local", &self.local)
            .field("listening", &self.listening())
            .finish()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
