//! The client-facing side of the HTTP/2 path: a lean server connection on h2's frame codec.
//!
//! h2's `server::Connection` keeps every stream in a shared store behind a lock, moves each
//! frame through per-stream queues and a prioritizer, and checks and re-checks headers on the
//! way: for a small request that was two thirds of the proxy's user time, more than HAProxy's
//! whole request. Here the frame layer stays h2's own (`h2::Codec`, enabled by h2's `unstable`
//! feature: framing, HPACK, CONTINUATION, padding, frame and header-list size limits, all of it
//! fuzzed upstream) and the connection above it is this module: settings, pings, flow control
//! both ways, stream states and limits, resets and GOAWAY (RFC 9113 §5, §6). It serves a proxy:
//! no server push, no priorities (ignored, as RFC 9113 §5.3.2 allows), no extended CONNECT.
//!
//! Everything runs on the client connection's task: [`Driver`] reads and writes the socket and
//! the stream handles ([`RequestBody`], [`Respond`], [`ResponseBody`]) share its state through
//! one uncontended lock ([`Shared`]). Frames a handle queues go out with the driver's next
//! flush, in the same task poll.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::Stream;
use h2::Codec;
use h2::Reason;
use h2::frame::{
    self, Frame, GoAway, Headers, Ping, Pseudo, Reset, Settings, StreamId, WindowUpdate,
};
use h2::proto::Error as ProtoError;
use http::{HeaderMap, Method, Request, Response, Uri, Version, uri};
use tokio::io::{AsyncRead, AsyncWrite};

/// What the server advertises and enforces.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// The receive window of each stream, and of the connection.
    pub(crate) stream_window: u32,
    pub(crate) conn_window: u32,
    /// Streams the client may have open at once; more are refused (`REFUSED_STREAM`).
    pub(crate) max_concurrent_streams: u32,
    /// Largest decoded header list; larger requests get a 431.
    pub(crate) max_header_list_size: u32,
    /// Response data queued per stream before its sender is held back.
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

/// The connection's state, shared by the driver and the stream handles.
pub(crate) struct Shared {
    state: Mutex<State>,
}

struct State {
    config: Config,
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
    /// The highest stream the client opened.
    last_id: u32,
    /// No new streams: a GOAWAY went out or came in.
    going_away: bool,
    /// The connection failed: every handle sees this.
    broken: Option<ProtoError>,
    client_resets: u32,
    /// What the buffered small DATA frames cost (see [`SMALL_FRAME`]).
    small_frames: usize,
}

#[derive(Default)]
struct StreamState {
    // The request.
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
    // The response.
    queue: VecDeque<Out>,
    queued_data: usize,
    send_window: i64,
    /// The end of the response is queued.
    send_end: bool,
    send_waker: Option<Waker>,
    /// Reset by either side: the stream is over.
    reset: Option<Reason>,
    /// Live handles ([`RequestBody`], [`Respond`], [`ResponseBody`]).
    handles: u8,
    in_sendable: bool,
}

/// A frame a stream has queued.
enum Out {
    Headers(Box<Headers>),
    Data(Bytes, bool),
    Reset(Reason),
}

impl State {
    fn error(&self) -> h2::Error {
        match &self.broken {
            Some(error) => error.clone().into(),
            None => Reason::CANCEL.into(),
        }
    }

    fn schedule(&mut self, id: u32) {
        if let Some(stream) = self.streams.get_mut(&id)
            && !stream.in_sendable
        {
            stream.in_sendable = true;
            self.sendable.push_back(id);
        }
    }

    /// Resets a stream from this side: what it had queued is dropped, the RST_STREAM goes out
    /// next, and the handles see the reset.
    fn reset_stream(&mut self, id: u32, reason: Reason) {
        let Some(stream) = self.streams.get_mut(&id) else {
            self.control
                .push_back(Reset::new(StreamId::from(id), reason).into());
            return;
        };
        if stream.reset.is_some() {
            return;
        }
        stream.reset = Some(reason);
        stream.queue.clear();
        stream.queued_data = 0;
        self.control
            .push_back(Reset::new(StreamId::from(id), reason).into());
        self.wake(id);
        self.maybe_remove(id);
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
        self.streams.remove(&id);
        self.release_conn(buffered);
    }

    /// Data consumed: the client may send that much more on the connection.
    fn release_conn(&mut self, n: usize) {
        self.recv_unreleased = self.recv_unreleased.saturating_add(n as u32);
        if self.recv_unreleased >= self.config.conn_window / 2 {
            let n = std::mem::take(&mut self.recv_unreleased);
            self.recv_window += i64::from(n);
            self.control
                .push_back(WindowUpdate::new(StreamId::zero(), n).into());
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
            self.control
                .push_back(WindowUpdate::new(StreamId::from(id), n).into());
        }
        self.release_conn(n);
    }

    /// A handle went away; the last one ends the stream: reset (`CANCEL`) if the response was
    /// not finished, or (`NO_ERROR`, RFC 9113 §8.1) if the request is still coming.
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
                stream.queue.push_back(Out::Reset(Reason::NO_ERROR));
                stream.reset = Some(Reason::NO_ERROR);
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
            state
                .control
                .push_back(GoAway::new(last, Reason::NO_ERROR).into());
        }
    }
}

/// Reads and writes the connection; hands out new requests.
pub(crate) struct Driver<T> {
    codec: Codec<T, Bytes>,
    /// New streams decoded but not yet handed out.
    accepted: VecDeque<u32>,
    heads: VecDeque<Request<()>>,
    got_settings: bool,
    /// The socket is done (end, error or a connection error sent): flush and stop.
    closing: bool,
}

/// A new request and the handle to answer it.
pub(crate) struct Accepted<'a> {
    pub(crate) request: Request<RequestBody<'a>>,
    pub(crate) respond: Respond<'a>,
}

/// The client's connection preface (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl<T: AsyncRead + AsyncWrite + Unpin> Driver<T> {
    /// Starts serving a connection whose preface has been read: the server's SETTINGS (and the
    /// connection window beyond the default) go out with the first flush.
    pub(crate) fn new(io: T, config: Config) -> (Self, Shared) {
        let mut codec = Codec::new(io);
        codec.set_max_recv_header_list_size(config.max_header_list_size as usize);
        let mut settings = Settings::default();
        settings.set_initial_window_size(Some(config.stream_window));
        settings.set_max_concurrent_streams(Some(config.max_concurrent_streams));
        settings.set_max_header_list_size(Some(config.max_header_list_size));
        let mut control = VecDeque::new();
        control.push_back(settings.into());
        let extra = i64::from(config.conn_window) - DEFAULT_WINDOW;
        if extra > 0 {
            control.push_back(WindowUpdate::new(StreamId::zero(), extra as u32).into());
        }
        let state = State {
            config,
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
        };
        let driver = Self {
            codec,
            accepted: VecDeque::new(),
            heads: VecDeque::new(),
            got_settings: false,
            closing: false,
        };
        (
            driver,
            Shared {
                state: Mutex::new(state),
            },
        )
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
        while !self.closing {
            match Pin::new(&mut self.codec).poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Err(error) = self.recv_frame(&mut state, frame) {
                        self.fail(&mut state, error);
                    }
                }
                Poll::Ready(Some(Err(ProtoError::Reset(id, reason, _)))) => {
                    state.reset_stream(id.into(), reason);
                }
                Poll::Ready(Some(Err(error))) => self.fail(&mut state, error),
                Poll::Ready(None) => {
                    self.fail(
                        &mut state,
                        ProtoError::Io(io::ErrorKind::UnexpectedEof, None),
                    );
                }
                Poll::Pending => break,
            }
            if !self.accepted.is_empty() {
                break;
            }
        }
        let flushed = self.poll_write(cx, &mut state);
        drop(state);
        if let Some(accepted) = self.next_accepted(shared) {
            return Poll::Ready(Some(accepted));
        }
        let state = shared.lock();
        let done = (state.going_away || self.closing) && state.streams.is_empty();
        if (self.closing && flushed.is_ready()) || (done && flushed.is_ready()) {
            return Poll::Ready(None);
        }
        Poll::Pending
    }

    fn next_accepted<'a>(&mut self, shared: &'a Shared) -> Option<Accepted<'a>> {
        let id = self.accepted.pop_front()?;
        let head = self.heads.pop_front()?;
        let (parts, ()) = head.into_parts();
        let request = Request::from_parts(parts, RequestBody { id, shared });
        Some(Accepted {
            request,
            respond: Respond { id, shared },
        })
    }

    /// A connection error: GOAWAY with its reason (unless the socket itself failed), and every
    /// stream sees the connection gone.
    fn fail(&mut self, state: &mut State, error: ProtoError) {
        if let ProtoError::GoAway(_, reason, _) = &error {
            let last = StreamId::from(state.last_id);
            state.control.clear();
            state.control.push_back(GoAway::new(last, *reason).into());
        }
        state.going_away = true;
        state.broken = Some(error);
        self.closing = true;
        let ids: Vec<u32> = state.streams.keys().copied().collect();
        for id in ids {
            if let Some(stream) = state.streams.get_mut(&id) {
                stream.queue.clear();
                stream.queued_data = 0;
                if stream.reset.is_none() {
                    stream.reset = Some(Reason::CANCEL);
                }
            }
            state.wake(id);
            state.maybe_remove(id);
        }
        state.sendable.clear();
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
                    state
                        .control
                        .push_back(Ping::pong(ping.into_payload()).into());
                }
                Ok(())
            }
            Frame::WindowUpdate(update) => recv_window_update(state, &update),
            Frame::Reset(reset) => recv_reset(state, &reset),
            Frame::GoAway(_) => {
                state.going_away = true;
                Ok(())
            }
            Frame::Priority(_) => Ok(()),
            Frame::PushPromise(_) => Err(go_away(Reason::PROTOCOL_ERROR)),
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
        if let Some(size) = settings.header_table_size() {
            self.codec.set_send_header_table_size(size as usize);
        }
        if let Some(size) = settings.max_frame_size() {
            self.codec.set_max_send_frame_size(size as usize);
            state.max_send_frame = size as usize;
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
        state.control.push_back(Settings::ack().into());
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
            state.control.push_back(answer.into());
            state
                .control
                .push_back(Reset::new(StreamId::from(id), Reason::REFUSED_STREAM).into());
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
        let Some(request) = request_head(pseudo, fields) else {
            state.reset_stream(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        };
        if end && content_length.is_some_and(|n| n != 0) {
            state.reset_stream(id, Reason::PROTOCOL_ERROR);
            return Ok(());
        }
        state.streams.insert(
            id,
            StreamState {
                recv_end: end,
                recv_window: i64::from(state.config.stream_window),
                send_window: state.peer_initial_window,
                content_length,
                // The request body and the responder.
                handles: 2,
                ..StreamState::default()
            },
        );
        self.accepted.push_back(id);
        self.heads.push_back(request);
        Ok(())
    }

    /// Moves queued frames to the codec and flushes; ready once everything is written.
    fn poll_write(&mut self, cx: &mut Context<'_>, state: &mut State) -> Poll<()> {
        loop {
            match self.codec.poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => {
                    self.fail(state, error.into());
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
            let Some(frame) = next_frame(state) else {
                break;
            };
            if let Err(error) = self.codec.buffer(frame) {
                // Only a frame this module built wrong gets here.
                tracing::warn!(?error, "HTTP/2 frame not sent");
            }
        }
        match self.codec.flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Ready(Err(error)) => {
                self.fail(state, error.into());
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn go_away(reason: Reason) -> ProtoError {
    ProtoError::GoAway(Bytes::new(), reason, h2::proto::Initiator::Library)
}

/// The next frame to write: control frames first, then the streams' frames in turn, data
/// within the windows.
fn next_frame(state: &mut State) -> Option<Frame<Bytes>> {
    if let Some(frame) = state.control.pop_front() {
        return Some(frame);
    }
    let room_limit = state.config.max_send_buffer;
    let mut tries = state.sendable.len();
    while tries > 0 {
        tries -= 1;
        let id = state.sendable.pop_front()?;
        let conn_window = state.send_window;
        let max_frame = state.max_send_frame;
        let Some(stream) = state.streams.get_mut(&id) else {
            continue;
        };
        let frame = match stream.queue.front_mut() {
            None => None,
            Some(Out::Data(data, end)) if !data.is_empty() => {
                let room = stream.send_window.min(conn_window).min(max_frame as i64);
                if room <= 0 {
                    if stream.send_window <= 0 {
                        // Back when the client opens the stream's window.
                        stream.in_sendable = false;
                    } else {
                        // Blocked on the connection window: keep its turn.
                        state.sendable.push_front(id);
                        return None;
                    }
                    continue;
                }
                let n = (room as usize).min(data.len());
                let chunk = data.split_to(n);
                let last = data.is_empty();
                let mut out = frame::Data::new(StreamId::from(id), chunk);
                out.set_end_stream(last && *end);
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
                Some(out.into())
            }
            Some(_) => stream.queue.pop_front().map(|out| match out {
                Out::Headers(headers) => (*headers).into(),
                Out::Data(data, end) => {
                    let mut out = frame::Data::new(StreamId::from(id), data);
                    out.set_end_stream(end);
                    out.into()
                }
                Out::Reset(reason) => Reset::new(StreamId::from(id), reason).into(),
            }),
        };
        let Some(frame) = frame else {
            stream.in_sendable = false;
            continue;
        };
        if stream.queue.is_empty() {
            stream.in_sendable = false;
            if stream.queued_data == 0
                && let Some(waker) = stream.send_waker.take()
            {
                waker.wake();
            }
            state.maybe_remove(id);
        } else {
            state.sendable.push_back(id);
        }
        return Some(frame);
    }
    None
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
    let Some(stream) = state.streams.get_mut(&id) else {
        state.release_conn(len);
        if id > state.last_id {
            // §5.1: DATA on an idle stream.
            return Err(go_away(Reason::PROTOCOL_ERROR));
        }
        // A stream that is over; perhaps one this side reset or refused, whose frames were
        // on their way (§5.4.2): ignored.
        return Ok(());
    };
    if stream.reset.is_some() {
        state.release_conn(len);
        return Ok(());
    }
    if stream.recv_end {
        state.release_conn(len);
        state.reset_stream(id, Reason::STREAM_CLOSED);
        return Ok(());
    }
    if len as i64 > stream.recv_window {
        state.release_conn(len);
        state.reset_stream(id, Reason::FLOW_CONTROL_ERROR);
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
        state.release_conn(len);
        state.reset_stream(id, Reason::PROTOCOL_ERROR);
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
    let Some(stream) = state.streams.get_mut(&id) else {
        if id > state.last_id {
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
    let Some(stream) = state.streams.get_mut(&id) else {
        if id > state.last_id || id == 0 {
            return Err(go_away(Reason::PROTOCOL_ERROR));
        }
        return Ok(());
    };
    if stream.reset.is_some() {
        return Ok(());
    }
    let unfinished = !stream.send_end;
    stream.reset = Some(reset.reason());
    stream.queue.clear();
    stream.queued_data = 0;
    state.wake(id);
    state.maybe_remove(id);
    if unfinished {
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
fn request_head(pseudo: Pseudo, fields: HeaderMap) -> Option<Request<()>> {
    let method = pseudo.method?;
    // No extended CONNECT (not advertised), and a request has no status.
    if pseudo.protocol.is_some() || pseudo.status.is_some() {
        return None;
    }
    let mut parts = uri::Parts::default();
    if let Some(authority) = &pseudo.authority {
        parts.authority = Some(uri::Authority::try_from(authority.as_ref() as &[u8]).ok()?);
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
        parts.path_and_query = Some(uri::PathAndQuery::try_from(path).ok()?);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = Uri::from_parts(parts).ok()?;
    *request.version_mut() = Version::HTTP_2;
    *request.headers_mut() = fields;
    Some(request)
}

/// The request body as it arrives.
pub(crate) struct RequestBody<'a> {
    id: u32,
    shared: &'a Shared,
}

impl RequestBody<'_> {
    /// The stream has ended: no data and no trailers left.
    pub(crate) fn is_end_stream(&self) -> bool {
        let state = self.shared.lock();
        state
            .streams
            .get(&self.id)
            .is_none_or(|s| s.recv_end && s.recv.is_empty() && s.recv_trailers.is_none())
    }

    pub(crate) fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, h2::Error>>> {
        let mut state = self.shared.lock();
        let error = state.error();
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Some(Err(error)));
        };
        if let Some(data) = stream.recv.pop_front() {
            state.small_frames -= small_cost(data.len());
            return Poll::Ready(Some(Ok(data)));
        }
        if let Some(reason) = stream.reset {
            return Poll::Ready(Some(Err(state
                .broken
                .clone()
                .map_or(reason.into(), Into::into))));
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
        let mut state = self.shared.lock();
        let error = state.error();
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(error));
        };
        if let Some(trailers) = stream.recv_trailers.take() {
            return Poll::Ready(Ok(Some(trailers)));
        }
        if let Some(reason) = stream.reset {
            return Poll::Ready(Err(reason.into()));
        }
        if stream.recv_end {
            return Poll::Ready(Ok(None));
        }
        stream.recv_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// `n` bytes were passed on: the client may send that much more.
    pub(crate) fn release_capacity(&mut self, n: usize) {
        self.shared.lock().release(self.id, n);
    }

    pub(crate) async fn data(&mut self) -> Option<Result<Bytes, h2::Error>> {
        std::future::poll_fn(|cx| self.poll_data(cx)).await
    }

    pub(crate) async fn trailers(&mut self) -> Result<Option<HeaderMap>, h2::Error> {
        std::future::poll_fn(|cx| self.poll_trailers(cx)).await
    }
}

impl Drop for RequestBody<'_> {
    fn drop(&mut self) {
        self.shared.lock().drop_handle(self.id);
    }
}

/// Answers a request.
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
    ) -> Result<ResponseBody<'a>, h2::Error> {
        let mut state = self.shared.lock();
        let error = state.error();
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Err(error);
        };
        if let Some(reason) = stream.reset {
            return Err(reason.into());
        }
        let (parts, ()) = response.into_parts();
        let mut headers = Headers::new(
            StreamId::from(self.id),
            Pseudo::response(parts.status),
            parts.headers,
        );
        if end {
            headers.set_end_stream();
            stream.send_end = true;
        }
        stream.queue.push_back(Out::Headers(Box::new(headers)));
        stream.handles += 1;
        state.schedule(self.id);
        Ok(ResponseBody {
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

/// Sends the response body.
pub(crate) struct ResponseBody<'a> {
    id: u32,
    shared: &'a Shared,
}

impl ResponseBody<'_> {
    pub(crate) fn send_data(&mut self, data: Bytes, end: bool) -> Result<(), h2::Error> {
        let mut state = self.shared.lock();
        let error = state.error();
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Err(error);
        };
        if let Some(reason) = stream.reset {
            return Err(reason.into());
        }
        if stream.send_end {
            return Err(Reason::STREAM_CLOSED.into());
        }
        stream.queued_data += data.len();
        stream.queue.push_back(Out::Data(data, end));
        stream.send_end = end;
        state.schedule(self.id);
        Ok(())
    }

    pub(crate) fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), h2::Error> {
        let mut state = self.shared.lock();
        let error = state.error();
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Err(error);
        };
        if let Some(reason) = stream.reset {
            return Err(reason.into());
        }
        if stream.send_end {
            return Err(Reason::STREAM_CLOSED.into());
        }
        let mut headers = Headers::trailers(StreamId::from(self.id), trailers);
        headers.set_end_stream();
        stream.queue.push_back(Out::Headers(Box::new(headers)));
        stream.send_end = true;
        state.schedule(self.id);
        Ok(())
    }

    pub(crate) fn send_reset(&mut self, reason: Reason) {
        self.shared.lock().reset_stream(self.id, reason);
    }

    pub(crate) fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reason, h2::Error>> {
        poll_reset(self.shared, self.id, cx)
    }

    /// Ready once the stream can take more data: what it queued so far is (nearly) written.
    /// A client that does not read, or keeps its window shut, holds the sender back here.
    pub(crate) fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let Some(stream) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(state.error()));
        };
        if let Some(reason) = stream.reset {
            return Poll::Ready(Err(reason.into()));
        }
        if stream.queued_data < state.config.max_send_buffer {
            return Poll::Ready(Ok(()));
        }
        stream.send_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for ResponseBody<'_> {
    fn drop(&mut self) {
        self.shared.lock().drop_handle(self.id);
    }
}
