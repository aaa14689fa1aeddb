//! Forwarding one HTTP/1.1 request through hyper (the requests the fast path in [`crate::h1`]
//! does not take): pick, connect, send, retry, time out, answer. HTTP/2 has its own path,
//! [`crate::h2`].
//!
//! Retries. A request whose connection attempt fails is always tried on another endpoint
//! (nothing was sent). A request is also retried after a 5xx, a reset or a per-try timeout when
//! it is *replayable*: an idempotent method (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) with no body
//! or a body of at most [`MAX_REPLAY_BODY`] bytes announced by `content-length` (buffered before
//! the first attempt). Such retries need the route's retry budget and stop at
//! `Policy::max_attempts`. Nothing is retried once response headers went to the client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use l7proxy_balance::FailureKind;

use crate::access_log::{AccessLogEntry, Summary, millis, unix_ms};
use crate::body::{ReqBody, RespBody};
use crate::config::Policy;
use crate::errors::{self, ProxyError};
use crate::failover::Failover;
use crate::idle::Busy;
use crate::pool::{Checkin, Sender};
use crate::proxy::Shared;
use crate::route::{Route, tier_name};
use crate::upgrade;

/// Largest request body buffered to make an idempotent request replayable.
pub(crate) const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// What one client connection's requests share.
pub(crate) struct ConnCtx {
    pub(crate) route: Arc<Route>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) client: SocketAddr,
}

impl ConnCtx {
    /// Accounts for an answered request: counts it in the route's metrics (against the
    /// endpoint of the last attempt, unless the proxy answered with `error`) and, with a
    /// `summary` (the access log is on), writes its access log entry.
    pub(crate) fn account(
        &self,
        summary: Option<Summary>,
        protocol: &'static str,
        status: u16,
        failover: &Failover,
        error: Option<&ProxyError>,
        elapsed: Duration,
    ) {
        let upstream = failover.upstream;
        let answered_by = upstream.filter(|_| error.is_none()).map(|(addr, _)| addr);
        self.route.count_request(answered_by, status, elapsed);
        let Some(summary) = summary else {
            return;
        };
        self.shared.access_log.log(&AccessLogEntry {
            unix_ms: unix_ms(),
            service: self.route.name.to_string(),
            client: self.client,
            protocol,
            method: summary.method,
            authority: summary.authority,
            path: summary.path,
            status,
            upstream: upstream.map(|(addr, _)| addr),
            cluster: upstream.map(|(addr, _)| self.route.cluster(&addr).to_string()),
            tier: upstream.map(|(_, tier)| tier_name(tier)),
            attempts: failover.attempts,
            duration_ms: millis(elapsed),
            error: error.map(ProxyError::reason),
        });
    }
}

/// Serves one request; every failure becomes the proxy's own response. `busy` (HTTP/1.1) goes
/// with the response body, to mark the connection busy until the body has been sent.
pub(crate) async fn serve(
    ctx: Arc<ConnCtx>,
    mut req: Request<Incoming>,
    busy: Option<Busy>,
) -> Result<Response<RespBody>, Infallible> {
    let ctx = &*ctx;
    let start = Instant::now();
    let grpc = is_grpc(req.headers());
    let summary = ctx.shared.access_log.enabled().then(|| Summary::of(&req));
    let version = req.version();
    let policy = ctx.route.policy();
    let mut failover = Failover::default();
    let on_upgrade = upgrade::requested(&req).then(|| hyper::upgrade::on(&mut req));
    let result = forward(ctx, req, &policy, start, &mut failover, on_upgrade).await;
    let (mut response, error) = match result {
        Ok(response) => (response, None),
        Err(error) => (errors::respond(&error, grpc), Some(error)),
    };
    *response.version_mut() = version;
    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    ctx.account(
        summary,
        "HTTP/1.1",
        status,
        &failover,
        error.as_ref(),
        elapsed,
    );
    if let Some(busy) = busy {
        response.body_mut().hold(busy);
    }
    Ok(response)
}

/// The request body as the attempts see it.
enum Pending {
    /// Buffered (possibly empty): every attempt gets a copy.
    Replay(Bytes),
    /// Streamed: only one attempt can send it (`None` once sent).
    Stream(Option<Incoming>),
}

impl Pending {
    fn take(&mut self) -> Option<ReqBody> {
        match self {
            Self::Replay(bytes) => Some(ReqBody::full(bytes.clone())),
            Self::Stream(body) => body.take().map(ReqBody::Stream),
        }
    }

    /// Puts back a body that was never sent.
    fn restore(&mut self, body: ReqBody) {
        if let (Self::Stream(slot), ReqBody::Stream(body)) = (self, body) {
            *slot = Some(body);
        }
    }
}

async fn forward(
    ctx: &ConnCtx,
    req: Request<Incoming>,
    policy: &Policy,
    start: Instant,
    failover: &mut Failover,
    mut on_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<RespBody>, ProxyError> {
    let route = &*ctx.route;
    route.deposit(start);
    let deadline = start + policy.request_timeout;
    let (mut parts, body) = req.into_parts();
    let upgrading = on_upgrade.is_some();
    strip_hop_by_hop(&mut parts.headers, upgrading);
    let idempotent = is_idempotent(&parts.method) && !upgrading;
    let mut pending = pending_body(body, &parts.headers, idempotent, deadline).await?;
    let replayable = idempotent && matches!(pending, Pending::Replay(_));
    let mut sent = 0u32;
    loop {
        let upstream = &route.upstream;
        let timeout = policy.connect_timeout;
        let (attempt, sender) = failover
            .connect(route, deadline, |addr| async move {
                if upgrading {
                    // An upgraded connection is consumed: never take it from the pool.
                    // Boxed: rare, and the future is large.
                    Box::pin(upstream.h1_fresh(addr, timeout)).await
                } else {
                    upstream.h1(addr, timeout).await
                }
            })
            .await?;
        let Some(body) = pending.take() else {
            // Unreachable: streamed bodies are only retried when they were not sent.
            return Err(failover
                .last_error
                .take()
                .unwrap_or(ProxyError::UpstreamReset));
        };
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        // Replayable requests keep their headers for another attempt; the others get them
        // back only if hyper returns the request unsent.
        *request.headers_mut() = if replayable {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };
        sent += 1;
        let try_deadline = deadline.min(Instant::now() + policy.try_timeout);
        let addr = attempt.addr;
        // Pinned in place: the timeout then holds a reference instead of moving a large future.
        let exchange = pin!(send(route, addr, sender, request, timeout));
        let error = match tokio::time::timeout_at(try_deadline.into(), exchange).await {
            Ok(Ok((response, checkin))) => {
                let status = response.status();
                if !status.is_server_error() {
                    attempt.succeeded();
                    return Ok(respond(response, checkin, on_upgrade.take()));
                }
                attempt.failed(FailureKind::Status5xx);
                if !(replayable && may_retry(route, policy, sent, false)) {
                    return Ok(respond(response, checkin, on_upgrade.take()));
                }
                tracing::debug!(service = %route.name, %addr, %status, "retrying");
                ProxyError::UpstreamProtocol
            }
            Ok(Err(failure)) if failure.error == ProxyError::RequestBody => {
                // The client's fault: no evidence against the endpoint, nothing to retry.
                drop(attempt);
                return Err(failure.error);
            }
            Ok(Err(failure)) => {
                attempt.failed(FailureKind::Reset);
                // A request that never left the proxy may go anywhere, like a failed connect.
                let unsent = failure.unsent.is_some();
                if let Some(request) = failure.unsent {
                    let (returned, body) = request.into_parts();
                    if !replayable {
                        parts.headers = returned.headers;
                    }
                    pending.restore(body);
                }
                if !((unsent || replayable) && may_retry(route, policy, sent, unsent)) {
                    return Err(failure.error);
                }
                tracing::debug!(service = %route.name, %addr, error = %failure.error, "retrying");
                failure.error
            }
            Err(_) => {
                attempt.failed(FailureKind::Timeout);
                after_try_timeout(route, policy, sent, replayable, try_deadline, deadline)?
            }
        };
        failover.avoid(addr);
        failover.last_error = Some(error);
    }
}

/// Whether attempt `sent + 1` may go out: within `max_attempts`, and within the retry budget
/// unless the retry is `free` (the failed attempt never sent the request). Counts the retry.
pub(crate) fn may_retry(route: &Route, policy: &Policy, sent: u32, free: bool) -> bool {
    if sent >= policy.max_attempts {
        return false;
    }
    if free {
        route.metrics.retry();
        true
    } else {
        route.withdraw_retry()
    }
}

/// After attempt `sent` got no response head by `try_deadline`: the error to go on with when
/// another attempt may go out (the request is `replayable`, and [`may_retry`] agrees), else
/// the one to answer with.
pub(crate) fn after_try_timeout(
    route: &Route,
    policy: &Policy,
    sent: u32,
    replayable: bool,
    try_deadline: Instant,
    deadline: Instant,
) -> Result<ProxyError, ProxyError> {
    if try_deadline >= deadline {
        Err(ProxyError::RequestTimeout)
    } else if replayable && may_retry(route, policy, sent, false) {
        Ok(ProxyError::TryTimeout)
    } else {
        Err(ProxyError::TryTimeout)
    }
}

/// Reads the request body when it is small and the request idempotent, so that it can be
/// replayed; otherwise leaves it to be streamed.
async fn pending_body(
    body: Incoming,
    headers: &HeaderMap,
    idempotent: bool,
    deadline: Instant,
) -> Result<Pending, ProxyError> {
    if body.is_end_stream() {
        return Ok(Pending::Replay(Bytes::new()));
    }
    if !(idempotent && content_length(headers).is_some_and(|n| n <= MAX_REPLAY_BODY)) {
        return Ok(Pending::Stream(Some(body)));
    }
    match Box::pin(tokio::time::timeout_at(deadline.into(), body.collect())).await {
        Ok(Ok(collected)) => Ok(Pending::Replay(collected.to_bytes())),
        Ok(Err(_)) => Err(ProxyError::RequestBody),
        Err(_) => Err(ProxyError::RequestTimeout),
    }
}

/// A failed exchange; `unsent` holds the request when it never left the proxy.
struct SendFailure {
    error: ProxyError,
    unsent: Option<Request<ReqBody>>,
}

/// Sends on `sender`; a pooled HTTP/1.1 connection the endpoint closed meanwhile is replaced by
/// a fresh one once.
async fn send(
    route: &Route,
    addr: SocketAddr,
    sender: Sender,
    request: Request<ReqBody>,
    connect_timeout: std::time::Duration,
) -> Result<(Response<Incoming>, Option<Checkin>), SendFailure> {
    let Sender { mut sender, reused } = sender;
    match sender.try_send_request(request).await {
        Ok(response) => {
            let checkin = Checkin::new(route.upstream.clone(), addr, sender);
            Ok((response, Some(checkin)))
        }
        Err(e) => match SendFailure::from(e) {
            SendFailure {
                error,
                unsent: Some(unsent),
            } if reused => {
                // Boxed: rare, and it would double the size of every request's future.
                Box::pin(resend_fresh(route, addr, unsent, error, connect_timeout)).await
            }
            failure => Err(failure),
        },
    }
}

/// Sends a request that a pooled connection returned unsent on a fresh connection; when none
/// can be had, fails with the pooled connection's `error`.
async fn resend_fresh(
    route: &Route,
    addr: SocketAddr,
    request: Request<ReqBody>,
    error: ProxyError,
    connect_timeout: std::time::Duration,
) -> Result<(Response<Incoming>, Option<Checkin>), SendFailure> {
    let Ok(sender) = route.upstream.h1_fresh(addr, connect_timeout).await else {
        return Err(SendFailure {
            error,
            unsent: Some(request),
        });
    };
    // A fresh connection is not `reused`: this goes no deeper.
    send(route, addr, sender, request, connect_timeout).await
}

impl From<hyper::client::conn::TrySendError<Request<ReqBody>>> for SendFailure {
    fn from(mut e: hyper::client::conn::TrySendError<Request<ReqBody>>) -> Self {
        Self {
            error: ProxyError::from_upstream(e.error()),
            unsent: e.take_message(),
        }
    }
}

/// The upstream response as sent to the client.
fn respond(
    response: Response<Incoming>,
    checkin: Option<Checkin>,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<RespBody> {
    let (mut parts, body) = response.into_parts();
    if parts.status == StatusCode::SWITCHING_PROTOCOLS
        && let Some(downstream) = on_upgrade
        && let Some(upstream) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
    {
        upgrade::splice(downstream, upstream);
        return Response::from_parts(parts, RespBody::empty());
    }
    strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, RespBody::upstream(body, checkin))
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), keeping `te: trailers` (gRPC needs it) and,
/// for upgrades, `connection: upgrade` and `upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages have none: one pass over the names, no hashing, no removal.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if !upgrade && let Some(value) = headers.remove(CONNECTION) {
        // Headers the client named in `connection` are hop-by-hop too.
        if let Ok(value) = value.to_str() {
            for name in value.split(',') {
                if let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) {
                    headers.remove(name);
                }
            }
        }
    }
    for name in [KEEP_ALIVE, PROXY_CONNECTION, TRANSFER_ENCODING] {
        headers.remove(name);
    }
    if !upgrade {
        headers.remove(UPGRADE);
    }
    if headers
        .get(TE)
        .is_some_and(|te| !te.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(TE);
    }
}

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether `name` is one of the headers [`strip_hop_by_hop`] may remove. `te` is listed
/// whatever its value: the check only decides whether to look closer.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TRANSFER_ENCODING,
        UPGRADE,
        TE,
    ]
    .contains(name)
}

pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_and_end_to_end_ones_stay() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "keep-alive, x-hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(TE, "trailers".parse().unwrap());
        h.insert("x-end", "1".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["te", "x-end"]);

        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "upgrade".parse().unwrap());
        h.insert(UPGRADE, "websocket".parse().unwrap());
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.len(), 2);
    }
}
