//! A body relayed from one HTTP/2 stream to another, frame by frame: data as it comes, with the
//! receiving side's flow control respected (nothing more is taken from the sender until the
//! receiver has room) and the sender's window reopened once a chunk is passed on, then the
//! trailers or the end of the stream. A reset on either side ends the relay; one on the sending
//! side is passed on to the receiving side.

use std::ops::Deref;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::Reason;

use super::conn::{RecvBody, SendBody, Shared};

/// One direction of a stream's body, from one connection's stream to another's.
pub(super) struct Relay<F: Deref<Target = Shared>, T: Deref<Target = Shared>> {
    from: RecvBody<F>,
    to: SendBody<T>,
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

impl<F: Deref<Target = Shared>, T: Deref<Target = Shared>> Relay<F, T> {
    pub(super) fn new(from: RecvBody<F>, to: SendBody<T>) -> Self {
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
            match ready!(self.from.poll_chunk(cx)) {
                Some(Ok((data, end))) => {
                    let len = data.len();
                    self.to.send_data(data, end).map_err(RelayError::Send)?;
                    self.sent = true;
                    // Passed on: the sender may send this much more.
                    self.from.release_capacity(len);
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
