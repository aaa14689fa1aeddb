//! A body relayed from one HTTP/2 stream to another, frame by frame: data as it comes, with the
//! receiving side's flow control respected (nothing more is taken from the sender until the
//! receiver has room) and the sender's window reopened once a chunk is passed on, then the
//! trailers or the end of the stream. A reset on either side ends the relay; one on the sending
//! side is passed on to the receiving side.

use std::ops::Deref;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::Reason;
use http::HeaderMap;

use super::conn::{RecvBody, SendBody, Shared};

/// Where a relayed body comes from: a client's request, or an endpoint's response.
pub(super) trait Source {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, h2::Error>>>;
    fn poll_trailers(&mut self, cx: &mut Context<'_>)
    -> Poll<Result<Option<HeaderMap>, h2::Error>>;
    fn is_end_stream(&self) -> bool;
    /// `n` bytes were passed on: the sender may send that much more.
    fn release(&mut self, n: usize);
}

/// Where a relayed body goes: the request to the endpoint, or the response to the client.
pub(super) trait Sink {
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reason, h2::Error>>;
    /// Ready once the receiver has room for at least one more byte, so that a slow receiver
    /// holds back the sender.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>>;
    fn send_data(&mut self, data: Bytes, end: bool) -> Result<(), h2::Error>;
    fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), h2::Error>;
    fn send_reset(&mut self, reason: Reason);
}

impl<S: Deref<Target = Shared>> Source for RecvBody<S> {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, h2::Error>>> {
        RecvBody::poll_data(self, cx)
    }
    fn poll_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<HeaderMap>, h2::Error>> {
        RecvBody::poll_trailers(self, cx)
    }
    fn is_end_stream(&self) -> bool {
        RecvBody::is_end_stream(self)
    }
    fn release(&mut self, n: usize) {
        self.release_capacity(n);
    }
}

impl<S: Deref<Target = Shared>> Sink for SendBody<S> {
    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Result<Reason, h2::Error>> {
        SendBody::poll_reset(self, cx)
    }
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        SendBody::poll_room(self, cx)
    }
    fn send_data(&mut self, data: Bytes, end: bool) -> Result<(), h2::Error> {
        SendBody::send_data(self, data, end)
    }
    fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), h2::Error> {
        SendBody::send_trailers(self, trailers)
    }
    fn send_reset(&mut self, reason: Reason) {
        SendBody::send_reset(self, reason);
    }
}

/// One direction of a stream's body.
pub(super) struct Relay<F, T> {
    from: F,
    to: T,
    /// A chunk was passed on: wait for room before taking the next one.
    sent: bool,
    /// The data has all been passed on; the trailers (or the end) are next.
    data_done: bool,
}

/// Why a relay stopped short.
#[derive(Debug)]
pub(super) enum RelayError {
    /// The sending side failed or reset its stream (the receiving side was reset too).
    Recv(h2::Error),
    /// The receiving side is gone or reset its stream.
    Send(h2::Error),
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Recv(error) => write!(f, "sending side: {error}"),
            Self::Send(error) => write!(f, "receiving side: {error}"),
        }
    }
}

impl<F: Source, T: Sink> Relay<F, T> {
    pub(super) fn new(from: F, to: T) -> Self {
        Self {
            from,
            to,
            sent: false,
            data_done: false,
        }
    }

    /// Relays what is there; ready once the stream has ended on both sides or failed.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        while !self.data_done {
            // The first chunk goes without asking for room (most bodies are one chunk), but a
            // receiver that resets its stream is noticed even while the sender is silent.
            if self.sent {
                ready!(self.to.poll_room(cx)).map_err(RelayError::Send)?;
            } else if let Poll::Ready(reset) = self.to.poll_reset(cx) {
                return Poll::Ready(Err(RelayError::Send(reset_error(reset))));
            }
            match ready!(self.from.poll_data(cx)) {
                Some(Ok(data)) => {
                    let len = data.len();
                    let end = self.from.is_end_stream();
                    self.to.send_data(data, end).map_err(RelayError::Send)?;
                    self.sent = true;
                    // Passed on: the sender may send this much more.
                    self.from.release(len);
                    if end {
                        return Poll::Ready(Ok(()));
                    }
                }
                Some(Err(error)) => return Poll::Ready(Err(self.broke(error))),
                None => self.data_done = true,
            }
        }
        match ready!(self.from.poll_trailers(cx)) {
            Ok(Some(trailers)) => self.to.send_trailers(trailers),
            Ok(None) => self.to.send_data(Bytes::new(), true),
            Err(error) => return Poll::Ready(Err(self.broke(error))),
        }
        .map_err(RelayError::Send)?;
        Poll::Ready(Ok(()))
    }

    /// The sending side failed: reset the receiving side with the same reason (a cancel stays
    /// a cancel), or `INTERNAL_ERROR` when the connection itself broke.
    fn broke(&mut self, error: h2::Error) -> RelayError {
        self.to
            .send_reset(error.reason().unwrap_or(Reason::INTERNAL_ERROR));
        RelayError::Recv(error)
    }
}

/// What `poll_reset` reported, as an error.
fn reset_error(reset: Result<Reason, h2::Error>) -> h2::Error {
    match reset {
        Ok(reason) => reason.into(),
        Err(error) => error,
    }
}
