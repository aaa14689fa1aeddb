//! HTTP/2 connections on h2's frame codec, both sides of the proxy: clients' connections
//! ([`Driver::server`]) and the pooled connections to endpoints ([`Driver::client`]).
//!
//! h2's `server::Connection` and `client::Connection` keep every stream in a shared store
//! behind a lock, move each frame through per-stream queues and a prioritizer, and check and
//! re-check headers on the way: for a small request that was two thirds of the proxy's user
//! time, more than HAProxy's whole request. Here the reading half of the frame layer stays
//! h2's own (`h2::Codec`, enabled by h2's `unstable` feature: framing, HPACK decoding,
//! CONTINUATION, padding, frame and header-list size limits, all of it fuzzed upstream); the
//! writing half is [`super::write`], which encodes header blocks without a dynamic table
//! ([`super::hpack`]); the connection above both is this module: settings, pings, flow control both ways, stream states and limits, resets and
//! GOAWAY (RFC 9113 §5, §6). It serves a proxy: no server push, no priorities (ignored, as
//! RFC 9113 §5.3.2 allows), no extended CONNECT.
//!
//! A stream is the same on both sides: what it receives (a request body on the server side,
//! a response on the client side) and what it sends. The [`Driver`] reads and writes the
//! socket; the stream handles ([`RecvBody`], [`SendBody`], [`Respond`], [`ResponseFuture`])
//! share its state through one lock ([`Shared`]). A server connection is driven by the client
//! connection's own task, so the lock is never contended and frames a handle queues go out
//! with the driver's next flush, in the same task poll. A client connection has a task of its
//! own, shared by every client connection that sends requests on it: handles that queue
//! frames wake it.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use h2::Codec;
use h2::Reason;
use h2::frame::{
    self, Frame, GoAway, Headers, Ping, Pseudo, Reset, Settings, StreamId, WindowUpdate,
};
use h2::proto::{Error as ProtoError, Initiator};

use super::hpack;
use super::write::Writer;
use http::{HeaderMap, Method, Request, Response, Uri, Version, uri};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// What a connection advertises and enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// The receive window of each stream, and of the connection.
    pub(crate) stream_window: u32,
    pub(crate) conn_window: u32,
    /// Server: streams the client may have open at once; more are refused (`REFUSED_STREAM`).
    /// Client: streams opened at once until the server's SETTINGS say how many it takes.
    pub(crate) max_concurrent_streams: u32,
    /// Largest decoded header list; larger requests get a 431.
    pub(crate) max_header_list_size: u32,
    /// Data queued per stream before its sender is held back.
    pub(crate) max_send_buffer: usize,
}

/// RFC 9113 §6.5.2: the initial window before SETTINGS say otherwise.
const DEFAULT_WINDOW: i64 = 65_535;
/// Largest window a WINDOW_UPDATE may open (§6.9.1).
const MAX_WINDOW: i64 = (1 << 31) - 1;
/// Client resets of unfinished streams tolerated (net of streams that completed) before the
/// connection is closed with `ENHANCE_YOUR_CALM`: a client that opens and cancels streams in a
/// loop makes the proxy start requests nobody waits for (CVE-2023-44487).
const MAX_CLIENT_RESETS: u32 = 200;
/// Control frames (pongs, settings acks, resets) waiting for a client that does not read.
const MAX_CONTROL_QUEUE: usize = 10_000;
/// DATA frames with less payload than this are small: each one buffered costs the difference
/// (h2 0.4.20's measure). Buffered small frames may cost at most a connection window, so a
/// client cannot make the proxy hold a window's worth of one-byte frames.
const SMALL_FRAME: usize = 256;
/// Queued data chunks are joined up to this size (the default largest frame).
const COALESCE: usize = 16_384;

/// The connection's state, shared by the driver and the stream handles.
pub(crate) struct Shared {
    state: Mutex<State>,
}

struct State {
    config: Config,
    /// This side opens the streams (a connection to an endpoint).
    client: bool,
    /// Client: the driver's task, woken when a handle queued something to send.
    driver: Option<Waker>,
    /// Client: the next stream to open, how many the server takes at once, and who waits for
    /// one of those to end.
    next_id: u32,
    max_open: usize,
    ready_waiters: Vec<Waker>,
    streams: foldhash::HashMap<u32, StreamState>,
    /// Frames that are not a stream's response: settings acks, pongs, window updates, resets
    /// of streams without a queue, GOAWAY.
    control: VecDeque<Frame<Bytes>>,
    /// Streams with something queued to send, in turn.
    sendable: VecDeque<u32>,
    /// What the client lets the proxy send on the connection.
    send_window: i64,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE.
    peer_initial_window: i64,
    max_send_frame: usize,
    /// What the client may still send on the connection, and what was consumed since the last
    /// WINDOW_UPDATE.
    recv_window: i64,
    recv_unreleased: u32,
    /// Server: the highest stream the client opened.
    last_id: u32,
    /// No new streams: a GOAWAY went out or came in.
    going_away: bool,
    /// The connection failed: every handle sees this.
    broken: Option<ProtoError>,
    client_resets: u32,
    /// What the buffered small DATA frames cost (see [`SMALL_FRAME`]).
    small_frames: usize,
    /// Header blocks are encoded here and split off, and a request's authority and path are
    /// copied here for its `Uri`.
    blocks: BytesMut,
    /// The queues of ended streams, for new ones.
    spare: Vec<Queues>,
}

/// A stream's queues: what it received, what it sends.
type Queues = (VecDeque<Bytes>, VecDeque<Out>);

/// Queues of ended streams kept for new ones, and the largest kept.
const MAX_SPARE: usize = 32;
const MAX_SPARE_CAPACITY: usize = 16;

#[derive(Default)]
struct StreamState {
    /// Client: the response head, until [`ResponseFuture`] takes it.
    head: Option<Response<()>>,
    head_received: bool,
    // What the stream receives: the request body (server), the response body (client).
    recv: VecDeque<Bytes>,
    recv_trailers: Option<HeaderMap>,
    recv_end: bool,
    recv_window: i64,
    recv_unreleased: u32,
    /// Received but not yet released data bytes (given back to the connection window if the
    /// stream ends with data still queued).
    recv_buffered: usize,
    content_length: Option<u64>,
    received: u64,
    recv_waker: Option<Waker>,
    // What it sends: the response (server), the request (client).
    queue: VecDeque<Out>,
    queued_data: usize,
    send_window: i64,
    /// The end of the response is queued.
    send_end: bool,
    send_waker: Option<Waker>,
    /// Reset by either side: the stream is over.
    reset: Option<Reason>,
    /// Who reset it.
    reset_by: Option<Initiator>,
    /// Live handles.
    handles: u8,
    in_sendable: bool,
}

/// A frame a stream has queued.
enum Out {
    /// A header block, encoded (see [`State::encode_block`]); with `true`, the last frame.
    Headers(Bytes, bool),
    Data(Bytes, bool),
    Reset(Reason),
}

/// Room for header blocks taken at a time: blocks share it until all of them are gone.
const BLOCK_ROOM: usize = 4096;

impl State {
    /// Encodes a header block, once: the encoding has no state ([`super::hpack`]), so a block
    /// goes on any connection, and a request sent again costs nothing more.
    fn encode_block(&mut self, pseudo: &Pseudo, fields: &HeaderMap) -> Bytes {
        self.make_room();
        hpack::encode(pseudo, fields, &mut self.blocks);
        self.blocks.split().freeze()
    }

    /// A copy of `bytes` that shares an allocation with others.
    fn share(&mut self, bytes: &[u8]) -> Bytes {
        self.make_room();
        self.blocks.extend_from_slice(bytes);
        self.blocks.split().freeze()
    }

    fn make_room(&mut self) {
        if self.blocks.capacity() < BLOCK_ROOM / 4 {
            self.blocks.reserve(BLOCK_ROOM);
        }
    }

    /// Queues for a new stream: an ended stream's, or new ones.
    fn queues(&mut self) -> Queues {
        self.spare.pop().unwrap_or_default()
    }

    fn error(&self) -> h2::Error {
        match &self.broken {
            Some(error) => error.clone().into(),
            None => Reason::CANCEL.into(),
        }
    }

    /// Why stream `id` is over, as its handles report it: the connection's failure, or the
    /// reset (with who sent it: a `REFUSED_STREAM` from the peer means "not processed").
    fn stream_error(&self, id: u32) -> h2::Error {
        let Some(stream) = self.streams.get(&id) else {
            return self.error();
        };
        match (stream.reset, stream.reset_by) {
            (Some(reason), Some(by)) if by == Initiator::Remote || self.broken.is_none() => {
                ProtoError::Reset(StreamId::from(id), reason, by).into()
            }
            _ => self.error(),
        }
    }

    /// Client: takes no new streams (gone away, failed, or out of stream ids).
    fn is_closed(&self) -> bool {
        self.broken.is_some() || self.going_away || self.next_id > MAX_STREAM_ID
    }

    /// Client: why no stream can be opened, if none can.
    fn refusal(&self) -> Option<h2::Error> {
        if !self.is_closed() {
            return None;
        }
        Some(match &self.broken {
            Some(error) => error.clone().into(),
            None => ProtoError::GoAway(Bytes::new(), Reason::NO_ERROR, Initiator::Remote).into(),
        })
    }

    /// Client: whether a stream may be opened now (fewer are open than the server takes); an
    /// error once the connection takes no new streams.
    fn room(&self) -> Result<bool, h2::Error> {
        match self.refusal() {
            Some(error) => Err(error),
            None => Ok(self.streams.len() < self.max_open),
        }
    }

    /// Client: a stream may be opened again, or the connection takes none any more.
    fn wake_ready(&mut self) {
        for waker in self.ready_waiters.drain(..) {
            waker.wake();
        }
    }

    /// Client: the driver has something to write.
    fn kick(&mut self) {
        if let Some(waker) = self.driver.take() {
            waker.wake();
        }
    }

    fn schedule(&mut self, id: u32) {
        if let Some(stream) = self.streams.get_mut(&id)
            && !stream.in_sendable
        {
            stream.in_sendable = true;
            self.sendable.push_back(id);
        }
        self.kick();
    }

    /// A frame for the peer that is no stream's to send.
    fn send_control(&mut self, frame: Frame<Bytes>) {
        self.control.push_back(frame);
        self.kick();
    }

    /// Stream `id` was never opened (a frame on it is a connection error, §5.1).
    fn is_idle(&self, id: u32) -> bool {
        if self.client {
            id.is_multiple_of(2) || id >= self.next_id
        } else {
            id > self.last_id
        }
    }

    /// Resets a stream from this side: what it had queued is dropped, the RST_STREAM goes out
    /// next, and the handles see the reset.
    fn reset_stream(&mut self, id: u32, reason: Reason) {
        if !self.streams.contains_key(&id) {
            self.send_control(Reset::new(StreamId::from(id), reason).into());
        } else if self.end_stream(id, reason, Initiator::Library) {
            self.send_control(Reset::new(StreamId::from(id), reason).into());
            self.wake(id);
            self.maybe_remove(id);
        }
    }

    /// The peer is done with stream `id` (its RST_STREAM, or above its GOAWAY's last stream).
    fn remote_reset(&mut self, id: u32, reason: Reason) {
        if self.end_stream(id, reason, Initiator::Remote) {
            self.wake(id);
            self.maybe_remove(id);
        }
    }

    /// Marks stream `id` reset and drops what it had queued; false if it was reset already
    /// (or is gone).
    fn end_stream(&mut self, id: u32, reason: Reason, by: Initiator) -> bool {
        match self.streams.get_mut(&id) {
            Some(stream) if stream.reset.is_none() => {
                stream.reset = Some(reason);
                stream.reset_by = Some(by);
                stream.queue.clear();
                stream.queued_data = 0;
                true
            }
            _ => false,
        }
    }

    fn wake(&mut self, id: u32) {
        if let Some(stream) = self.streams.get_mut(&id) {
            if let Some(waker) = stream.recv_waker.take() {
                waker.wake();
            }
            if let Some(waker) = stream.send_waker.take() {
                waker.wake();
            }
        }
    }

    /// Forgets a stream that is over and no longer held; data it had received but nobody read
    /// goes back to the connection window.
    fn maybe_remove(&mut self, id: u32) {
        let Some(stream) = self.streams.get(&id) else {
            return;
        };
        let over = stream.reset.is_some() || (stream.recv_end && stream.send_end);
        if stream.handles > 0 || !over || !stream.queue.is_empty() {
            return;
        }
        let buffered = stream.recv_buffered;
        let small: usize = stream.recv.iter().map(|b| small_cost(b.len())).sum();
        self.small_frames -= small;
        if stream.reset.is_none() {
            // A stream that ran its course makes up for a reset one.
            self.client_resets = self.client_resets.saturating_sub(1);
        }
        if let Some(StreamState {
            mut recv, queue, ..
        }) = self.streams.remove(&id)
            && self.spare.len() < MAX_SPARE
            && recv.capacity().max(queue.capacity()) <= MAX_SPARE_CAPACITY
        {
            recv.clear();
            self.spare.push((recv, queue));
        }
        self.release_conn(buffered);
        self.wake_ready();
        // Client: the driver ends once a connection going away has no stream left.
        if self.streams.is_empty() {
            self.kick();
        }
    }

    /// Data consumed: the client may send that much more on the connection.
    fn release_conn(&mut self, n: usize) {
        self.recv_unreleased = self.recv_unreleased.saturating_add(n as u32);
        if self.recv_unreleased >= self.config.conn_window / 2 {
            let n = std::mem::take(&mut self.recv_unreleased);
            self.recv_window += i64::from(n);
            self.send_control(WindowUpdate::new(StreamId::zero(), n).into());
        }
    }

    fn release(&mut self, id: u32, n: usize) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let n = n.min(stream.recv_buffered);
        stream.recv_buffered -= n;
        stream.recv_unreleased = stream.recv_unreleased.saturating_add(n as u32);
        if !stream.recv_end
            && stream.reset.is_none()
            && stream.recv_unreleased >= self.config.stream_window / 2
        {
            let n = std::mem::take(&mut stream.recv_unreleased);
            stream.recv_window += i64::from(n);
            self.send_control(WindowUpdate::new(StreamId::from(id), n).into());
        }
        self.release_conn(n);
    }

    /// A handle went away; the last one ends the stream: reset (`CANCEL`) if what it sends was
    /// not finished; if what it receives is still coming, `CANCEL` on a client (the response
    /// is not wanted) and `NO_ERROR` on a server (RFC 9113 §8.1: answered already).
    fn drop_handle(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        stream.handles -= 1;
        if stream.handles > 0 {
            return;
        }
        if stream.reset.is_none() {
            if !stream.send_end {
                self.reset_stream(id, Reason::CANCEL);
                return;
            }
            if !stream.recv_end {
                let reason = if self.client {
                    Reason::CANCEL
                } else {
                    Reason::NO_ERROR
                };
                stream.queue.push_back(Out::Reset(reason));
                stream.reset = Some(reason);
                stream.reset_by = Some(Initiator::Library);
                self.schedule(id);
                return;
            }
        }
        self.maybe_remove(id);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops taking new streams and tells the client so (GOAWAY, `NO_ERROR`): streams it
    /// opened so far are still served.
    pub(crate) fn graceful_shutdown(&self) {
        let mut state = self.lock();
        if !state.going_away {
            state.going_away = true;
            let last = StreamId::from(state.last_id);
            state.send_control(GoAway::new(last, Reason::NO_ERROR).into());
        }
    }

    /// Client: lets the driver look again (its last outside handle is going away).
    pub(crate) fn kick(&self) {
        self.lock().kick();
    }

    /// Client: takes no new streams (gone away, failed, or out of stream ids).
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().is_closed()
    }

    /// Client: a stream may be opened now.
    pub(crate) fn has_room(&self) -> bool {
        matches!(self.lock().room(), Ok(true))
    }

    /// Client: ready once a stream may be opened; an error once the connection takes no new
    /// streams.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        let mut state = self.lock();
        match state.room() {
            Ok(false) => {
                state.ready_waiters.push(cx.waker().clone());
                Poll::Pending
            }
            Ok(true) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

/// Stream identifiers are 31 bits (§5.1.1).
const MAX_STREAM_ID: u32 = (1 << 31) - 1;

/// Client: opens a stream with a request head (and `end`: no body). The stream is the
/// caller's to close: with the body ([`SendBody`]), and by reading or dropping the response.
pub(crate) fn send_request(
    shared: &Arc<Shared>,
    block: Bytes,
    end: bool,
) -> Result<(ResponseFuture, SendBody<Arc<Shared>>), h2::Error> {
    let mut state = shared.lock();
    if let Some(error) = state.refusal() {
        return Err(error);
    }
    let id = state.next_id;
    state.next_id += 2;
    let (recv, mut queue) = state.queues();
    queue.push_back(Out::Headers(block, end));
    let stream = StreamState {
        recv_window: i64::from(state.config.stream_window),
        send_window: state.peer_initial_window,
        send_end: end,
        // The response future (then the response body) and the request body.
        handles: 2,
        recv,
        queue,
        ..StreamState::default()
    };
    state.streams.insert(id, stream);
    state.schedule(id);
    drop(state);
    Ok((
        ResponseFuture {
            id,
            shared: Some(shared.clone()),
        },
        SendBody {
            id,
            shared: shared.clone(),
        },
    ))
}

/// Client: the response head of a stream.
pub(crate) struct ResponseFuture {
    id: u32,
    /// `None` once the head was handed out (with this handle, as the body's).
    shared: Option<Arc<Shared>>,
}

impl Future for ResponseFuture {
    type Output = Result<Response<RecvBody<Arc<Shared>>>, h2::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let id = self.id;
        let Some(shared) = &self.shared else {
            return Poll::Ready(Err(Reason::CANCEL.into()));
        };
        let mut guard = shared.lock();
        let state = &mut *guard;
        let Some(stream) = state.streams.get_mut(&id) else {
            return Poll::Ready(Err(state.error()));
        };
        if let Some(head) = stream.head.take() {
            drop(guard);
            let shared = self.shared.take().expect("checked");
            let (parts, ()) = head.into_parts();
            return Poll::Ready(Ok(Response::from_parts(parts, RecvBody { id, shared })));
        }
        if stream.reset.is_some() {
            return Poll::Ready(Err(state.stream_error(id)));
        }
        stream.recv_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.lock().drop_handle(self.id);
        }
    }
}

/// Client: how [`Driver::run`] looks after a connection the endpoint has gone quiet on (as
/// hyper's and linkerd2-proxy's HTTP/2 clients do): an endpoint whose host died without a word
/// (no FIN, no RST) would otherwise keep its connection, and the requests put on it, until TCP
/// gives up, many minutes later.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keepalive {
    /// Silence (no frame received) after which the endpoint is sent a PING.
    pub(crate) interval: Duration,
    /// How long a PING may go without any frame back before the connection is dropped.
    pub(crate) timeout: Duration,
    /// A connection without a request for this long is closed (GOAWAY): the next request dials
    /// afresh.
    pub(crate) idle: Duration,
}

/// The PING payload of keepalives.
const KEEPALIVE_PING: [u8; 8] = *b"peerd-ka";

/// Where [`Driver::run`]'s keepalive stands.
struct Watch {
    config: Keepalive,
    /// A PING is out and nothing has come back since.
    pinged: bool,
    /// Time without a stream, counted in timer periods.
    idle: Duration,
}

impl Watch {
    /// The timer period in the current state: waiting for a PING's answer, or for silence.
    fn period(&self) -> Duration {
        if self.pinged {
            self.config.timeout
        } else {
            self.config.interval
        }
    }
}

/// Reads and writes the connection; hands out new requests.
pub(crate) struct Driver<T> {
    /// Reads frames; writes go through `writer`, to the socket the codec holds.
    codec: Codec<T, Bytes>,
    writer: Writer,
    /// New streams decoded but not yet handed out, with their request heads.
    accepted: VecDeque<(u32, Request<()>, Bytes)>,
    got_settings: bool,
    /// The socket is done (end, error or a connection error sent): flush and stop.
    closing: bool,
    /// A frame arrived since the keepalive last looked (client).
    heard: bool,
    /// A stream's frame (HEADERS, DATA) arrived since the keepalive last looked (client): the
    /// connection was used, even if no stream is open when it looks.
    used: bool,
}

/// A new request and the handle to answer it.
pub(crate) struct Accepted<'a> {
    pub(crate) request: Request<RecvBody<&'a Shared>>,
    /// The request's head as received (pseudo-header fields and all), encoded to send on.
    pub(crate) block: Bytes,
    pub(crate) respond: Respond<'a>,
}

/// The client's connection preface (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl<T: AsyncRead + AsyncWrite + Unpin> Driver<T> {
    /// Starts serving a connection whose preface has been read: the server's SETTINGS (and the
    /// connection window beyond the default) go out with the first flush.
    pub(crate) fn server(io: T, config: Config) -> (Self, Shared) {
        let mut settings = Settings::default();
        settings.set_max_concurrent_streams(Some(config.max_concurrent_streams));
        Self::build(io, config, settings, false)
    }

    /// Starts a connection to an endpoint: the preface now, the client's SETTINGS with the
    /// first flush. [`Driver::run`] drives it; requests go through [`send_request`].
    pub(crate) async fn client(mut io: T, config: Config) -> io::Result<(Self, Arc<Shared>)> {
        io.write_all(PREFACE).await?;
        let mut settings = Settings::default();
        settings.set_enable_push(false);
        let (driver, shared) = Self::build(io, config, settings, true);
        Ok((driver, Arc::new(shared)))
    }

    fn build(io: T, config: Config, mut settings: Settings, client: bool) -> (Self, Shared) {
        let mut codec = Codec::new(io);
        codec.set_max_recv_header_list_size(config.max_header_list_size as usize);
        settings.set_initial_window_size(Some(config.stream_window));
        settings.set_max_header_list_size(Some(config.max_header_list_size));
        let mut control = VecDeque::new();
        control.push_back(settings.into());
        let extra = i64::from(config.conn_window) - DEFAULT_WINDOW;
        if extra > 0 {
            control.push_back(WindowUpdate::new(StreamId::zero(), extra as u32).into());
        }
        let state = State {
            config,
            client,
            driver: None,
            next_id: 1,
            max_open: config.max_concurrent_streams as usize,
            ready_waiters: Vec::new(),
            streams: foldhash::HashMap::default(),
            control,
            sendable: VecDeque::new(),
            send_window: DEFAULT_WINDOW,
            peer_initial_window: DEFAULT_WINDOW,
            max_send_frame: frame::DEFAULT_MAX_FRAME_SIZE as usize,
            recv_window: i64::from(config.conn_window),
            recv_unreleased: 0,
            last_id: 0,
            going_away: false,
            broken: None,
            client_resets: 0,
            small_frames: 0,
            blocks: BytesMut::new(),
            spare: Vec::new(),
        };
        let driver = Self {
            codec,
            writer: Writer::new(),
            accepted: VecDeque::new(),
            got_settings: false,
            closing: false,
            heard: false,
            used: false,
        };
        (
            driver,
            Shared {
                state: Mutex::new(state),
            },
        )
    }

    /// Gives back what a connection keeps for its next streams, when it has none: the frame
    /// writer's buffer (once all is written), the header block room, ended streams' queues
    /// and the stream table. The next stream allocates them again.
    pub(crate) fn shed(&mut self, shared: &Shared) {
        let mut state = shared.lock();
        if !state.streams.is_empty() {
            return;
        }
        state.streams.shrink_to_fit();
        state.spare = Vec::new();
        state.blocks = BytesMut::new();
        drop(state);
        self.writer.shed();
        if self.accepted.is_empty() {
            self.accepted = VecDeque::new();
        }
    }

    /// Reads what the client sent, writes what is queued. Ready with a new request, or with
    /// `None` once the connection is over (closed by the client, failed, or shut down with no
    /// stream left).
    pub(crate) fn poll_accept<'a>(
        &mut self,
        cx: &mut Context<'_>,
        shared: &'a Shared,
    ) -> Poll<Option<Accepted<'a>>> {
        if let Some(accepted) = self.next_accepted(shared) {
            return Poll::Ready(Some(accepted));
        }
        let mut state = shared.lock();
        self.poll_read(cx, &mut state);
        let flushed = self.poll_write(cx, &mut state);
        let over = self.is_over(&state) && flushed.is_ready();
        drop(state);
        if let Some(accepted) = self.next_accepted(shared) {
            return Poll::Ready(Some(accepted));
        }
        if over {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    /// Nothing more to do but flush: the connection failed, or went away and has no stream.
    fn is_over(&self, state: &State) -> bool {
        self.closing || (state.going_away && state.streams.is_empty())
    }

    /// Client: drives the connection until it is over: failed, gone away with no stream left,
    /// or without a stream and without anybody who could open one (the pool let it go). One
    /// timer keeps watch ([`Keepalive`]): it is reset once per period, not per frame.
    pub(crate) async fn run(mut self, shared: Arc<Shared>, keepalive: Keepalive) {
        let mut watch = Watch {
            config: keepalive,
            pinged: false,
            idle: Duration::ZERO,
        };
        let mut timer = std::pin::pin!(tokio::time::sleep(keepalive.interval));
        std::future::poll_fn(|cx| {
            let mut state = shared.lock();
            // What this poll queues itself goes out below: no wake for it.
            state.driver = None;
            self.poll_read(cx, &mut state);
            while !self.closing && timer.as_mut().poll(cx).is_ready() {
                let next = self.keep_watch(&mut state, &mut watch);
                timer.as_mut().reset(tokio::time::Instant::now() + next);
            }
            let flushed = self.poll_write(cx, &mut state);
            let unused = state.streams.is_empty() && Arc::strong_count(&shared) == 1;
            if (self.is_over(&state) || unused) && flushed.is_ready() {
                return Poll::Ready(());
            }
            state.driver = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// Client: the keepalive timer is up. Counts the period as idle if no stream is open and
    /// none was answered during it (closing the connection once idle long enough), then: heard from the endpoint, wait
    /// another interval; else PING it, or, if it was pinged, drop the connection. Returns the
    /// next period.
    fn keep_watch(&mut self, state: &mut State, watch: &mut Watch) -> Duration {
        let config = watch.config;
        let period = watch.period();
        let used = std::mem::take(&mut self.used);
        watch.idle = if state.streams.is_empty() && !used {
            watch.idle + period
        } else {
            Duration::ZERO
        };
        if watch.idle >= config.idle && !state.going_away {
            tracing::debug!(idle = ?watch.idle, "closing an idle upstream HTTP/2 connection");
            state.going_away = true;
            state.send_control(GoAway::new(StreamId::zero(), Reason::NO_ERROR).into());
            state.wake_ready();
        }
        if std::mem::take(&mut self.heard) {
            watch.pinged = false;
        } else if !watch.pinged {
            state.send_control(Ping::new(KEEPALIVE_PING).into());
            watch.pinged = true;
        } else {
            tracing::debug!(timeout = ?config.timeout, "no answer to a keepalive PING");
            let why = "no answer to a keepalive PING".to_string();
            self.fail(state, ProtoError::Io(io::ErrorKind::TimedOut, Some(why)));
        }
        watch.period()
    }

    /// Reads and handles what the peer sent, up to a new stream (server) or until nothing is
    /// left to read.
    fn poll_read(&mut self, cx: &mut Context<'_>, state: &mut State) {
        while !self.closing {
            match Pin::new(&mut self.codec).poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.heard = true;
                    self.used |= matches!(frame, Frame::Headers(_) | Frame::Data(_));
                    if let Err(error) = self.recv_frame(state, frame) {
                        self.fail(state, error);
                    }
                }
                Poll::Ready(Some(Err(ProtoError::Reset(id, reason, _)))) => {
                    state.reset_stream(id.into(), reason);
                }
                Poll::Ready(Some(Err(error))) => self.fail(state, error),
                Poll::Ready(None) => {
                    self.fail(state, ProtoError::Io(io::ErrorKind::UnexpectedEof, None));
                }
                Poll::Pending => break,
            }
            if !self.accepted.is_empty() {
                break;
            }
        }
    }

    fn next_accepted<'a>(&mut self, shared: &'a Shared) -> Option<Accepted<'a>> {
        let (id, head, block) = self.accepted.pop_front()?;
        let (parts, ()) = head.into_parts();
        let request = Request::from_parts(parts, RecvBody { id, shared });
        Some(Accepted {
            request,
            block,
            respond: Respond { id, shared },
        })
    }

    /// A connection error: GOAWAY with its reason (unless the socket itself failed), and every
    /// stream sees the connection gone.
    fn fail(&mut self, state: &mut State, error: ProtoError) {
        if let ProtoError::GoAway(_, reason, _) = &error {
            let last = StreamId::from(if state.client { 0 } else { state.last_id });
            state.control.clear();
            state.control.push_back(GoAway::new(last, *reason).into());
        }
        state.going_away = true;
        state.broken = Some(error);
        self.closing = true;
        let ids: Vec<u32> = state.streams.keys().copied().collect();
        for id in ids {
            // Nothing more goes out, not even what a reset stream still had queued.
            state.end_stream(id, Reason::CANCEL, Initiator::Library);
            if let Some(stream) = state.streams.get_mut(&id) {
                stream.queue.clear();
            }
            state.wake(id);
            state.maybe_remove(id);
        }
        state.sendable.clear();
        state.wake_ready();
    }

    fn recv_frame(&mut self, state: &mut State, frame: Frame) -> Result<(), ProtoError> {
        if !self.got_settings {
            // §3.4: the preface ends with a SETTINGS frame.
            if !matches!(&frame, Frame::Settings(s) if !s.is_ack()) {
                return Err(go_away(Reason::PROTOCOL_ERROR));
            }
            self.got_settings = true;
        }
        match frame {
            Frame::Settings(settings) => self.recv_settings(state, &settings),
            Frame::Ping(ping) => {
                if !ping.is_ack() {
                    state.send_control(Ping::pong(ping.into_payload()).into());
                }
                Ok(())
            }
            Frame::WindowUpdate(update) => recv_window_update(state, &update),
            Frame::Reset(reset) => recv_reset(state, &reset),
            Frame::GoAway(go_away) => {
                recv_go_away(state, &go_away);
                Ok(())
            }
            Frame::Priority(_) => Ok(()),
            Frame::PushPromise(_) => Err(go_away(Reason::PROTOCOL_ERROR)),
            Frame::Headers(headers) if state.client => recv_response_headers(state, headers),
            Frame::Headers(headers) => self.recv_headers(state, headers),
            Frame::Data(data) => recv_data(state, data),
        }?;
        if state.control.len() > MAX_CONTROL_QUEUE {
            return Err(go_away(Reason::ENHANCE_YOUR_CALM));
        }
        Ok(())
    }

    fn recv_settings(&mut self, state: &mut State, settings: &Settings) -> Result<(), ProtoError> {
        if settings.is_ack() {
            return Ok(());
        }
        if settings.header_table_size().is_some() {
            self.writer.header_table_size_changed();
        }
        if let Some(size) = settings.max_frame_size() {
            self.writer.set_max_frame_size(size as usize);
            state.max_send_frame = size as usize;
        }
        if let Some(max) = settings.max_concurrent_streams()
            && state.client
        {
            state.max_open = max as usize;
            state.wake_ready();
        }
        if let Some(window) = settings.initial_window_size() {
            // §6.9.2: the change applies to every open stream, possibly below zero.
            let delta = i64::from(window) - state.peer_initial_window;
            state.peer_initial_window = i64::from(window);
            let ids: Vec<u32> = state.streams.keys().copied().collect();
            for id in ids {
                let stream = state.streams.get_mut(&id).expect("listed");
                stream.send_window += delta;
                if stream.send_window > MAX_WINDOW {
                    return Err(go_away(Reason::FLOW_CONTROL_ERROR));
                }
                if delta > 0 && !stream.queue.is_empty() {
                    state.schedule(id);
                }
            }
        }
        state.send_control(Settings::ack().into());
        Ok(())
    }

    fn recv_headers(&mut self, state: &mut State, headers: Headers) -> Result<(), ProtoError> {
        let id: u32 = headers.stream_id().into();
        if id.is_multiple_of(2) {
            return Err(go_away(Reason::PROTOCOL_ERROR));
        }
        if let Some(stream) = state.streams.get_mut(&id) {
            let trailers = stream_end(stream, headers);
            return recv_trailers(state, id, trailers);
        }
        if id <= state.last_id {
            // A stream that is over (§5.1: closed).
            state.reset_stream(id, Reason::STREAM_CLOSED);
            return Ok(());
        }
        state.last_id = id;
        if state.going_away {
            state.reset_stream(id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        if headers.is_over_size() {
            // §10.5.1 and RFC 6585: a 431, and none of the request's data wanted.
            let mut answer = Headers::new(
                StreamId::from(id),
                Pseudo::response(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
                HeaderMap::new(),
            );
            answer.set_end_stream();
            state.send_control(answer.into());
            state.send_control(Reset::new(StreamId::from(id), Reason::REFUSED_STREAM).into());
            return Ok(());
        }
        if state.streams.len() >= state.config.max_concurrent_streams as usize {
            state.reset_stream(id, Reason::REFUSED_STREAM);
            return Ok(());
        }
        let end = headers.is_end_stream();
        let (pseudo, fields) = headers.into_parts();
        let content_length = match content_length(&fields) {
            Ok(n) => n,
            Err(()) => {
                state.reset_stream(id, Reason::PROTOCOL_ERROR);
                return Ok(());
            }
        };
        let Some(request) = request_head(state, &pseudo, fields) else {
            state.reset_stream(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        };
        if end && content_length.is_some_and(|n| n != 0) {
            state.reset_stream(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        let (recv, queue) = state.queues();
        state.streams.insert(
            id,
            StreamState {
                recv,
                queue,
                recv_end: end,
                recv_window: i64::from(state.config.stream_window),
                send_window: state.peer_initial_window,
                content_length,
                // The request body and the responder.
                handles: 2,
                ..StreamState::default()
            },
        );
        let block = state.encode_block(&pseudo, request.headers());
        self.accepted.push_back((id, request, block));
        Ok(())
    }

    /// Moves queued frames to the writer and writes them out; ready once everything is
    /// written.
    fn poll_write(&mut self, cx: &mut Context<'_>, state: &mut State) -> Poll<()> {
        let io = self.codec.get_mut();
        loop {
            match self.writer.poll_ready(io, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => {
                    self.fail(state, error.into());
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
            if !next_frame(state, &mut self.writer) {
                break;
            }
        }
        match self.writer.poll_flush(io, cx) {
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Ready(Err(error)) => {
                self.fail(state, error.into());
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Client: the response head, or the trailers, of a stream it opened.
fn recv_response_headers(state: &mut State, headers: Headers) -> Result<(), ProtoError> {
    let id: u32 = headers.stream_id().into();
    let Some(stream) = state.streams.get_mut(&id) else {
        if state.is_idle(id) {
            return Err(go_away(Reason::PROTOCOL_ERROR));
        }
        // A stream this side reset or gave up on.
        return Ok(());
    };
    if stream.head_received {
        let trailers = stream_end(stream, headers);
        return recv_trailers(state, id, trailers);
    }
    if stream.reset.is_some() {
        return Ok(());
    }
    if headers.is_over_size() {
        state.reset_stream(id, Reason::PROTOCOL_ERROR);
        return Ok(());
    }
    let end = headers.is_end_stream();
    let (pseudo, fields) = headers.into_parts();
    let request_fields = pseudo.method.is_some()
        || pseudo.scheme.is_some()
        || pseudo.authority.is_some()
        || pseudo.path.is_some()
        || pseudo.protocol.is_some();
    let Some(status) = pseudo.status.filter(|_| !request_fields) else {
        state.reset_stream(id, Reason::PROTOCOL_ERROR);
        return Ok(());
    };
    if status.is_informational() {
        // 1xx: interim, the final head follows (§8.1); one that ends the stream is malformed.
        if end {
            state.reset_stream(id, Reason::PROTOCOL_ERROR);
        }
        return Ok(());
    }
    let mut head = Response::new(());
    *head.status_mut() = status;
    *head.version_mut() = Version::HTTP_2;
    *head.headers_mut() = fields;
    stream.head = Some(head);
    stream.head_received = true;
    stream.recv_end = end;
    if let Some(waker) = stream.recv_waker.take() {
        waker.wake();
    }
    Ok(())
}

/// The peer goes away: no new streams; on a client, the streams it says it did not take
/// (above its last stream) end as refused, that is, not processed and safe to send again
/// (§6.8).
fn recv_go_away(state: &mut State, frame: &GoAway) {
    state.going_away = true;
    if state.client {
        let last: u32 = frame.last_stream_id().into();
        let refused: Vec<u32> = state
            .streams
            .keys()
            .copied()
            .filter(|&id| id > last)
            .collect();
        for id in refused {
            state.remote_reset(id, Reason::REFUSED_STREAM);
        }
        state.wake_ready();
    }
}

fn go_away(reason: Reason) -> ProtoError {
    ProtoError::GoAway(Bytes::new(), reason, h2::proto::Initiator::Library)
}

/// Queues the next frame with `writer`: control frames first, then the streams' frames in
/// turn, data within the windows. False when there is nothing (more) to send now.
fn next_frame(state: &mut State, writer: &mut Writer) -> bool {
    if let Some(frame) = state.control.pop_front() {
        if state.control.is_empty() {
            // Control frames come now and then (SETTINGS and their ACKs, PINGs, WINDOW_UPDATEs
            // for uploads): a connection does not keep room for four large frames meanwhile.
            state.control = VecDeque::new();
        }
        if let Err(error) = writer.buffer(frame) {
            // Only a frame this module built wrong gets here.
            tracing::warn!(error, "HTTP/2 frame not sent");
        }
        return true;
    }
    let room_limit = state.config.max_send_buffer;
    let mut tries = state.sendable.len();
    while tries > 0 {
        tries -= 1;
        let Some(id) = state.sendable.pop_front() else {
            return false;
        };
        let conn_window = state.send_window;
        let max_frame = state.max_send_frame;
        let Some(stream) = state.streams.get_mut(&id) else {
            continue;
        };
        let stream_id = StreamId::from(id);
        match stream.queue.front_mut() {
            None => {
                stream.in_sendable = false;
                continue;
            }
            Some(Out::Data(data, end)) if !data.is_empty() => {
                let room = stream.send_window.min(conn_window).min(max_frame as i64);
                if room <= 0 {
                    if stream.send_window <= 0 {
                        // Back when the client opens the stream's window.
                        stream.in_sendable = false;
                    } else {
                        // Blocked on the connection window: keep its turn.
                        state.sendable.push_front(id);
                        return false;
                    }
                    continue;
                }
                let n = (room as usize).min(data.len());
                let chunk = data.split_to(n);
                let last = data.is_empty();
                writer.data(stream_id, chunk, last && *end);
                if last {
                    stream.queue.pop_front();
                }
                stream.send_window -= n as i64;
                state.send_window -= n as i64;
                let before = stream.queued_data;
                stream.queued_data -= n;
                if before >= room_limit
                    && stream.queued_data < room_limit
                    && let Some(waker) = stream.send_waker.take()
                {
                    waker.wake();
                }
            }
            Some(_) => match stream.queue.pop_front().expect("front") {
                Out::Headers(block, end) => writer.headers(stream_id, &block, end),
                Out::Data(data, end) => writer.data(stream_id, data, end),
                Out::Reset(reason) => writer.reset(stream_id, reason),
            },
        }
        if stream.queue.is_empty() {
            stream.in_sendable = false;
            state.maybe_remove(id);
        } else {
            state.sendable.push_back(id);
        }
        return true;
    }
    false
}

fn stream_end(stream: &mut StreamState, headers: Headers) -> Result<Option<HeaderMap>, Reason> {
    if stream.recv_end || stream.reset.is_some() {
        return Err(Reason::STREAM_CLOSED);
    }
    // §8.1: trailers end the stream and carry no pseudo-header.
    if !headers.is_end_stream() {
        return Err(Reason::PROTOCOL_ERROR);
    }
    let (pseudo, fields) = headers.into_parts();
    if pseudo != Pseudo::default() {
        return Err(Reason::PROTOCOL_ERROR);
    }
    Ok(Some(fields))
}

fn recv_trailers(
    state: &mut State,
    id: u32,
    trailers: Result<Option<HeaderMap>, Reason>,
) -> Result<(), ProtoError> {
    let trailers = match trailers {
        Ok(trailers) => trailers,
        Err(reason) => {
            state.reset_stream(id, reason);
            return Ok(());
        }
    };
    let stream = state.streams.get_mut(&id).expect("present");
    if stream.content_length.is_some_and(|n| n != stream.received) {
        state.reset_stream(id, Reason::PROTOCOL_ERROR);
        return Ok(());
    }
    stream.recv_trailers = trailers;
    stream.recv_end = true;
    if let Some(waker) = stream.recv_waker.take() {
        waker.wake();
    }
    state.maybe_remove(id);
    Ok(())
}

fn recv_data(state: &mut State, data: frame::Data) -> Result<(), ProtoError> {
    let id: u32 = data.stream_id().into();
    let len = flow_controlled_len(&data);
    // The connection window counts every DATA frame, whatever becomes of its stream.
    if len as i64 > state.recv_window {
        return Err(go_away(Reason::FLOW_CONTROL_ERROR));
    }
    state.recv_window -= len as i64;
    let idle = state.is_idle(id);
    let Some(stream) = state.streams.get_mut(&id) else {
        state.release_conn(len);
        if idle {
            // §5.1: DATA on an idle stream.
            return Err(go_away(Reason::PROTOCOL_ERROR));
        }
        // A stream that is over; perhaps one this side reset or refused, whose frames were
        // on their way (§5.4.2): ignored.
        return Ok(());
    };
    if stream.reset.is_some() {
        drop_data(state, id, len, None);
        return Ok(());
    }
    let reset = if stream.recv_end {
        Some(Reason::STREAM_CLOSED)
    } else if state.client && !stream.head_received {
        // §8.1: the response starts with its head.
        Some(Reason::PROTOCOL_ERROR)
    } else if len as i64 > stream.recv_window {
        Some(Reason::FLOW_CONTROL_ERROR)
    } else {
        None
    };
    if reset.is_some() {
        drop_data(state, id, len, reset);
        return Ok(());
    }
    stream.recv_window -= len as i64;
    let end = data.is_end_stream();
    let payload = data.into_payload();
    stream.received += payload.len() as u64;
    let length_wrong = match stream.content_length {
        Some(n) => stream.received > n || (end && stream.received != n),
        None => false,
    };
    if length_wrong {
        // §8.1.1: malformed.
        drop_data(state, id, len, Some(Reason::PROTOCOL_ERROR));
        return Ok(());
    }
    // Padding counts against the windows but is nobody's to release: given back below.
    let padding = len - payload.len();
    stream.recv_buffered += len;
    if !payload.is_empty() {
        state.small_frames += small_cost(payload.len());
        stream.recv.push_back(payload);
    }
    stream.recv_end = end;
    if let Some(waker) = stream.recv_waker.take() {
        waker.wake();
    }
    if padding > 0 {
        state.release(id, padding);
    }
    if end {
        state.maybe_remove(id);
    }
    if state.small_frames > state.config.conn_window as usize {
        return Err(go_away(Reason::ENHANCE_YOUR_CALM));
    }
    Ok(())
}

/// DATA stream `id` does not take: its `len` goes back to the connection window at once, and
/// with a `reset`, the stream is reset.
fn drop_data(state: &mut State, id: u32, len: usize, reset: Option<Reason>) {
    state.release_conn(len);
    if let Some(reason) = reset {
        state.reset_stream(id, reason);
    }
}

fn small_cost(len: usize) -> usize {
    SMALL_FRAME.saturating_sub(len)
}

/// A DATA frame's size for flow control: its payload and, when padded, the padding and its
/// length byte (§6.1). h2 keeps the pad length to itself; its `Debug` shows it.
fn flow_controlled_len(data: &frame::Data) -> usize {
    let payload = data.payload().len();
    if !data.is_padded() {
        return payload;
    }
    let debug = format!("{data:?}");
    let pad = debug
        .split("pad_len: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse::<usize>().ok())
        .unwrap_or(0);
    payload + pad + 1
}

fn recv_window_update(state: &mut State, update: &WindowUpdate) -> Result<(), ProtoError> {
    let id: u32 = update.stream_id().into();
    let inc = i64::from(update.size_increment());
    if id == 0 {
        if inc == 0 {
            return Err(go_away(Reason::PROTOCOL_ERROR));
        }
        state.send_window += inc;
        if state.send_window > MAX_WINDOW {
            return Err(go_away(Reason::FLOW_CONTROL_ERROR));
        }
        return Ok(());
    }
    let idle = state.is_idle(id);
    let Some(stream) = state.streams.get_mut(&id) else {
        if idle {
            return Err(go_away(Reason::PROTOCOL_ERROR));
        }
        return Ok(());
    };
    if inc == 0 {
        state.reset_stream(id, Reason::PROTOCOL_ERROR);
        return Ok(());
    }
    stream.send_window += inc;
    if stream.send_window > MAX_WINDOW {
        state.reset_stream(id, Reason::FLOW_CONTROL_ERROR);
        return Ok(());
    }
    if !stream.queue.is_empty() {
        state.schedule(id);
    }
    Ok(())
}

fn recv_reset(state: &mut State, reset: &Reset) -> Result<(), ProtoError> {
    let id: u32 = reset.stream_id().into();
    let idle = id == 0 || state.is_idle(id);
    let Some(stream) = state.streams.get(&id) else {
        if idle {
            return Err(go_away(Reason::PROTOCOL_ERROR));
        }
        return Ok(());
    };
    if stream.reset.is_some() {
        return Ok(());
    }
    let unfinished = !stream.send_end;
    state.remote_reset(id, reset.reason());
    if unfinished && !state.client {
        state.client_resets += 1;
        if state.client_resets > MAX_CLIENT_RESETS {
            return Err(go_away(Reason::ENHANCE_YOUR_CALM));
        }
    }
    Ok(())
}

/// The request's `content-length`, if it has one; several that differ are malformed.
fn content_length(fields: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut length = None;
    for value in fields.get_all(http::header::CONTENT_LENGTH) {
        let n = frame::parse_u64(value.as_bytes()).map_err(|_| ())?;
        if length.is_some_and(|m| m != n) {
            return Err(());
        }
        length = Some(n);
    }
    Ok(length)
}

/// The request head from the pseudo-header fields (§8.3.1), or `None` when malformed.
fn request_head(state: &mut State, pseudo: &Pseudo, fields: HeaderMap) -> Option<Request<()>> {
    let method = pseudo.method.clone()?;
    // No extended CONNECT (not advertised), and a request has no status.
    if pseudo.protocol.is_some() || pseudo.status.is_some() {
        return None;
    }
    let mut parts = uri::Parts::default();
    if let Some(authority) = &pseudo.authority {
        let authority = state.share(authority.as_ref());
        parts.authority = Some(uri::Authority::from_maybe_shared(authority).ok()?);
    }
    if method == Method::CONNECT {
        if pseudo.scheme.is_some() || pseudo.path.is_some() || parts.authority.is_none() {
            return None;
        }
    } else {
        let scheme: uri::Scheme = pseudo.scheme.as_deref()?.parse().ok()?;
        let path = pseudo.path.as_deref()?;
        if path.is_empty() {
            return None;
        }
        // A URI cannot hold a scheme without an authority: then the path alone.
        if parts.authority.is_some() {
            parts.scheme = Some(scheme);
        }
        let path = state.share(path.as_bytes());
        parts.path_and_query = Some(uri::PathAndQuery::from_maybe_shared(path).ok()?);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = Uri::from_parts(parts).ok()?;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = fields;
    Some(request)
}

/// What a stream receives: a client's request body (server), an endpoint's response body
/// (client).
pub(crate) struct RecvBody<S: Deref<Target = Shared>> {
    id: u32,
    shared: S,
}

impl<S: Deref<Target = Shared>> RecvBody<S> {
    /// The stream has ended: no data and no trailers left.
    pub(crate) fn is_end_stream(&self) -> bool {
        let state = self.shared.lock();
        state
            .streams
            .get(&self.id)
            .is_none_or(|s| s.recv_end && s.recv.is_empty() && s.recv_trailers.is_none())
    }

    /// The next chunk of data, and whether it is the last of the stream (no more data and no
    /// trailers, as [`RecvBody::is_end_stream`] would say next).
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<(Bytes, bool), h2::Error>>> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Some(Err(state.error())));
        };
        if let Some(data) = stream.recv.pop_front() {
            let last = stream.recv_end && stream.recv.is_empty() && stream.recv_trailers.is_none();
            state.small_frames -= small_cost(data.len());
            return Poll::Ready(Some(Ok((data, last))));
        }
        if stream.reset.is_some() {
            return Poll::Ready(Some(Err(state.stream_error(self.id))));
        }
        if stream.recv_end {
            return Poll::Ready(None);
        }
        stream.recv_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(crate) fn poll_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<HeaderMap>, h2::Error>> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(state.error()));
        };
        if let Some(trailers) = stream.recv_trailers.take() {
            return Poll::Ready(Ok(Some(trailers)));
        }
        if stream.reset.is_some() {
            return Poll::Ready(Err(state.stream_error(self.id)));
        }
        if stream.recv_end {
            return Poll::Ready(Ok(None));
        }
        stream.recv_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// `n` bytes were passed on: the peer may send that much more.
    pub(crate) fn release_capacity(&mut self, n: usize) {
        self.shared.lock().release(self.id, n);
    }

    pub(crate) async fn data(&mut self) -> Option<Result<Bytes, h2::Error>> {
        let chunk = std::future::poll_fn(|cx| self.poll_chunk(cx)).await;
        chunk.map(|result| result.map(|(data, _)| data))
    }

    pub(crate) async fn trailers(&mut self) -> Result<Option<HeaderMap>, h2::Error> {
        std::future::poll_fn(|cx| self.poll_trailers(cx)).await
    }
}

impl<S: Deref<Target = Shared>> Drop for RecvBody<S> {
    fn drop(&mut self) {
        self.shared.lock().drop_handle(self.id);
    }
}

/// Server: answers a request.
pub(crate) struct Respond<'a> {
    id: u32,
    shared: &'a Shared,
}

impl<'a> Respond<'a> {
    /// Queues the response head; with `end`, the response is complete.
    pub(crate) fn send_response(
        &mut self,
        response: Response<()>,
        end: bool,
    ) -> Result<SendBody<&'a Shared>, h2::Error> {
        let (parts, ()) = response.into_parts();
        let mut state = self.shared.lock();
        let block = state.encode_block(&Pseudo::response(parts.status), &parts.headers);
        // The body handle is one more on the stream.
        queue_locked(&mut state, self.id, Out::Headers(block, end), end, 1)?;
        drop(state);
        Ok(SendBody {
            id: self.id,
            shared: self.shared,
        })
    }

    /// Ready when the client reset the stream (or the connection is gone).
    pub(crate) fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reason, h2::Error>> {
        poll_reset(self.shared, self.id, cx)
    }
}

impl Drop for Respond<'_> {
    fn drop(&mut self) {
        self.shared.lock().drop_handle(self.id);
    }
}

/// Queues `out` on stream `id` (with `end`, the last of what it sends) and counts
/// `new_handles` more handles on it.
fn queue(shared: &Shared, id: u32, out: Out, end: bool, new_handles: u8) -> Result<(), h2::Error> {
    queue_locked(&mut shared.lock(), id, out, end, new_handles)
}

/// [`queue`] under a lock the caller holds (a header block encoded under the same lock).
fn queue_locked(
    state: &mut State,
    id: u32,
    out: Out,
    end: bool,
    new_handles: u8,
) -> Result<(), h2::Error> {
    let Some(stream) = state.streams.get_mut(&id) else {
        return Err(state.error());
    };
    if stream.reset.is_some() {
        return Err(state.stream_error(id));
    }
    if stream.send_end {
        return Err(Reason::STREAM_CLOSED.into());
    }
    if let Out::Data(data, _) = &out {
        stream.queued_data += data.len();
    }
    // Small chunks queued behind one another go out as one frame: a peer that sends tiny
    // frames does not make this side send as many (nor hold as many).
    match (&out, stream.queue.back_mut()) {
        (Out::Data(data, end), Some(Out::Data(last, last_end)))
            if !*last_end && last.len() + data.len() <= COALESCE =>
        {
            let mut joined = BytesMut::with_capacity(last.len() + data.len());
            joined.extend_from_slice(last);
            joined.extend_from_slice(data);
            *last = joined.freeze();
            *last_end = *end;
        }
        _ => stream.queue.push_back(out),
    }
    stream.send_end = end;
    stream.handles += new_handles;
    state.schedule(id);
    Ok(())
}

fn poll_reset(shared: &Shared, id: u32, cx: &mut Context<'_>) -> Poll<Result<Reason, h2::Error>> {
    let mut state = shared.lock();
    if let Some(error) = &state.broken {
        return Poll::Ready(Err(error.clone().into()));
    }
    let Some(stream) = state.streams.get_mut(&id) else {
        return Poll::Ready(Ok(Reason::CANCEL));
    };
    if let Some(reason) = stream.reset {
        return Poll::Ready(Ok(reason));
    }
    stream.send_waker = Some(cx.waker().clone());
    Poll::Pending
}

/// What a stream sends after its head: a response body (server), a request body (client).
pub(crate) struct SendBody<S: Deref<Target = Shared>> {
    id: u32,
    shared: S,
}

impl<S: Deref<Target = Shared>> SendBody<S> {
    pub(crate) fn send_data(&mut self, data: Bytes, end: bool) -> Result<(), h2::Error> {
        queue(&self.shared, self.id, Out::Data(data, end), end, 0)
    }

    pub(crate) fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), h2::Error> {
        let mut state = self.shared.lock();
        let block = state.encode_block(&Pseudo::default(), &trailers);
        queue_locked(&mut state, self.id, Out::Headers(block, true), true, 0)
    }

    pub(crate) fn send_reset(&mut self, reason: Reason) {
        self.shared.lock().reset_stream(self.id, reason);
    }

    pub(crate) fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reason, h2::Error>> {
        poll_reset(&self.shared, self.id, cx)
    }

    /// Ready once the stream can take more data: what it queued so far is (nearly) written.
    /// A peer that does not read, or keeps its window shut, holds the sender back here.
    pub(crate) fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(state.error()));
        };
        if stream.reset.is_some() {
            return Poll::Ready(Err(state.stream_error(self.id)));
        }
        if stream.queued_data < state.config.max_send_buffer {
            return Poll::Ready(Ok(()));
        }
        stream.send_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<S: Deref<Target = Shared>> Drop for SendBody<S> {
    fn drop(&mut self) {
        self.shared.lock().drop_handle(self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    use super::*;

    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const ACK: u8 = 0x1;

    fn config() -> Config {
        Config {
            stream_window: 65_535,
            conn_window: 65_535,
            max_concurrent_streams: 100,
            max_header_list_size: 16 * 1024,
            max_send_buffer: 64 * 1024,
        }
    }

    const HEADERS: u8 = 0x1;
    const END_STREAM_HEADERS: u8 = 0x5;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        frame_on(0, kind, flags, payload)
    }

    fn frame_on(stream: u32, kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A fake endpoint on loopback: reads the client's preface, sends its SETTINGS, then
    /// reports every frame it reads (type, flags, payload); if `pong`, it acknowledges PINGs
    /// and answers every request with a bare 200.
    /// The channel closes when the client closes the connection.
    async fn endpoint(
        keepalive: Keepalive,
        pong: bool,
    ) -> (
        Arc<Shared>,
        tokio::task::JoinHandle<()>,
        mpsc::UnboundedReceiver<(u8, u8, Vec<u8>)>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let io = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let (driver, shared) = Driver::client(io, config()).await.expect("client");
        let run = tokio::spawn(driver.run(shared.clone(), keepalive));
        let mut preface = [0u8; 24];
        server.read_exact(&mut preface).await.expect("preface");
        assert_eq!(&preface, PREFACE);
        server
            .write_all(&frame(SETTINGS, 0, &[]))
            .await
            .expect("server settings");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let mut head = [0u8; 9];
                if server.read_exact(&mut head).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut payload = vec![0; len];
                if server.read_exact(&mut payload).await.is_err() {
                    return;
                }
                if pong && head[3] == PING && head[4] & ACK == 0 {
                    let _ = server.write_all(&frame(PING, ACK, &payload)).await;
                }
                if pong && head[3] == HEADERS {
                    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
                    // 0x88: `:status: 200` from the static table.
                    let answer = frame_on(stream, HEADERS, END_STREAM_HEADERS, &[0x88]);
                    let _ = server.write_all(&answer).await;
                }
                let _ = tx.send((head[3], head[4], payload));
            }
        });
        (shared, run, rx)
    }

    fn pings(frames: &[(u8, u8, Vec<u8>)]) -> usize {
        frames
            .iter()
            .filter(|(kind, flags, payload)| {
                *kind == PING && flags & ACK == 0 && payload.as_slice() == KEEPALIVE_PING
            })
            .count()
    }

    #[tokio::test]
    async fn an_endpoint_that_stops_answering_is_pinged_then_dropped() {
        let keepalive = Keepalive {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(200),
            idle: Duration::from_secs(3600),
        };
        let start = Instant::now();
        let (shared, run, mut rx) = endpoint(keepalive, false).await;
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the connection to a silent endpoint was not dropped within 5 s")
            .expect("driver task");
        let took = start.elapsed();
        assert!(
            took >= keepalive.interval + keepalive.timeout,
            "dropped after {took:?}, before a PING could time out"
        );
        assert!(
            shared.is_closed(),
            "a dropped connection still takes streams"
        );
        let mut frames = Vec::new();
        while let Some(frame) = rx.recv().await {
            frames.push(frame); // ends when the client closes the socket
        }
        assert_eq!(pings(&frames), 1, "frames the endpoint got: {frames:?}");
    }

    #[tokio::test]
    async fn an_answering_endpoint_keeps_its_connection_until_it_has_idled() {
        let keepalive = Keepalive {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            idle: Duration::from_millis(1500),
        };
        let (shared, mut run, mut rx) = endpoint(keepalive, true).await;
        // Several keepalive rounds, answered: the connection stays.
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(
            !run.is_finished(),
            "an answering endpoint's connection was dropped"
        );
        assert!(
            !shared.is_closed(),
            "an answering endpoint's connection takes no streams"
        );
        tokio::time::timeout(Duration::from_secs(5), &mut run)
            .await
            .expect("an idle connection was not closed within 5 s")
            .expect("driver task");
        assert!(
            shared.is_closed(),
            "a closed connection still takes streams"
        );
        let mut frames = Vec::new();
        while let Some(frame) = rx.recv().await {
            frames.push(frame);
        }
        assert!(pings(&frames) >= 3, "frames the endpoint got: {frames:?}");
        let goaway = frames
            .iter()
            .find(|(kind, _, _)| *kind == GOAWAY)
            .unwrap_or_else(|| panic!("no GOAWAY among {frames:?}"));
        assert_eq!(&goaway.2[4..8], &[0, 0, 0, 0], "GOAWAY is not NO_ERROR");
    }

    #[tokio::test]
    async fn a_connection_used_between_looks_is_not_idle() {
        let keepalive = Keepalive {
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            idle: Duration::from_secs(1),
        };
        let (shared, run, _rx) = endpoint(keepalive, true).await;
        // A short request every 50 ms: most of the time no stream is open, but the
        // connection is in use.
        let start = Instant::now();
        let mut answered = 0;
        while start.elapsed() < Duration::from_millis(2500) {
            let block = Bytes::from_static(&[0x82, 0x86, 0x84]); // GET http /
            let (response, body) = send_request(&shared, block, true)
                .unwrap_or_else(|e| panic!("after {answered} requests: {e}"));
            let response = tokio::time::timeout(Duration::from_secs(2), response)
                .await
                .expect("no answer within 2 s")
                .unwrap_or_else(|e| panic!("after {answered} requests: {e}"));
            assert_eq!(response.status(), 200);
            answered += 1;
            drop((response, body)); // the stream is over: none is open while waiting
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!run.is_finished(), "a connection in use was closed as idle");
        assert!(answered >= 10, "only {answered} requests answered");
    }
}
