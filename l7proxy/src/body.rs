//! Request and response bodies as they cross the proxy: streamed frame by frame (data and
//! trailers), or small and buffered so that a request can be replayed on another endpoint.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::idle::Busy;
use crate::pool::Checkin;

/// A request body sent upstream.
#[derive(Debug)]
pub(crate) enum ReqBody {
    /// The client's body, streamed (sent at most once).
    Stream(Incoming),
    /// A buffered body (possibly empty), which can be cloned for another attempt.
    Full(Full<Bytes>),
}

impl ReqBody {
    /// A buffered body.
    pub(crate) fn full(bytes: Bytes) -> Self {
        Self::Full(Full::new(bytes))
    }
}

/// The client's request body failed while it was sent upstream (a malformed chunk, a reset):
/// the downstream's fault, told apart from upstream failures by [`crate::errors`].
#[derive(Debug)]
pub(crate) struct ClientBodyError(hyper::Error);

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client request body: {}", self.0)
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            Self::Stream(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(ClientBodyError))),
            Self::Full(full) => poll_full(full, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Stream(body) => body.is_end_stream(),
            Self::Full(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Stream(body) => body.size_hint(),
            Self::Full(full) => full.size_hint(),
        }
    }
}

/// A response body sent downstream: the upstream's, streamed, or one the proxy made.
#[derive(Debug)]
pub(crate) struct RespBody {
    kind: RespKind,
    /// Returns the upstream HTTP/1.1 connection to its pool once the body has been read whole.
    checkin: Option<Checkin>,
    /// Keeps the client connection busy until the body has been sent (dropped).
    busy: Option<Busy>,
}

#[derive(Debug)]
enum RespKind {
    Upstream(Incoming),
    Full(Full<Bytes>),
}

impl RespBody {
    /// An empty body.
    pub(crate) fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// A body made by the proxy.
    pub(crate) fn full(bytes: Bytes) -> Self {
        Self {
            kind: RespKind::Full(Full::new(bytes)),
            checkin: None,
            busy: None,
        }
    }

    /// The upstream's body; `checkin` returns its connection to the pool when it ends.
    pub(crate) fn upstream(body: Incoming, checkin: Option<Checkin>) -> Self {
        let mut this = Self {
            kind: RespKind::Upstream(body),
            checkin,
            busy: None,
        };
        this.check_in_if_done();
        this
    }

    /// Keeps `busy` until the body has been sent.
    pub(crate) fn hold(&mut self, busy: Busy) {
        self.busy = Some(busy);
    }

    fn check_in_if_done(&mut self) {
        if self.checkin.is_some()
            && let RespKind::Upstream(body) = &self.kind
            && body.is_end_stream()
            && let Some(checkin) = self.checkin.take()
        {
            checkin.put();
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match &mut this.kind {
            RespKind::Full(full) => poll_full(full, cx),
            RespKind::Upstream(body) => {
                let frame = std::task::ready!(Pin::new(body).poll_frame(cx));
                match &frame {
                    None => {
                        if let Some(checkin) = this.checkin.take() {
                            checkin.put();
                        }
                    }
                    Some(Ok(_)) => this.check_in_if_done(),
                    // A broken body leaves the connection unusable: drop it.
                    Some(Err(_)) => this.checkin = None,
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            RespKind::Upstream(body) => body.is_end_stream(),
            RespKind::Full(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            RespKind::Upstream(body) => body.size_hint(),
            RespKind::Full(full) => full.size_hint(),
        }
    }
}

/// The one frame of a buffered body, in whichever error type the body has.
fn poll_full<E>(
    full: &mut Full<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, E>>> {
    Pin::new(full)
        .poll_frame(cx)
        .map(|f| f.map(|r| r.map_err(|never| match never {})))
}

impl Drop for RespBody {
    fn drop(&mut self) {
        // Bodies hyper never polls (HEAD, 204, content-length: 0) end here.
        self.check_in_if_done();
    }
}
