//! The node-local L7 proxy: it listens on virtual IPs, one listener per `vip:port`, and sends
//! every request (HTTP/1.1, HTTP/2, gRPC) or connection (opaque TCP) to the nearest healthy
//! endpoint, retrying and failing over when endpoints die.
//!
//! Its input is a full configuration snapshot ([`ProxyConfig`]) that the caller pushes with
//! [`Proxy::update`]: global names, their virtual IPs and ports, endpoints with their localities,
//! and per-service policy. The proxy knows nothing of the mesh, the catalog or DNS: it must not
//! discover endpoints, resolve names or talk to peerd. Balancing decisions (locality tiers, peak
//! EWMA, outlier ejection) live in the sans-IO `l7proxy-balance` crate; this crate is the IO shell
//! around it: sockets, protocol detection, connection pools, retries, timeouts, metrics.
//!
//! - **`http` ports** serve HTTP/1.1 (keep-alive, chunked bodies, `Upgrade` passed through as a
//!   byte stream) and HTTP/2 with prior knowledge (h2c), told apart by the first bytes; anything
//!   else is forwarded as opaque TCP. The HTTP version is kept upstream.
//! - **`http2` and `grpc` ports** speak HTTP/2 with prior knowledge on both sides; bodies and
//!   trailers stream frame by frame in both directions, never buffered whole.
//! - **`tcp` ports** copy bytes between the client and one endpoint.
//! - **Upstream connections** are pooled per endpoint: idle HTTP/1.1 keep-alive connections, and
//!   multiplexed HTTP/2 connections: one, and more while it is at the endpoint's stream limit.
//!   They go through a [`Dialer`] (kernel TCP by default).
//! - **Retries**: a failed connect is always retried on another endpoint; idempotent requests
//!   with a small or empty body are also retried after a 5xx, a reset or a per-try timeout,
//!   within a retry budget. See [`Policy`] for the limits and timeouts.
//! - **Errors** reach the wire in exactly one module, [`errors`]: every response the proxy makes
//!   itself carries `x-peerd-error`, and gRPC clients get a `grpc-status` instead of an HTTP error.
//! - **Observability**: Prometheus metrics ([`Proxy::encode_metrics`]), an optional JSON access
//!   log ([`Proxy::set_access_log`]) and the balancer's reasoning ([`Proxy::explain`]).
//!
//! ```no_run
//! # async fn run() {
//! use std::sync::Arc;
//! use l7proxy::{Proxy, ProxyConfig, TcpDialer};
//! let proxy = Proxy::new(Default::default(), Arc::new(TcpDialer));
//! let failures = proxy.update(ProxyConfig { services: vec![] }).await;
//! assert!(failures.is_empty());
//! # }
//! ```

mod access_log;
mod body;
mod budget;
mod config;
mod detect;
mod dial;
pub mod errors;
mod explain;
mod failover;
mod forward;
mod h1;
mod h2;
mod idle;
mod listener;
mod metrics;
mod pool;
mod proxy;
mod route;
mod sync;
mod tcp;
mod upgrade;

pub use access_log::{AccessLogEntry, AccessLogSink};
pub use config::{Backend, Policy, ProxyConfig, ServiceRoute};
pub use dial::{AsyncReadWrite, BoxFuture, BoxIo, Dialer, TcpDialer};
pub use errors::{ErrorSide, ProxyError};
pub use explain::{EndpointExplanation, Explanation, PortExplanation, TierShares};
pub use peerd_types::{Locality, Protocol, ServicePort};
pub use proxy::{DEFAULT_CLIENT_IDLE_TIMEOUT, Proxy};
