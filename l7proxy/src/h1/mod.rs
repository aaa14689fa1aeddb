//! The HTTP/1.1 fast path: plain requests relayed between the client and a pooled endpoint
//! connection by the client connection's own task, the way HAProxy and Envoy's codecs do it.
//!
//! hyper's server and client are general and correct, and a request through the pair of them
//! costs about as much CPU as HAProxy's whole request: a request and a response are each parsed
//! into header maps and serialized again, and the upstream connection lives in a task of its own
//! that every request reaches through a channel. Here the heads are parsed with httparse
//! ([`head`]) and copied without their hop-by-hop fields, bodies go through as bytes (chunked ones
//! unchanged, [`chunked`] only finds their end), and one task reads and writes both sockets.
//!
//! The fast path takes HTTP/1.1 requests without `Upgrade`, `Expect` or `Transfer-Encoding`,
//! whose body (if any) has a `content-length` of at most
//! [`crate::forward::MAX_REPLAY_BODY`]; everything else (and everything after it on the same
//! connection) is served by hyper through
//! [`crate::listener::serve_h1`], which handles the general case. Balancing, retries, timeouts,
//! metrics, the access log and error responses are the same on both paths.

mod chunked;
mod head;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use l7proxy_balance::FailureKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::access_log::Summary;
use crate::detect::Prefixed;
use crate::errors::{self, ErrorSide, ProxyError};
use crate::failover::Failover;
use crate::forward::{ConnCtx, after_try_timeout, may_retry};
use crate::idle;
use crate::listener;
use crate::pool::RawConn;
use crate::route::Route;

use self::head::{Framing, Request, RequestHead, ResponseHead};

/// Buffer space made available before a read from the client, and before reading a response
/// head: heads and small bodies fit, idle connections stay small.
const READ_CHUNK: usize = 4 * 1024;
/// Largest read buffer a long response body grows the upstream buffer to.
const MAX_READ_CHUNK: usize = 64 * 1024;
/// Head buffers up to this size stay with an idle connection.
const SMALL_HEAD: usize = 1024;

/// Serves an HTTP/1.1 client connection whose first bytes (`buf`) were read by detection.
///
/// A plain function returning an `async move` block, not an `async fn`: an `async fn` keeps its
/// arguments in the future next to the connection built from them for the connection's whole
/// life, and every idle keep-alive connection would carry them.
pub(crate) fn serve(
    stream: TcpStream,
    buf: BytesMut,
    ctx: ConnCtx,
    head_timeout: Duration,
) -> impl Future<Output = ()> {
    let now = Instant::now();
    let mut conn = Conn {
        io: Io {
            stream,
            buf,
            out: Vec::new(),
            resp: Vec::new(),
            up: BytesMut::new(),
        },
        ctx,
        idle_since: now,
        head_timeout,
        timer: Box::pin(tokio::time::sleep_until((now + head_timeout).into())),
        try_timer: Box::pin(tokio::time::sleep_until((now + head_timeout).into())),
    };
    async move {
        match conn.run().await {
            End::Closed => {}
            // Boxed, as is what it needs: few connections get there.
            end => Box::pin(conn.hand_over(end)).await,
        }
    }
}

/// How the fast path let go of a connection.
enum End {
    /// Closed (by either side), or done.
    Closed,
    /// The next request is for hyper.
    Slow,
    /// The next request head is malformed.
    Reject(ProxyError),
}

struct Conn {
    io: Io,
    ctx: ConnCtx,
    /// When the last response was sent (or the connection opened).
    idle_since: Instant,
    head_timeout: Duration,
    /// Closes the connection once idle for `head_timeout`: armed once, pushed back only when it
    /// fires (see [`idle::next_check`]), so requests cost no timer operation.
    timer: Pin<Box<Sleep>>,
    /// Limits each attempt. Registered once: successive attempts' deadlines only move later,
    /// which tokio handles without touching its timer wheel.
    try_timer: Pin<Box<Sleep>>,
}

/// The buffers and sockets of one client connection.
struct Io {
    stream: TcpStream,
    /// Bytes from the client not yet handled.
    buf: BytesMut,
    /// The request as sent upstream: head and body.
    out: Vec<u8>,
    /// A response head (and the first body bytes) as sent to the client.
    resp: Vec<u8>,
    /// Bytes from the endpoint.
    up: BytesMut,
}

impl Conn {
    /// Passes the connection to hyper, or rejects its next request.
    async fn hand_over(self, end: End) {
        let Self { io, ctx, .. } = self;
        let stream = Prefixed::new(io.buf.freeze(), io.stream);
        match end {
            End::Closed => {}
            End::Slow => listener::serve_h1(stream, ctx).await,
            End::Reject(error) => listener::reject(stream, &error).await,
        }
    }

    async fn run(&mut self) -> End {
        loop {
            let mut summary = self.ctx.shared.access_log.enabled().then(Summary::default);
            let req = loop {
                match head::parse_request(&self.io.buf, &mut self.io.out, summary.as_mut()) {
                    Request::Partial => {}
                    Request::Fast(req) => break req,
                    Request::Slow => return End::Slow,
                    Request::Bad(error) => return End::Reject(error),
                }
                match self.read_head().await {
                    Ok(0) | Err(_) => return End::Closed,
                    Ok(_) => {}
                }
            };
            let start = Instant::now();
            let total = req.len + req.body_len;
            if self.io.buf.len() < total {
                let deadline = start + self.ctx.route.policy().request_timeout;
                let rest = self.io.read_body(total);
                if tokio::time::timeout_at(deadline.into(), rest)
                    .await
                    .is_err()
                {
                    // The client stalled in the middle of its body.
                    return End::Closed;
                }
                if self.io.buf.len() < total {
                    // The client went away.
                    return End::Closed;
                }
            }
            self.io.out.extend_from_slice(&self.io.buf[req.len..total]);
            self.io.buf.advance(total);
            let exchange = Exchange {
                ctx: &self.ctx,
                req: &req,
                start,
                try_timer: self.try_timer.as_mut(),
            };
            // Boxed: a request's future lives only as long as the request, not in every idle
            // connection's task.
            let keep = Box::pin(exchange.forward(&mut self.io, summary)).await;
            if !keep || req.close {
                return End::Closed;
            }
            self.idle_since = Instant::now();
        }
    }

    /// Reads more of a request head, closing the connection once idle for too long. A
    /// connection waiting for its next request gives its read buffers back first, as HAProxy's
    /// do: idle connections cost little memory, and the buffers go to busy ones.
    async fn read_head(&mut self) -> io::Result<usize> {
        if self.io.buf.is_empty() {
            self.io.release();
        }
        loop {
            if self.io.buf.capacity() == 0 {
                // Released: wait for bytes without a buffer.
                tokio::select! {
                    biased;
                    ready = self.io.stream.readable() => ready?,
                    () = &mut self.timer => {
                        self.on_timer()?;
                        continue;
                    }
                }
            }
            reserve(&mut self.io.buf, READ_CHUNK);
            tokio::select! {
                biased;
                read = self.io.stream.read_buf(&mut self.io.buf) => return read,
                () = &mut self.timer => self.on_timer()?,
            }
        }
    }

    /// The idle timer fired: close, or look again when the limit is up.
    fn on_timer(&mut self) -> io::Result<()> {
        match idle::next_check(Some(self.idle_since), Instant::now(), self.head_timeout) {
            Some(at) => {
                self.timer.as_mut().reset(at.into());
                Ok(())
            }
            None => Err(io::ErrorKind::TimedOut.into()),
        }
    }
}

/// One request on its way through the proxy.
struct Exchange<'a> {
    ctx: &'a ConnCtx,
    req: &'a RequestHead,
    start: Instant,
    try_timer: Pin<&'a mut Sleep>,
}

impl Exchange<'_> {
    /// Forwards the request (in `io.out`) with retries and relays the response. Returns whether
    /// the client connection can take another request.
    async fn forward(mut self, io: &mut Io, summary: Option<Summary>) -> bool {
        let Self {
            ctx, req, start, ..
        } = self;
        let route = &*ctx.route;
        route.deposit(start);
        let policy = route.policy();
        let deadline = start + policy.request_timeout;
        let mut failover = Failover::default();
        let mut sent = 0u32;
        let outcome = loop {
            let upstream = &route.upstream;
            let timeout = policy.connect_timeout;
            let connected = failover
                .connect(route, deadline, |addr| {
                    upstream.raw(addr, timeout, !req.idempotent, start)
                })
                .await;
            let (attempt, mut conn) = match connected {
                Ok(connected) => connected,
                Err(error) => break Err(error),
            };
            sent += 1;
            let addr = attempt.addr;
            let try_deadline = deadline.min(attempt.started() + policy.try_timeout);
            self.try_timer.as_mut().reset(try_deadline.into());
            let result = {
                let exchange = pin!(io.exchange(&mut conn, req, route, addr, timeout));
                tokio::select! {
                    biased;
                    result = exchange => Ok(result),
                    () = self.try_timer.as_mut() => Err(()),
                }
            };
            let error = match result {
                Ok(Err(Failure::ClientGone)) => {
                    tracing::debug!(service = %route.name, %addr, "client left; attempt abandoned");
                    return false;
                }
                Ok(Ok(head)) if head.status < 500 => {
                    attempt.succeeded();
                    break Ok((head, conn, addr));
                }
                Ok(Ok(head)) => {
                    attempt.failed(FailureKind::Status5xx);
                    if !(req.idempotent && may_retry(route, &policy, sent, false)) {
                        break Ok((head, conn, addr));
                    }
                    tracing::debug!(service = %route.name, %addr, status = head.status, "retrying");
                    ProxyError::UpstreamProtocol
                }
                Ok(Err(failure)) => {
                    let error = ProxyError::from(failure);
                    attempt.failed(FailureKind::Reset);
                    if !(req.idempotent && may_retry(route, &policy, sent, false)) {
                        break Err(error);
                    }
                    tracing::debug!(service = %route.name, %addr, %error, "retrying");
                    error
                }
                Err(_) => {
                    attempt.failed(FailureKind::Timeout);
                    let next = after_try_timeout(
                        route,
                        &policy,
                        sent,
                        req.idempotent,
                        try_deadline,
                        deadline,
                    );
                    match next {
                        Ok(error) => error,
                        Err(error) => break Err(error),
                    }
                }
            };
            failover.avoid(addr);
            failover.last_error = Some(error);
        };
        let elapsed = start.elapsed();
        let (status, error) = match &outcome {
            Ok((head, _, _)) => (head.status, None),
            Err(error) => (error.http_status().as_u16(), Some(error)),
        };
        ctx.account(summary, "HTTP/1.1", status, &failover, error, elapsed);
        match outcome {
            Ok((head, conn, addr)) => io.relay(conn, head, req.close, route, addr, start).await,
            Err(error) => {
                let close = req.close || error.side() == ErrorSide::Downstream;
                let response = errors::respond_raw_h1(&error, close);
                io.stream.write_all(&response).await.is_ok() && !close
            }
        }
    }
}

impl Io {
    /// Reads until `buf` holds `total` bytes or the client closes.
    async fn read_body(&mut self, total: usize) {
        while self.buf.len() < total {
            reserve(&mut self.buf, READ_CHUNK);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }

    /// Gives the read buffers back to the thread's [`POOL`] and drops large head buffers.
    fn release(&mut self) {
        recycle(std::mem::take(&mut self.buf));
        recycle(std::mem::take(&mut self.up));
        // Heads of ordinary requests and responses are worth keeping.
        for buf in [&mut self.out, &mut self.resp] {
            if buf.capacity() > SMALL_HEAD {
                *buf = Vec::new();
            }
        }
    }

    /// Sends the request and reads the response head; a pooled connection the endpoint closed
    /// meanwhile is replaced by a fresh one once, for idempotent requests.
    async fn exchange(
        &mut self,
        conn: &mut RawConn,
        req: &RequestHead,
        route: &Route,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<ResponseHead, Failure> {
        match self.send(conn, req).await {
            Err(Failure::Stale) if conn.reused && req.idempotent => {}
            result => return result,
        }
        let Ok(io) = route.upstream.dial(addr, connect_timeout).await else {
            return Err(Failure::Stale);
        };
        *conn = RawConn { io, reused: false };
        self.send(conn, req).await
    }

    async fn send(
        &mut self,
        conn: &mut RawConn,
        req: &RequestHead,
    ) -> Result<ResponseHead, Failure> {
        conn.io
            .write_all(&self.out)
            .await
            .map_err(|_| Failure::Stale)?;
        self.up.clear();
        // A client that closes its connection while it waits no longer wants the answer:
        // the attempt is abandoned, as hyper drops a request future then. Bytes from the client
        // (a pipelined request) end the watch.
        let mut watch_client = true;
        loop {
            reserve(&mut self.up, READ_CHUNK);
            let read = tokio::select! {
                biased;
                read = conn.io.read_buf(&mut self.up) => read,
                () = readable(&self.stream), if watch_client => {
                    match closed(&self.stream) {
                        Some(true) => return Err(Failure::ClientGone),
                        Some(false) => watch_client = false,
                        None => {}
                    }
                    continue;
                }
            };
            match read {
                Ok(0) | Err(_) if self.up.is_empty() => return Err(Failure::Stale),
                Ok(0) | Err(_) => return Err(Failure::Error(ProxyError::UpstreamReset)),
                Ok(_) => {}
            }
            loop {
                let parsed =
                    head::parse_response(&self.up, req.head_method, req.close, &mut self.resp);
                match parsed.map_err(Failure::Error)? {
                    None => break,
                    // No upgrade was asked for.
                    Some(head) if head.status == 101 => {
                        return Err(Failure::Error(ProxyError::UpstreamProtocol));
                    }
                    Some(head) if head.status < 200 => {
                        // Interim responses go on to the client (RFC 9110 §15.2); a client
                        // gone by now finds out when the final response is written.
                        let _ = self.stream.write_all(&self.resp).await;
                        self.up.advance(head.len);
                    }
                    Some(head) => return Ok(head),
                }
            }
        }
    }

    /// Sends the response (head in `resp`, body from `conn`) to the client and returns the
    /// connection to the pool when it can take another request. Returns whether the client
    /// connection can.
    async fn relay(
        &mut self,
        mut conn: RawConn,
        head: ResponseHead,
        close: bool,
        route: &Route,
        addr: SocketAddr,
        since: Instant,
    ) -> bool {
        self.up.advance(head.len);
        self.resp.reserve(self.up.len());
        let mut body = Body::new(head.framing);
        let Ok(done) = body.take(&mut self.up, &mut self.resp) else {
            return false;
        };
        if self.stream.write_all(&self.resp).await.is_err() {
            return false;
        }
        if !done && !self.relay_rest(&mut conn, &mut body).await {
            return false;
        }
        if head.keep_alive && self.up.is_empty() {
            route.upstream.put_raw(addr, conn.io, since);
        }
        !close && head.framing != Framing::UntilClose
    }

    /// Copies the rest of the body; false when either side failed before its end.
    async fn relay_rest(&mut self, conn: &mut RawConn, body: &mut Body) -> bool {
        let mut chunk = READ_CHUNK;
        loop {
            self.up.clear();
            reserve(&mut self.up, chunk);
            match conn.io.read_buf(&mut self.up).await {
                Ok(0) => return body.framing == Framing::UntilClose,
                // A long body: read more at a time.
                Ok(n) if n == self.up.capacity() => chunk = (chunk * 2).min(MAX_READ_CHUNK),
                Ok(_) => {}
                Err(_) => return false,
            }
            self.resp.clear();
            let Ok(done) = body.take(&mut self.up, &mut self.resp) else {
                return false;
            };
            if self.stream.write_all(&self.resp).await.is_err() {
                return false;
            }
            if done {
                return true;
            }
        }
    }
}

/// Where a response body ends.
struct Body {
    framing: Framing,
    /// Bytes left of a `content-length` body.
    left: u64,
    chunks: chunked::Scanner,
}

impl Body {
    fn new(framing: Framing) -> Self {
        let left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Self {
            framing,
            left,
            chunks: chunked::Scanner::default(),
        }
    }

    /// Moves the body's bytes from the front of `from` to `to`; true once the body is whole.
    fn take(&mut self, from: &mut BytesMut, to: &mut Vec<u8>) -> Result<bool, chunked::Malformed> {
        let (n, done) = match self.framing {
            Framing::Empty => (0, true),
            Framing::Length(_) => {
                let n = self.left.min(from.len() as u64);
                self.left -= n;
                (n as usize, self.left == 0)
            }
            Framing::Chunked => match self.chunks.scan(from)? {
                Some(end) => (end, true),
                None => (from.len(), false),
            },
            Framing::UntilClose => (from.len(), false),
        };
        to.extend_from_slice(&from[..n]);
        from.advance(n);
        Ok(done)
    }
}

/// Why an exchange failed.
enum Failure {
    /// The connection was closed (or refused the request) before any response byte arrived.
    Stale,
    Error(ProxyError),
    /// The client closed its connection.
    ClientGone,
}

impl From<Failure> for ProxyError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Stale | Failure::ClientGone => ProxyError::UpstreamReset,
            Failure::Error(error) => error,
        }
    }
}

/// Resolves when the client's socket has something to read (bytes or the end of the stream).
async fn readable(stream: &TcpStream) {
    let _ = std::future::poll_fn(|cx| stream.poll_read_ready(cx)).await;
}

/// After [`readable`]: whether the client closed (`Some(true)`), sent bytes (`Some(false)`), or
/// the readiness was stale (`None`; the next [`readable`] waits again).
fn closed(stream: &TcpStream) -> Option<bool> {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match stream.poll_peek(&mut cx, &mut buf) {
        std::task::Poll::Ready(Ok(0)) | std::task::Poll::Ready(Err(_)) => Some(true),
        std::task::Poll::Ready(Ok(_)) => Some(false),
        std::task::Poll::Pending => None,
    }
}

/// Makes room for a read of about `chunk` bytes.
fn reserve(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() == 0 {
        *buf = POOL.with_borrow_mut(Vec::pop).unwrap_or_default();
    }
    if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
}

thread_local! {
    /// Read buffers that idle connections gave back, for the next ones that need one: most
    /// requests then cost no allocation although idle connections hold no buffer.
    static POOL: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Most buffers kept in a thread's [`POOL`].
const POOL_SIZE: usize = 256;

/// Gives an empty, ordinary-sized buffer back to the pool (others are freed).
fn recycle(mut buf: BytesMut) {
    if !buf.is_empty() {
        return;
    }
    // Takes back the space before the read position, without allocating.
    buf.reserve(READ_CHUNK);
    if (READ_CHUNK..=4 * READ_CHUNK).contains(&buf.capacity()) {
        POOL.with_borrow_mut(|pool| {
            if pool.len() < POOL_SIZE {
                pool.push(buf);
            }
        });
    }
}
