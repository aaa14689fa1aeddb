//! Opaque TCP: one endpoint per connection (connect failures fail over to another), then bytes
//! are copied both ways until either side closes.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::TcpStream;

use crate::access_log::{AccessLogEntry, millis, unix_ms};
use crate::detect::Prefixed;
use crate::errors;
use crate::failover::Failover;
use crate::proxy::Shared;
use crate::route::{Route, tier_name};

/// Forwards `downstream` (with any bytes already read from it) to an endpoint of `route`.
pub(crate) async fn forward(
    mut downstream: Prefixed<TcpStream>,
    client: SocketAddr,
    route: &Route,
    shared: &Shared,
) {
    let start = Instant::now();
    let policy = route.policy();
    let deadline = start + policy.request_timeout;
    let upstream = &route.upstream;
    let timeout = policy.connect_timeout;
    let mut failover = Failover::default();
    let connected = failover
        .connect(route, deadline, |addr| upstream.dial(addr, timeout))
        .await;
    let elapsed = start.elapsed();
    let cluster = failover.upstream.map(|(addr, _)| route.cluster(&addr));
    if shared.access_log.enabled() {
        shared.access_log.log(&AccessLogEntry {
            unix_ms: unix_ms(),
            service: route.name.to_string(),
            client,
            protocol: "tcp",
            method: String::new(),
            authority: String::new(),
            path: String::new(),
            status: 0,
            upstream: failover.upstream.map(|(addr, _)| addr),
            cluster: cluster.as_ref().map(|c| c.to_string()),
            tier: failover.upstream.map(|(_, tier)| tier_name(tier)),
            attempts: failover.attempts,
            duration_ms: millis(elapsed),
            error: connected.as_ref().err().map(|e| e.reason()),
        });
    }
    let (attempt, mut upstream) = match connected {
        Ok(pair) => pair,
        Err(error) => {
            errors::reset_tcp(downstream.get_ref(), &error);
            return;
        }
    };
    attempt.succeeded();
    if let Some(cluster) = &cluster {
        route.metrics.tcp_connection(cluster);
    }
    match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        Ok((to_up, to_down)) => tracing::trace!(%client, to_up, to_down, "tcp connection closed"),
        Err(error) => tracing::debug!(%client, %error, "tcp connection failed"),
    }
}
