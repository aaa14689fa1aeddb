//! The HTTP/2 path: HTTP/2 connections of the proxy's own on h2's frame codec ([`conn`]) on
//! both sides, every stream of a client connection driven by that connection's own task.
//!
//! hyper's HTTP/2 server spawns a task per stream, and its client reaches the upstream
//! connection through a channel and more tasks per request: through the pair, a request cost
//! about 2.5 times HAProxy's user time; the `h2` crate's own server and client, driven
//! directly, still 1.8 times. Here the client connection's task accepts streams and polls each
//! one's forwarding next to the connection itself (a [`StreamSet`]); the upstream
//! stream is opened straight on the endpoint's pooled connection (which has one task, shared
//! by every client connection), and bodies and trailers are relayed frame by frame with flow
//! control on both sides ([`relay`]). Balancing, retries, timeouts, metrics, the access log
//! and error responses are those of the HTTP/1.1 paths.
//!
//! Retries: a request is sent again after a connect failure, or after the endpoint refused the
//! stream (`REFUSED_STREAM`, or above the last stream of its GOAWAY: not processed) or its
//! connection could not open one, wherever the request body stands; after a 5xx, a reset or a
//! per-try timeout only when it is replayable (idempotent, and its body, if any, at most
//! [`MAX_REPLAY_BODY`] bytes by `content-length`, buffered before the first attempt), within
//! the retry budget.

mod hold;
mod hpack;
mod relay;
mod set;
mod write;

pub(crate) mod conn;

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use std::sync::Arc;

use h2::Reason;
use http::{HeaderMap, Method, Request, Response};
use l7proxy_balance::FailureKind;
use tokio::net::TcpStream;

use crate::access_log::Summary;
use crate::config::Policy;
use crate::detect::{MAX_HEAD, Prefixed};
use crate::errors::{self, ProxyError};
use crate::failover::Failover;
use crate::forward::{self, ConnCtx, MAX_REPLAY_BODY, after_try_timeout, may_retry};
use crate::idle;
use crate::pool::H2Conn;

use self::conn::{Driver, RecvBody, Respond, Shared};
use self::hold::Hold;
use self::relay::{Relay, RelayError};
use self::set::StreamSet;

/// Settings towards clients (hyper's server defaults): windows of 1 MiB, at most 400 KiB
/// buffered per stream, 200 streams at a time.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONN_WINDOW: u32 = 1024 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
const MAX_CONCURRENT_STREAMS: u32 = 200;
/// How long a client connection goes without a stream before it gives back what it keeps for
/// the next ones (buffers, a stream's box): a busy connection allocates nothing per stream, an
/// idle one holds little.
const SHED_AFTER: Duration = Duration::from_secs(1);

/// Serves an HTTP/2 client connection whose preface detection has read (`stream` replays it).
/// `idle_timeout` bounds the wait for the client's preface and settings, and how long the
/// connection stays open without a stream: then it is shut down gracefully (GOAWAY), and closed
/// if the client has not finished another `idle_timeout` later.
pub(crate) async fn serve(mut stream: Prefixed<TcpStream>, ctx: ConnCtx, idle_timeout: Duration) {
    use tokio::io::AsyncReadExt;
    let mut preface = [0u8; conn::PREFACE.len()];
    match tokio::time::timeout(idle_timeout, stream.read_exact(&mut preface)).await {
        Ok(Ok(_)) if &preface == conn::PREFACE => {}
        _ => {
            tracing::trace!("no HTTP/2 client preface");
            return;
        }
    }
    let (mut conn, shared) = Driver::server(
        stream,
        conn::Config {
            stream_window: STREAM_WINDOW,
            conn_window: CONN_WINDOW,
            max_concurrent_streams: MAX_CONCURRENT_STREAMS,
            max_header_list_size: MAX_HEAD as u32,
            max_send_buffer: MAX_SEND_BUFFER,
        },
    );
    let shared = &shared;
    let ctx = &ctx;
    // Without a stream since then; one timer checks it, pushed back only when it fires (at
    // least every SHED_AFTER until the connection has shed its buffers).
    let mut idle_since = Some(Instant::now());
    let mut timer = pin!(tokio::time::sleep(idle_timeout.min(SHED_AFTER)));
    let mut shed = false;
    let mut closing = false;
    // The streams and the connection wake the task through wakers of its own: see [`hold`].
    let ((conn_hold, conn_waker), (set_hold, set_waker)) = Hold::pair();
    let mut streams = StreamSet::new(set_waker);
    poll_fn(|cx| {
        conn_hold.register(cx.waker());
        let mut conn_cx = Context::from_waker(&conn_waker);
        // Woken while polling the connection (or the streams, too often): come back.
        let mut again = false;
        let result = loop {
            // Streams first: what they queue goes out with the connection's flush below.
            conn_hold.hold();
            let mut finished = false;
            let mut rounds = 0;
            loop {
                set_hold.hold();
                let next = streams.poll_next();
                let woken = set_hold.release();
                match next {
                    Poll::Ready(Some(())) => finished = true,
                    Poll::Ready(None) => break,
                    // Woken meanwhile: a stream is ready again. One more look here; after
                    // that, through the scheduler.
                    Poll::Pending if woken && rounds == 0 => rounds += 1,
                    Poll::Pending => {
                        again |= woken;
                        break;
                    }
                }
            }
            if finished && streams.is_empty() && !closing {
                idle_since = Some(Instant::now());
            }
            // Wakes held back so far are for this poll: start afresh.
            conn_hold.hold();
            let accepted = conn.poll_accept(&mut conn_cx, shared);
            again |= conn_hold.release();
            match accepted {
                Poll::Ready(Some(accepted)) => {
                    idle_since = None;
                    if shed {
                        shed = false;
                        timer.as_mut().reset((Instant::now() + SHED_AFTER).into());
                    }
                    streams.push(serve_stream(
                        ctx,
                        accepted.request,
                        accepted.block,
                        accepted.respond,
                    ));
                    continue;
                }
                Poll::Ready(None) => break Poll::Ready(()),
                Poll::Pending => {}
            }
            if timer.as_mut().poll(cx).is_pending() {
                break Poll::Pending;
            }
            let now = Instant::now();
            if !shed && idle_since.is_some_and(|since| now >= since + SHED_AFTER) {
                streams.shed();
                conn.shed(shared);
                shed = true;
            }
            match idle::next_check(idle_since, now, idle_timeout) {
                Some(at) if shed => timer.as_mut().reset(at.into()),
                Some(at) => timer
                    .as_mut()
                    .reset(at.min(idle_since.unwrap_or(now) + SHED_AFTER).into()),
                // Still open a limit after the GOAWAY: give up on the client.
                None if closing => break Poll::Ready(()),
                None => {
                    tracing::trace!("closing an idle client HTTP/2 connection");
                    shared.graceful_shutdown();
                    closing = true;
                    idle_since = Some(now);
                    timer.as_mut().reset((now + idle_timeout).into());
                }
            }
        };
        if again && result.is_pending() {
            // Through the scheduler rather than round this loop: tokio's budget may be spent.
            cx.waker().wake_by_ref();
        }
        result
    })
    .await;
}

/// Forwards one stream and relays its answer; every failure becomes the proxy's own response.
async fn serve_stream<'a>(
    ctx: &'a ConnCtx,
    req: Request<RecvBody<&'a Shared>>,
    block: Bytes,
    mut respond: Respond<'a>,
) {
    let start = Instant::now();
    let grpc = forward::is_grpc(req.headers());
    let head_only = req.method() == Method::HEAD;
    let summary = ctx.shared.access_log.enabled().then(|| Summary::of(&req));
    let policy = ctx.route.policy();
    let mut failover = Failover::default();
    let outcome = {
        let mut forwarding = pin!(forward(ctx, req, &block, &policy, start, &mut failover));
        // A client that resets its stream abandons the request (dropping the attempt resets
        // the upstream stream), as hyper's server does.
        poll_fn(|cx| {
            if let Poll::Ready(outcome) = forwarding.as_mut().poll(cx) {
                return Poll::Ready(Some(outcome));
            }
            respond.poll_reset(cx).map(|_| None)
        })
        .await
    };
    let Some(outcome) = outcome else {
        tracing::debug!(service = %ctx.route.name, "client reset the stream; request abandoned");
        return;
    };
    let elapsed = start.elapsed();
    match outcome {
        Ok(answer) => {
            let status = answer.response.status().as_u16();
            ctx.account(summary, "HTTP/2", status, &failover, None, elapsed);
            relay_answer(answer, respond).await;
        }
        Err(error) => {
            let (head, body) = errors::respond_h2(&error, grpc);
            let status = head.status().as_u16();
            ctx.account(summary, "HTTP/2", status, &failover, Some(&error), elapsed);
            let empty = body.is_empty() || head_only;
            match respond.send_response(head, empty) {
                Ok(mut stream) if !empty => {
                    let _ = stream.send_data(body, true);
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "cannot answer the client"),
            }
        }
    }
}

/// Sends the endpoint's response head to the client, then relays the response body and what
/// remains of the request body, both ways at once (gRPC bidirectional streams).
async fn relay_answer(answer: Answer<'_>, mut respond: Respond<'_>) {
    let (parts, body) = answer.response.into_parts();
    let end = body.is_end_stream();
    let send = match respond.send_response(Response::from_parts(parts, ()), end) {
        Ok(send) => send,
        Err(error) => {
            tracing::debug!(%error, "cannot send the response head to the client");
            return;
        }
    };
    let mut response_body = (!end).then(|| Relay::new(body, send));
    let mut request_body = answer.request_body;
    poll_fn(|cx| {
        if let Some(r) = &mut request_body
            && let Poll::Ready(result) = r.poll(cx)
        {
            relay_ended(result);
            request_body = None;
        }
        if let Some(r) = &mut response_body
            && let Poll::Ready(result) = r.poll(cx)
        {
            relay_ended(result);
            response_body = None;
        }
        if request_body.is_none() && response_body.is_none() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

fn relay_ended(result: Result<(), RelayError>) {
    if let Err(error) = result {
        tracing::debug!(%error, "HTTP/2 body relay stopped");
    }
}

/// The endpoint's answer to a request.
struct Answer<'a> {
    response: Response<RecvBody<Arc<Shared>>>,
    /// The request body, still on its way to the endpoint.
    request_body: Option<RequestRelay<'a>>,
}

/// A client's request body on its way to the endpoint.
type RequestRelay<'a> = Relay<&'a Shared, Arc<Shared>>;

/// The request body as the attempts see it.
enum Pending<'a> {
    /// Buffered (possibly empty): every attempt gets a copy.
    Replay {
        data: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// Streamed: only one attempt can send it (`None` once given to an attempt).
    Stream(Option<RecvBody<&'a Shared>>),
}

impl Pending<'_> {
    fn is_empty(&self) -> bool {
        matches!(self, Self::Replay { data, trailers: None } if data.is_empty())
    }
}

/// Why an attempt failed.
enum Failure {
    /// The client's request body broke off: the client's fault, nothing to retry.
    ClientBody,
    /// The endpoint or its connection failed; `unsent` when it did not process the request.
    Upstream { error: ProxyError, unsent: bool },
}

async fn forward<'a>(
    ctx: &ConnCtx,
    req: Request<RecvBody<&'a Shared>>,
    block: &Bytes,
    policy: &Policy,
    start: Instant,
    failover: &mut Failover,
) -> Result<Answer<'a>, ProxyError> {
    let route = &*ctx.route;
    route.deposit(start);
    let deadline = start + policy.request_timeout;
    let (parts, body) = req.into_parts();
    let idempotent = forward::is_idempotent(&parts.method);
    let mut pending = pending_body(body, &parts.headers, idempotent, deadline).await?;
    let replayable = idempotent && matches!(pending, Pending::Replay { .. });
    let mut sent = 0u32;
    loop {
        let upstream = &route.upstream;
        let timeout = policy.connect_timeout;
        let (attempt, conn) = failover
            .connect(route, deadline, |addr| upstream.h2(addr, timeout))
            .await?;
        sent += 1;
        let addr = attempt.addr;
        let try_deadline = deadline.min(attempt.started() + policy.try_timeout);
        // Every attempt sends the head as the client sent it: even a streamed request goes
        // again when the endpoint refuses its stream.
        let result = {
            let exchange = pin!(exchange(conn, block.clone(), &mut pending));
            tokio::time::timeout_at(try_deadline.into(), exchange).await
        };
        let error = match result {
            Ok(Ok((response, request_body))) => {
                let status = response.status();
                let answer = Answer {
                    response,
                    request_body,
                };
                if !status.is_server_error() {
                    attempt.succeeded();
                    return Ok(answer);
                }
                attempt.failed(FailureKind::Status5xx);
                if !(replayable && may_retry(route, policy, sent, false)) {
                    return Ok(answer);
                }
                tracing::debug!(service = %route.name, %addr, %status, "retrying");
                ProxyError::UpstreamProtocol
            }
            Ok(Err(Failure::ClientBody)) => {
                // The client's fault: no evidence against the endpoint.
                drop(attempt);
                return Err(ProxyError::RequestBody);
            }
            Ok(Err(Failure::Upstream { error, unsent })) => {
                attempt.failed(FailureKind::Reset);
                let again = (unsent && !matches!(pending, Pending::Stream(None))) || replayable;
                if !(again && may_retry(route, policy, sent, unsent)) {
                    return Err(error);
                }
                tracing::debug!(service = %route.name, %addr, %error, "retrying");
                error
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

/// Reads the request body when it is small and the request idempotent, so that it can be
/// replayed; otherwise leaves it to be streamed.
async fn pending_body<'a>(
    mut body: RecvBody<&'a Shared>,
    headers: &HeaderMap,
    idempotent: bool,
    deadline: Instant,
) -> Result<Pending<'a>, ProxyError> {
    if body.is_end_stream() {
        return Ok(Pending::Replay {
            data: Bytes::new(),
            trailers: None,
        });
    }
    if !(idempotent && forward::content_length(headers).is_some_and(|n| n <= MAX_REPLAY_BODY)) {
        return Ok(Pending::Stream(Some(body)));
    }
    // The server holds the client to its content-length.
    let collect = async {
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            body.release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await?;
        Ok::<_, h2::Error>((data.freeze(), trailers))
    };
    match Box::pin(tokio::time::timeout_at(deadline.into(), collect)).await {
        Ok(Ok((data, trailers))) => Ok(Pending::Replay { data, trailers }),
        Ok(Err(_)) => Err(ProxyError::RequestBody),
        Err(_) => Err(ProxyError::RequestTimeout),
    }
}

/// One attempt: opens a stream on `conn`, sends the head and the body (a buffered one at once,
/// a streamed one as it comes) and waits for the response head.
async fn exchange<'a>(
    conn: H2Conn,
    block: Bytes,
    pending: &mut Pending<'a>,
) -> Result<(Response<RecvBody<Arc<Shared>>>, Option<RequestRelay<'a>>), Failure> {
    let empty = pending.is_empty();
    // An error: the connection takes no more streams (it went away, or broke).
    let (response, mut stream) =
        conn::send_request(&conn.shared, block, empty).map_err(|error| Failure::Upstream {
            error: upstream_error(&error),
            unsent: true,
        })?;
    let mut request_body = None;
    match pending {
        Pending::Replay { .. } if empty => {}
        Pending::Replay { data, trailers } => {
            // A failure here shows in the response.
            let _ = stream.send_data(data.clone(), trailers.is_none());
            if let Some(trailers) = trailers {
                let _ = stream.send_trailers(trailers.clone());
            }
        }
        Pending::Stream(body) => {
            if let Some(body) = body.take() {
                request_body = Some(Relay::new(body, stream));
            }
        }
    }
    let mut response = pin!(response);
    poll_fn(|cx| {
        if let Some(relay) = &mut request_body
            && let Poll::Ready(result) = relay.poll(cx)
        {
            request_body = None;
            match result {
                Ok(()) => {}
                Err(RelayError::Recv(_)) => return Poll::Ready(Err(Failure::ClientBody)),
                // The endpoint stopped reading: its response (or reset) says why.
                Err(RelayError::Send(_)) => {}
            }
        }
        response.as_mut().poll(cx).map(|result| match result {
            Ok(response) => Ok((response, request_body.take())),
            Err(error) => Err(Failure::Upstream {
                unsent: error.reason() == Some(Reason::REFUSED_STREAM) && error.is_remote(),
                error: upstream_error(&error),
            }),
        })
    })
    .await
}

/// Classifies a failed upstream exchange.
fn upstream_error(error: &h2::Error) -> ProxyError {
    if error.is_io() || error.is_reset() || (error.is_go_away() && error.is_remote()) {
        ProxyError::UpstreamReset
    } else {
        ProxyError::UpstreamProtocol
    }
}
