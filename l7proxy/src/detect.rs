//! Protocol detection on `http` ports: the first bytes of a connection say whether it is
//! HTTP/2 with prior knowledge (the RFC 9113 §3.4 preface), HTTP/1.x, or something else, which is
//! then forwarded as opaque TCP. The first HTTP/1 request head is read whole and checked here, so
//! that malformed and oversize heads get the proxy's own error responses (later heads on a
//! keep-alive connection are checked by hyper with the same limits).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::errors::ProxyError;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Largest request head (request line and headers) accepted, in bytes.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a request head (hyper's default, so both checks agree).
pub(crate) const MAX_HEADERS: usize = 100;
/// Longest method token considered when deciding whether bytes look like HTTP/1.
const MAX_METHOD: usize = 24;

/// What a connection speaks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Detected {
    /// HTTP/1.x; the first head was read and is valid.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// Not HTTP: forward the bytes as they are.
    Opaque,
    /// HTTP/1 with an invalid or oversize first head.
    Reject(ProxyError),
    /// The client closed (or stayed silent past the timeout) before anything could be decided.
    Closed,
}

/// Reads from `stream` until the protocol is known; returns it and the bytes read so far, which
/// must be replayed ([`Prefixed`]) to whoever handles the connection.
pub(crate) async fn detect(stream: &mut TcpStream, timeout: Duration) -> (Detected, BytesMut) {
    match tokio::time::timeout(timeout, detect_inner(stream)).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) | Err(_) => (Detected::Closed, BytesMut::new()),
    }
}

async fn detect_inner(stream: &mut TcpStream) -> io::Result<(Detected, BytesMut)> {
    // Idle connections cost no buffer until their first bytes arrive (`readable()` alone
    // wakes up spuriously for fresh sockets; a one-byte peek does not).
    if stream.peek(&mut [0u8; 1]).await? == 0 {
        return Ok((Detected::Closed, BytesMut::new()));
    }
    let mut buf = BytesMut::with_capacity(4096);
    let mut scanned = 0;
    loop {
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().min(MAX_HEAD));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            let detected = match classify(&buf, &mut scanned, true) {
                Step::Decided(d) => d,
                Step::NeedMore if buf.is_empty() => Detected::Closed,
                Step::NeedMore => Detected::Opaque,
            };
            return Ok((detected, buf));
        }
        if let Step::Decided(d) = classify(&buf, &mut scanned, false) {
            return Ok((d, buf));
        }
    }
}

enum Step {
    Decided(Detected),
    NeedMore,
}

/// Classifies the bytes read so far. `scanned` remembers how far the end-of-head search got, so
/// that a head trickling in byte by byte costs linear time. `eof`: no more bytes will come.
fn classify(buf: &[u8], scanned: &mut usize, eof: bool) -> Step {
    let Some(&first) = buf.first() else {
        return Step::NeedMore;
    };
    if buf.len() >= H2_PREFACE.len() && buf.starts_with(H2_PREFACE) {
        return Step::Decided(Detected::Http2);
    }
    if buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) && !eof {
        return Step::NeedMore;
    }
    // HTTP/1 starts with a method token (RFC 9112 §3): capital letters in practice.
    if !first.is_ascii_uppercase() {
        return Step::Decided(Detected::Opaque);
    }
    let method_end = buf
        .iter()
        .take(MAX_METHOD)
        .position(|b| !(b.is_ascii_uppercase() || *b == b'-' || *b == b'_'));
    match method_end {
        Some(i) if buf[i] == b' ' => {}
        Some(_) => return Step::Decided(Detected::Opaque),
        None if buf.len() >= MAX_METHOD => return Step::Decided(Detected::Opaque),
        None if eof => return Step::Decided(Detected::Reject(ProxyError::BadRequest)),
        None => return Step::NeedMore,
    }
    // It looks like HTTP/1: wait for the whole head, then let httparse judge it.
    let from = scanned.saturating_sub(3).min(buf.len());
    let head_end = find_head_end(&buf[from..]).map(|i| from + i);
    *scanned = buf.len();
    if head_end.is_none() && buf.len() <= MAX_HEAD && !eof {
        return Step::NeedMore;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let detected = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            Detected::Reject(ProxyError::HeadersTooLarge { limit: MAX_HEAD })
        }
        Ok(httparse::Status::Complete(_)) => Detected::Http1,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            Detected::Reject(ProxyError::HeadersTooLarge { limit: MAX_HEAD })
        }
        Ok(httparse::Status::Partial) => Detected::Reject(ProxyError::BadRequest),
        Err(httparse::Error::TooManyHeaders) => {
            Detected::Reject(ProxyError::HeadersTooLarge { limit: MAX_HEAD })
        }
        Err(_) => Detected::Reject(ProxyError::BadRequest),
    };
    Step::Decided(detected)
}

/// Index of the first byte after an empty line (`\n\n` or `\n\r\n`), if any.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).enumerate().find_map(|(i, w)| match w {
        [b'\n', b'\n'] => Some(i + 2),
        [b'\n', b'\r'] if buf.get(i + 2) == Some(&b'\n') => Some(i + 3),
        _ => None,
    })
}

/// A stream that first replays bytes already read from it.
#[derive(Debug)]
pub(crate) struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(crate) fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }

    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            if this.prefix.is_empty() {
                // Free the detection buffer: idle keep-alive connections should not hold it.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(bytes: &[u8], eof: bool) -> Option<Detected> {
        match classify(bytes, &mut 0, eof) {
            Step::Decided(d) => Some(d),
            Step::NeedMore => None,
        }
    }

    #[test]
    fn recognises_http1_h2_and_everything_else() {
        assert_eq!(
            decide(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", false),
            Some(Detected::Http1)
        );
        assert_eq!(decide(b"GET / HTTP/1.1\r\nhost: a\r\n", false), None);
        assert_eq!(decide(H2_PREFACE, false), Some(Detected::Http2));
        assert_eq!(decide(&H2_PREFACE[..10], false), None);
        assert_eq!(
            decide(b"\x16\x03\x01\x02\x00", false),
            Some(Detected::Opaque)
        );
        assert_eq!(decide(b"SSH-2.0-OpenSSH", false), Some(Detected::Opaque));
        assert_eq!(decide(b"\x00\xff garbage", false), Some(Detected::Opaque));
        assert_eq!(
            decide(b"GE", true),
            Some(Detected::Reject(ProxyError::BadRequest))
        );
    }

    #[test]
    fn rejects_bad_and_oversize_heads() {
        assert_eq!(
            decide(b"GET /x HTTP/9 9\r\n\r\n", false),
            Some(Detected::Reject(ProxyError::BadRequest))
        );
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        while big.len() <= MAX_HEAD {
            big.extend_from_slice(
                b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        assert_eq!(
            decide(&big, false),
            Some(Detected::Reject(ProxyError::HeadersTooLarge {
                limit: MAX_HEAD
            }))
        );
    }

    proptest::proptest! {
        /// Any bytes, cut anywhere: no panic, and reading them in pieces decides exactly as
        /// reading them at once.
        #[test]
        fn chunked_input_decides_like_whole_input(
            prefix in proptest::sample::select(vec![&b""[..], b"GET / HTTP/1.1\r\n", b"PRI * HTTP/2.0", b"POST /x HTTP/1.0\r\nh: v\r\n"]),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            cuts in proptest::collection::vec(1usize..64, 1..20),
        ) {
            let mut bytes = prefix.to_vec();
            bytes.extend_from_slice(&tail);
            let mut scanned = 0;
            let mut end = 0;
            for cut in cuts.iter().cycle().take(bytes.len() + 1) {
                end = (end + cut).min(bytes.len());
                let piecewise = classify(&bytes[..end], &mut scanned, false);
                let whole = classify(&bytes[..end], &mut 0, false);
                match (piecewise, whole) {
                    (Step::Decided(a), Step::Decided(b)) => {
                        proptest::prop_assert_eq!(a, b);
                        break;
                    }
                    (Step::NeedMore, Step::NeedMore) => {}
                    _ => proptest::prop_assert!(false, "piecewise and whole disagree at {}", end),
                }
                if end == bytes.len() {
                    let _ = classify(&bytes, &mut 0, true);
                    break;
                }
            }
        }
    }

    #[test]
    fn head_end_search_is_incremental() {
        let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        let mut scanned = 0;
        for end in 1..head.len() {
            assert!(matches!(
                classify(&head[..end], &mut scanned, false),
                Step::NeedMore
            ));
        }
        assert!(matches!(
            classify(head, &mut scanned, false),
            Step::Decided(Detected::Http1)
        ));
    }
}
