//! Upstream connections, pooled per endpoint: HTTP/1.1 keep-alive connections (one request at a
//! time each, the newest ready idle one reused first) and multiplexed HTTP/2 connections
//! ([`crate::h2::conn`], each driven by a task of its own): one per endpoint, more while it is
//! at the endpoint's stream limit.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use foldhash::fast;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use tokio::io::AsyncRead;

use crate::body::ReqBody;
use crate::dial::{BoxIo, Dialer};
use crate::h2::conn::{self, Driver};
use crate::metrics::ServiceMetrics;
use crate::sync::lock;

/// Idle HTTP/1.1 connections older than this are closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 1024;
/// How long a reused HTTP/1.1 connection may take to become ready before another is used.
const READY_WAIT: Duration = Duration::from_millis(100);
/// A pooled connection idle for longer than this is checked for a close by the endpoint before
/// the fast path reuses it (a younger one is almost surely open, and the check costs a syscall).
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);
/// After a failed HTTP/2 dial, requests queued behind it fail at once for this long instead of
/// each dialing (and perhaps timing out) in turn.
const H2_FAST_FAIL: Duration = Duration::from_millis(250);
/// Keepalive of HTTP/2 connections to endpoints: a PING after 10 s without a frame, dropped
/// 20 s later without an answer (hyper's default timeout); closed after as long without a
/// request as an idle HTTP/1.1 connection is kept.
const H2_KEEPALIVE: conn::Keepalive = conn::Keepalive {
    interval: Duration::from_secs(10),
    timeout: Duration::from_secs(20),
    idle: IDLE_TIMEOUT,
};
/// HTTP/2 settings towards endpoints (hyper's client defaults): flow-control windows large
/// enough for a fast endpoint on a fast network, and at most this much buffered per stream.
const H2_STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const H2_CONN_WINDOW: u32 = 5 * 1024 * 1024;
const H2_MAX_SEND_BUFFER: usize = 1024 * 1024;
const H2_MAX_HEADER_LIST: u32 = 64 * 1024;
/// Streams opened before the endpoint's SETTINGS say how many it takes.
const H2_INITIAL_MAX_STREAMS: u32 = 100;
/// Most HTTP/2 connections to one endpoint (of one route): with hyper's default of 200 streams
/// per connection, 3,200 requests at once.
const H2_MAX_CONNS_PER_ENDPOINT: usize = 16;

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect timed out")]
    Timeout,
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
    #[error("handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
    #[error("HTTP/2 handshake failed: {0}")]
    H2(#[from] h2::Error),
}

/// An HTTP/1.1 connection ready for one request; `reused` when it came from the idle pool (and
/// so may have been closed by the endpoint in the meantime).
pub(crate) struct Sender {
    pub(crate) sender: http1::SendRequest<ReqBody>,
    pub(crate) reused: bool,
}

/// A handle on an endpoint's HTTP/2 connection.
#[derive(Clone)]
pub(crate) struct H2Conn {
    pub(crate) shared: Arc<conn::Shared>,
}

impl Drop for H2Conn {
    fn drop(&mut self) {
        // The last handle besides the driver's own: the driver ends once no stream is left.
        if Arc::strong_count(&self.shared) <= 2 {
            self.shared.kick();
        }
    }
}

impl H2Conn {
    /// This handle once the connection can open a stream (a connection that cannot is closed
    /// for good: the next request dials anew).
    async fn ready(self) -> Result<Self, h2::Error> {
        std::future::poll_fn(|cx| self.shared.poll_ready(cx)).await?;
        Ok(self)
    }
}

/// The connections of one route to all its endpoints.
pub(crate) struct Upstream {
    dialer: Arc<dyn Dialer>,
    /// For the count of HTTP/2 connections.
    metrics: ServiceMetrics,
    h1: IdleList<http1::SendRequest<ReqBody>>,
    h2: Mutex<HashMap<SocketAddr, Arc<H2Slot>, fast::RandomState>>,
    /// Idle byte streams of the HTTP/1.1 fast path ([`crate::h1`]).
    raw: IdleList<BoxIo>,
}

/// Idle connections of one kind, per endpoint, newest last.
struct IdleList<T>(Mutex<HashMap<SocketAddr, Vec<Idle<T>>, fast::RandomState>>);

struct Idle<T> {
    conn: T,
    since: Instant,
}

impl<T> Default for IdleList<T> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<T> IdleList<T> {
    /// Keeps `conn`, idle since `since`, unless `addr` has [`MAX_IDLE_PER_ENDPOINT`] already.
    fn put(&self, addr: SocketAddr, conn: T, since: Instant) {
        let mut idle = lock(&self.0);
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push(Idle { conn, since });
        }
    }

    /// Takes the connection to `addr` that `pick` chooses from the list (oldest first).
    fn take(
        &self,
        addr: SocketAddr,
        pick: impl FnOnce(&[Idle<T>]) -> Option<usize>,
    ) -> Option<Idle<T>> {
        let mut idle = lock(&self.0);
        let list = idle.get_mut(&addr)?;
        let i = pick(list)?;
        Some(list.remove(i))
    }

    fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        lock(&self.0).retain(|addr, _| keep(addr));
    }
}

/// A byte stream to an endpoint that the HTTP/1.1 fast path drives itself, one request at a
/// time.
pub(crate) struct RawConn {
    pub(crate) io: BoxIo,
    /// Taken from the idle pool: the endpoint may have closed it meanwhile.
    pub(crate) reused: bool,
}

#[derive(Default)]
struct H2Slot {
    /// The live connections, oldest first: a stream goes on the oldest with room, so that
    /// extra ones opened under a burst go idle (and are closed) once it is over.
    conns: Mutex<Vec<H2Conn>>,
    /// Held while dialing the first connection, so that one dial serves every request waiting
    /// for it.
    dialing: tokio::sync::Mutex<Option<(Instant, io::ErrorKind)>>,
    /// A request is dialing a connection beyond the first: the others wait for room, or for
    /// it to be done (`grown`).
    growing: AtomicBool,
    grown: tokio::sync::Notify,
}

/// What an endpoint's connections offer a new stream.
enum Room {
    /// This one takes it.
    On(H2Conn),
    /// Every live connection is full (at the endpoint's SETTINGS_MAX_CONCURRENT_STREAMS);
    /// there are this many.
    Full(Vec<H2Conn>),
}

impl H2Slot {
    /// The oldest live connection with room for a stream, else the full ones (none: no live
    /// connection). Forgets closed connections.
    fn room(&self) -> Room {
        let mut conns = lock(&self.conns);
        conns.retain(|conn| !conn.shared.is_closed());
        match conns.iter().find(|conn| conn.shared.has_room()) {
            Some(conn) => Room::On(conn.clone()),
            None => Room::Full(conns.clone()),
        }
    }

    fn add(&self, conn: H2Conn) {
        lock(&self.conns).push(conn);
    }
}

/// Clears [`H2Slot::growing`] when the request that set it is done dialing, or dropped.
struct Growing<'a>(&'a H2Slot);

impl Drop for Growing<'_> {
    fn drop(&mut self) {
        self.0.growing.store(false, Ordering::Release);
        self.0.grown.notify_waiters();
    }
}

/// Returns an HTTP/1.1 connection to the idle pool once its response has been read whole.
pub(crate) struct Checkin {
    upstream: Arc<Upstream>,
    addr: SocketAddr,
    sender: http1::SendRequest<ReqBody>,
}

impl std::fmt::Debug for Checkin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkin").field("addr", &self.addr).finish()
    }
}

impl Checkin {
    pub(crate) fn new(
        upstream: Arc<Upstream>,
        addr: SocketAddr,
        sender: http1::SendRequest<ReqBody>,
    ) -> Self {
        Self {
            upstream,
            addr,
            sender,
        }
    }

    pub(crate) fn put(self) {
        if !self.sender.is_closed() {
            self.upstream.h1.put(self.addr, self.sender, Instant::now());
        }
    }
}

impl Upstream {
    pub(crate) fn new(dialer: Arc<dyn Dialer>, metrics: ServiceMetrics) -> Self {
        Self {
            dialer,
            metrics,
            h1: IdleList::default(),
            h2: Mutex::default(),
            raw: IdleList::default(),
        }
    }

    /// A byte stream to `addr` for the fast path: an idle one if any is open, else a new one.
    /// `check`: make sure an idle one is still open however briefly it was idle (for requests
    /// that cannot be sent again if it was not). `now`: about now (the request's start).
    pub(crate) async fn raw(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        check: bool,
        now: Instant,
    ) -> Result<RawConn, ConnectError> {
        if let Some(io) = self.take_raw(addr, check, now) {
            return Ok(RawConn { io, reused: true });
        }
        let io = Box::pin(self.dial(addr, timeout)).await?;
        Ok(RawConn { io, reused: false })
    }

    fn take_raw(&self, addr: SocketAddr, check: bool, now: Instant) -> Option<BoxIo> {
        loop {
            let Idle { mut conn, since } = self.raw.take(addr, |list| list.len().checked_sub(1))?;
            let idle = now.saturating_duration_since(since);
            if idle > IDLE_TIMEOUT {
                continue;
            }
            if (idle < CHECK_IDLE_AFTER && !check) || is_open(&mut conn) {
                return Some(conn);
            }
        }
    }

    /// Returns a fast-path stream whose last response was read whole to the idle pool; `since`:
    /// when its last request started (a little before it became idle).
    pub(crate) fn put_raw(&self, addr: SocketAddr, io: BoxIo, since: Instant) {
        self.raw.put(addr, io, since);
    }

    /// Opens a byte stream to `addr` within `timeout`.
    pub(crate) async fn dial(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<BoxIo, ConnectError> {
        match tokio::time::timeout(timeout, self.dialer.dial(addr)).await {
            Ok(Ok(io)) => Ok(io),
            Ok(Err(e)) => Err(ConnectError::Io(e)),
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    /// An HTTP/1.1 connection to `addr`: an idle one if any is ready, else a new one.
    pub(crate) async fn h1(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Sender, ConnectError> {
        while let Some(Idle {
            conn: mut sender,
            since,
        }) = self.take_idle_h1(addr)
        {
            if since.elapsed() > IDLE_TIMEOUT || sender.is_closed() {
                continue;
            }
            // Boxed, like the dial below: the pooled path stays a small future.
            if sender.is_ready()
                || matches!(
                    Box::pin(tokio::time::timeout(READY_WAIT, sender.ready())).await,
                    Ok(Ok(()))
                )
            {
                return Ok(Sender {
                    sender,
                    reused: true,
                });
            }
        }
        if let Some(io) = self.take_raw(addr, true, Instant::now()) {
            // One the fast path left idle: hyper can drive it as well.
            return Box::pin(h1_handshake(io, addr, true)).await;
        }
        Box::pin(self.h1_fresh(addr, timeout)).await
    }

    /// Takes an idle HTTP/1.1 connection to `addr`: the newest one ready for a request, else
    /// the newest one. A connection goes back to the pool as soon as its response body has been
    /// read, and only becomes ready once its own task has seen the end of that response: under
    /// load the newest is often not ready yet while older ones are, and waiting for it would
    /// cost a timer and another round through the scheduler.
    fn take_idle_h1(&self, addr: SocketAddr) -> Option<Idle<http1::SendRequest<ReqBody>>> {
        self.h1.take(addr, |list| {
            list.iter()
                .rposition(|c| c.conn.is_ready())
                .or(list.len().checked_sub(1))
        })
    }

    /// A new HTTP/1.1 connection to `addr`.
    pub(crate) async fn h1_fresh(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Sender, ConnectError> {
        let io = self.dial(addr, timeout).await?;
        h1_handshake(io, addr, false).await
    }

    /// A handle on an HTTP/2 connection to `addr` with room for a stream. Streams go on one
    /// connection while it has room; when every connection is at the endpoint's limit
    /// (SETTINGS_MAX_CONCURRENT_STREAMS), one request dials another, up to
    /// [`H2_MAX_CONNS_PER_ENDPOINT`], while the rest wait for a stream to end (as HAProxy's
    /// and Envoy's pools do). The first connection is dialed once for every request waiting
    /// for it.
    pub(crate) async fn h2(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<H2Conn, ConnectError> {
        let slot = lock(&self.h2).entry(addr).or_default().clone();
        if let Room::On(conn) = slot.room() {
            return Ok(conn);
        }
        // Boxed: the common path, a connection with room, stays a small future.
        Box::pin(self.h2_wait(&slot, addr, timeout)).await
    }

    /// [`Upstream::h2`] when no connection to `addr` has room: dials the first, or another,
    /// or waits for room.
    async fn h2_wait(
        &self,
        slot: &H2Slot,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<H2Conn, ConnectError> {
        loop {
            // Before looking: a connection added after the look wakes this request.
            let grown = slot.grown.notified();
            let full = match slot.room() {
                Room::On(conn) => return Ok(conn),
                Room::Full(full) => full,
            };
            if full.is_empty() {
                let conn = self.h2_connect(slot, addr, timeout).await?;
                return Ok(conn.ready().await?);
            }
            if full.len() < H2_MAX_CONNS_PER_ENDPOINT && !slot.growing.swap(true, Ordering::AcqRel)
            {
                let growing = Growing(slot);
                match self.h2_dial(addr, timeout).await {
                    Ok(conn) => {
                        slot.add(conn.clone());
                        drop(growing);
                        tracing::debug!(%addr, conns = full.len() + 1, "an endpoint's HTTP/2 connections are full: opened another");
                        return Ok(conn.ready().await?);
                    }
                    Err(error) => {
                        tracing::debug!(%addr, %error, "cannot open another HTTP/2 connection; waiting for room");
                    }
                }
                drop(growing);
            }
            let mut grown = pin!(grown);
            poll_fn(|cx| {
                if grown.as_mut().poll(cx).is_ready() || room_on_any(&full, cx) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
        }
    }

    /// Dials `slot`'s first connection, or waits for the request already dialing it.
    async fn h2_connect(
        &self,
        slot: &H2Slot,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<H2Conn, ConnectError> {
        let mut last_failure = slot.dialing.lock().await;
        match slot.room() {
            Room::On(conn) => return Ok(conn),
            // Dialed meanwhile, and full already: the caller waits for room on it.
            Room::Full(full) if !full.is_empty() => return Ok(full[0].clone()),
            Room::Full(_) => {}
        }
        if let Some((at, kind)) = *last_failure
            && at.elapsed() < H2_FAST_FAIL
        {
            return Err(ConnectError::Io(kind.into()));
        }
        let result = self.h2_dial(addr, timeout).await;
        match &result {
            Ok(conn) => {
                slot.add(conn.clone());
                *last_failure = None;
            }
            Err(ConnectError::Io(e)) => *last_failure = Some((Instant::now(), e.kind())),
            Err(_) => *last_failure = Some((Instant::now(), io::ErrorKind::TimedOut)),
        }
        result
    }

    async fn h2_dial(&self, addr: SocketAddr, timeout: Duration) -> Result<H2Conn, ConnectError> {
        let io = self.dial(addr, timeout).await?;
        let config = conn::Config {
            stream_window: H2_STREAM_WINDOW,
            conn_window: H2_CONN_WINDOW,
            max_concurrent_streams: H2_INITIAL_MAX_STREAMS,
            max_header_list_size: H2_MAX_HEADER_LIST,
            max_send_buffer: H2_MAX_SEND_BUFFER,
        };
        let (driver, shared) = match tokio::time::timeout(timeout, Driver::client(io, config)).await
        {
            Ok(Ok(started)) => started,
            Ok(Err(error)) => return Err(ConnectError::Io(error)),
            Err(_) => return Err(ConnectError::Timeout),
        };
        let driven = shared.clone();
        let counted = self.metrics.upstream_h2_connection();
        tokio::spawn(async move {
            driver.run(driven, H2_KEEPALIVE).await;
            drop(counted);
            tracing::debug!(%addr, "upstream HTTP/2 connection ended");
        });
        Ok(H2Conn { shared })
    }

    /// Closes pooled connections to endpoints `keep` rejects (removed from the service).
    pub(crate) fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.h1.retain(&keep);
        lock(&self.h2).retain(|addr, _| keep(addr));
        self.raw.retain(keep);
    }
}

/// Whether any of `conns` has room for a stream, or takes no more streams (else `cx` is woken
/// when one does).
fn room_on_any(conns: &[H2Conn], cx: &mut Context<'_>) -> bool {
    conns
        .iter()
        .any(|conn| conn.shared.poll_ready(cx).is_ready())
}

/// Starts hyper's HTTP/1.1 client on `io`, a stream to `addr`.
async fn h1_handshake(io: BoxIo, addr: SocketAddr, reused: bool) -> Result<Sender, ConnectError> {
    let (sender, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(io))
        .await?;
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::trace!(%addr, %error, "upstream HTTP/1.1 connection ended");
        }
    });
    Ok(Sender { sender, reused })
}

/// Whether an idle stream is still open: a read that would block means nothing arrived, not
/// even the end of the stream. Unsolicited bytes make it unusable too.
fn is_open(io: &mut BoxIo) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(io)
        .poll_read(&mut cx, &mut buf)
        .is_pending()
}
