//! Connecting with failover: pick an endpoint, connect, and on a connect failure report it and
//! try another (the balancer is told to avoid the ones that failed, so it prefers another
//! endpoint and, once a tier is exhausted, another tier). Shared by HTTP requests, upgrades and
//! opaque TCP.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Instant;

use l7proxy_balance::{FailureKind, Tier};

use crate::errors::ProxyError;
use crate::pool::ConnectError;
use crate::route::{Attempt, Route};

/// Most connection attempts for one request or connection.
const MAX_CONNECTS: usize = 8;

/// The attempts of one request so far.
#[derive(Debug, Default)]
pub(crate) struct Failover {
    /// Endpoints the balancer should avoid for the next pick.
    pub(crate) avoid: Vec<SocketAddr>,
    connect_failed: Vec<SocketAddr>,
    /// Attempts made, connection attempts included.
    pub(crate) attempts: u32,
    /// The endpoint of the latest attempt.
    pub(crate) upstream: Option<(SocketAddr, Tier)>,
    /// The error of the latest failed attempt.
    pub(crate) last_error: Option<ProxyError>,
}

impl Failover {
    /// Picks endpoints and connects until a connection is up. Fails with the last error when the
    /// balancer has nothing left, when an endpoint that already failed to connect is picked
    /// again and fails again, after [`MAX_CONNECTS`] attempts, or at `deadline`.
    pub(crate) async fn connect<'r, T, F, Fut>(
        &mut self,
        route: &'r Route,
        deadline: Instant,
        mut connect: F,
    ) -> Result<(Attempt<'r>, T), ProxyError>
    where
        F: FnMut(SocketAddr) -> Fut,
        Fut: Future<Output = Result<T, ConnectError>>,
    {
        loop {
            let Some(attempt) = route.pick(&self.avoid) else {
                return Err(self.last_error.take().unwrap_or(ProxyError::NoEndpoint));
            };
            self.attempts += 1;
            self.upstream = Some((attempt.addr, attempt.tier));
            let last_chance = self.connect_failed.contains(&attempt.addr)
                || self.connect_failed.len() + 1 >= MAX_CONNECTS;
            let connecting = pin!(connect(attempt.addr));
            let connected = tokio::time::timeout_at(deadline.into(), connecting).await;
            match connected {
                Ok(Ok(conn)) => return Ok((attempt, conn)),
                Ok(Err(error)) => {
                    tracing::debug!(
                        service = %route.name, addr = %attempt.addr, %error, "connect failed"
                    );
                    let addr = attempt.addr;
                    attempt.failed(FailureKind::Connect);
                    self.connect_failed.push(addr);
                    self.avoid(addr);
                    let error = ProxyError::ConnectFailed {
                        attempts: self.connect_failed.len() as u32,
                    };
                    if last_chance {
                        return Err(error);
                    }
                    route.metrics.retry();
                    self.last_error = Some(error);
                }
                Err(_) => {
                    attempt.failed(FailureKind::Timeout);
                    return Err(ProxyError::RequestTimeout);
                }
            }
        }
    }

    /// Asks the balancer to avoid `addr` for the rest of this request.
    pub(crate) fn avoid(&mut self, addr: SocketAddr) {
        if !self.avoid.contains(&addr) {
            self.avoid.push(addr);
        }
    }
}
