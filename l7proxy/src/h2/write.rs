//! The frames a connection sends, on their way to the socket: the write half of the frame
//! layer, next to h2's codec, which reads.
//!
//! It is h2's `FramedWrite` but for the header blocks, which go through this crate's
//! stateless encoder ([`super::hpack`]) instead of h2's, not pluggable there. Control frames
//! encode themselves (h2's frame types); frame heads, header blocks and small DATA payloads
//! are copied into one buffer, larger payloads are written from where they lie, all of it with
//! one vectored write where the socket allows.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use h2::Reason;
use h2::frame::{self, Frame, Head, Kind, Reset, StreamId};
use tokio::io::AsyncWrite;

use super::hpack;

/// DATA payloads this large or larger are not copied (h2's threshold).
const CHAIN: usize = 256;
/// Bytes queued before [`Writer::poll_ready`] writes them out first.
const HIGH_WATER: usize = 64 * 1024;
/// Slices per vectored write.
const MAX_SLICES: usize = 32;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

pub(crate) struct Writer {
    /// What goes out, in order, but for the chained payloads.
    buf: BytesMut,
    /// How much of `buf` is written.
    pos: usize,
    /// Payloads written from where they lie, each after `buf[..mark]`.
    chained: VecDeque<(usize, Bytes)>,
    chained_len: usize,
    /// The peer's largest frame.
    max_frame: usize,
    /// The peer changed its header table size: say that the (unused) table is empty.
    table_size_update: bool,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Self {
            buf: BytesMut::new(),
            pos: 0,
            chained: VecDeque::new(),
            chained_len: 0,
            max_frame: frame::DEFAULT_MAX_FRAME_SIZE as usize,
            table_size_update: false,
        }
    }

    pub(crate) fn set_max_frame_size(&mut self, size: usize) {
        self.max_frame = size;
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE changed.
    pub(crate) fn header_table_size_changed(&mut self) {
        self.table_size_update = true;
    }

    /// Frees the buffer when everything is written (a connection without streams for a while).
    pub(crate) fn shed(&mut self) {
        if self.queued() == 0 {
            self.buf = BytesMut::new();
            self.pos = 0;
            self.chained = VecDeque::new();
        }
    }

    fn queued(&self) -> usize {
        self.buf.len() - self.pos + self.chained_len
    }

    /// Ready when another frame may be queued, after writing out what is queued if there is
    /// too much of it.
    pub(crate) fn poll_ready<T: AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if self.queued() >= HIGH_WATER {
            ready!(self.poll_flush(io, cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Queues a DATA frame; the caller keeps it within the peer's largest frame.
    pub(crate) fn data(&mut self, id: StreamId, payload: Bytes, end: bool) {
        let len = payload.len();
        let flags = if end { END_STREAM } else { 0 };
        Head::new(Kind::Data, flags, id).encode(len, &mut self.buf);
        if len < CHAIN {
            self.buf.extend_from_slice(&payload);
        } else {
            self.chained.push_back((self.buf.len(), payload));
            self.chained_len += len;
        }
    }

    /// Queues a header block ([`super::hpack::encode`]) in a HEADERS frame, and CONTINUATION
    /// frames when it is larger than the peer's largest frame.
    pub(crate) fn headers(&mut self, id: StreamId, block: &[u8], end: bool) {
        let dst = &mut self.buf;
        let start = dst.len();
        dst.extend_from_slice(&[0; frame::HEADER_LEN]);
        if std::mem::take(&mut self.table_size_update) {
            hpack::put_table_size_zero(dst);
        }
        dst.extend_from_slice(block);
        let block_len = dst.len() - start - frame::HEADER_LEN;
        let end_flag = if end { END_STREAM } else { 0 };
        if block_len <= self.max_frame {
            let mut head = &mut dst[start..start + frame::HEADER_LEN];
            Head::new(Kind::Headers, end_flag | END_HEADERS, id).encode(block_len, &mut head);
        } else {
            split_block(dst, start, self.max_frame, id, end_flag);
        }
    }

    pub(crate) fn reset(&mut self, id: StreamId, reason: Reason) {
        Reset::new(id, reason).encode(&mut self.buf);
    }

    /// Queues a frame. DATA larger than the peer's largest frame, and PRIORITY frames (never
    /// sent by this crate), are refused.
    pub(crate) fn buffer(&mut self, frame: Frame<Bytes>) -> Result<(), &'static str> {
        match frame {
            Frame::Data(data) => {
                if data.payload().len() > self.max_frame {
                    return Err("DATA frame larger than the peer's largest frame");
                }
                let end = data.is_end_stream();
                self.data(data.stream_id(), data.into_payload(), end);
            }
            Frame::Headers(headers) => {
                let id = headers.stream_id();
                let end = headers.is_end_stream();
                let (pseudo, fields) = headers.into_parts();
                let mut block = BytesMut::new();
                hpack::encode(&pseudo, &fields, &mut block);
                self.headers(id, &block, end);
            }
            Frame::Settings(settings) => settings.encode(&mut self.buf),
            Frame::GoAway(go_away) => go_away.encode(&mut self.buf),
            Frame::Ping(ping) => ping.encode(&mut self.buf),
            Frame::WindowUpdate(update) => update.encode(&mut self.buf),
            Frame::Reset(reset) => reset.encode(&mut self.buf),
            Frame::Priority(_) | Frame::PushPromise(_) => return Err("frame never sent"),
        }
        Ok(())
    }

    /// Writes out everything queued.
    pub(crate) fn poll_flush<T: AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.queued() > 0 {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            let mut at = self.pos;
            let mut all = true;
            for (mark, payload) in &self.chained {
                if count + 2 > MAX_SLICES {
                    all = false;
                    break;
                }
                if *mark > at {
                    slices[count] = IoSlice::new(&self.buf[at..*mark]);
                    count += 1;
                    at = *mark;
                }
                if !payload.is_empty() {
                    slices[count] = IoSlice::new(payload);
                    count += 1;
                }
            }
            if all && at < self.buf.len() {
                slices[count] = IoSlice::new(&self.buf[at..]);
                count += 1;
            }
            let n = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        self.buf.clear();
        self.pos = 0;
        Pin::new(io).poll_flush(cx)
    }

    /// `n` more bytes are written.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some((mark, payload)) = self.chained.front_mut() else {
                self.pos += n;
                return;
            };
            if self.pos < *mark {
                let k = n.min(*mark - self.pos);
                self.pos += k;
                n -= k;
                continue;
            }
            let k = n.min(payload.len());
            payload.advance(k);
            self.chained_len -= k;
            n -= k;
            if payload.is_empty() {
                self.chained.pop_front();
            }
        }
    }
}

/// A header block over the peer's largest frame, encoded after a HEADERS head at `start`: cut
/// into HEADERS and CONTINUATION frames (RFC 9113 §6.10).
fn split_block(dst: &mut BytesMut, start: usize, max_frame: usize, id: StreamId, end: u8) {
    let block = dst.split_off(start + frame::HEADER_LEN).freeze();
    dst.truncate(start);
    let mut chunks = block.chunks(max_frame).peekable();
    let mut kind = Kind::Headers;
    let mut flags = end;
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_none() {
            flags |= END_HEADERS;
        }
        Head::new(kind, flags, id).encode(chunk.len(), dst);
        dst.extend_from_slice(chunk);
        kind = Kind::Continuation;
        flags = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use h2::Codec;
    use h2::frame::{BytesStr, GoAway, Ping, Pseudo, Settings, WindowUpdate};
    use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
    use tokio::io::AsyncWriteExt;

    /// Writes `frames` with a [`Writer`] through a pipe of `pipe` bytes (partial writes when
    /// small) and reads them back with h2's codec, and so with h2's HPACK decoder.
    async fn round_trip(frames: Vec<Frame<Bytes>>, max_frame: usize, pipe: usize) -> Vec<Frame> {
        let (mut ours, theirs) = tokio::io::duplex(pipe);
        let count = frames.len();
        let write = async move {
            let mut writer = Writer::new();
            writer.set_max_frame_size(max_frame);
            for frame in frames {
                std::future::poll_fn(|cx| writer.poll_ready(&mut ours, cx))
                    .await
                    .unwrap();
                writer.buffer(frame).unwrap();
            }
            std::future::poll_fn(|cx| writer.poll_flush(&mut ours, cx))
                .await
                .unwrap();
            assert_eq!(writer.queued(), 0);
            ours.shutdown().await.unwrap();
        };
        let read = async move {
            let mut codec: Codec<_, Bytes> = Codec::new(theirs);
            codec.set_max_recv_frame_size(max_frame);
            let mut out = Vec::new();
            while let Some(frame) = codec.next().await {
                out.push(frame.unwrap());
            }
            out
        };
        let ((), out) = tokio::join!(write, read);
        assert_eq!(out.len(), count, "{out:?}");
        out
    }

    fn into_headers(frame: Frame) -> frame::Headers {
        match frame {
            Frame::Headers(headers) => headers,
            other => panic!("not HEADERS: {other:?}"),
        }
    }

    fn text(s: &str) -> BytesStr {
        BytesStr::try_from(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    fn every_kind_of_field() -> HeaderMap {
        let names = [
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "accept",
            "access-control-allow-origin",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "content-disposition",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-range",
            "content-type",
            "cookie",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "link",
            "location",
            "max-forwards",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "refresh",
            "retry-after",
            "server",
            "set-cookie",
            "strict-transport-security",
            // transfer-encoding (57) is connection-specific: h2's decoder drops it.
            "user-agent",
            "vary",
            "via",
            "www-authenticate",
            "x-custom",
        ];
        let mut fields = HeaderMap::new();
        for (i, name) in names.iter().enumerate() {
            let name = header::HeaderName::from_static(name);
            fields.append(name, HeaderValue::from_str(&format!("v{i}")).unwrap());
        }
        fields.append(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate"),
        );
        let mut secret = HeaderValue::from_static("Bearer x");
        secret.set_sensitive(true);
        fields.append(header::AUTHORIZATION, secret);
        fields.append("x-long", HeaderValue::from_str(&"a".repeat(300)).unwrap());
        fields.append("x-empty", HeaderValue::from_static(""));
        fields
    }

    #[tokio::test]
    async fn every_static_name_and_the_pseudo_fields_read_back() {
        let fields = every_kind_of_field();
        let uri = "https://example.com:8443/a?b=c".parse().unwrap();
        let pseudo = Pseudo::request(Method::PATCH, uri, None);
        let sent = frame::Headers::new(StreamId::from(1), pseudo, fields.clone());
        let frames = round_trip(vec![sent.into()], 16_384, 1 << 20).await;
        let got = into_headers(frames.into_iter().next().unwrap());
        assert!(!got.is_end_stream());
        let (pseudo, got_fields) = got.into_parts();
        assert_eq!(pseudo.method, Some(Method::PATCH));
        assert_eq!(pseudo.scheme.as_deref(), Some("https"));
        assert_eq!(pseudo.authority.as_deref(), Some("example.com:8443"));
        assert_eq!(pseudo.path.as_deref(), Some("/a?b=c"));
        assert_eq!(got_fields, fields);
    }

    #[tokio::test]
    async fn static_pseudo_values_and_statuses_read_back() {
        let mut sent = Vec::new();
        let requests = [
            (Method::GET, "http", "/"),
            (Method::POST, "https", "/index.html"),
            (Method::OPTIONS, "h", "*"),
        ];
        for (i, (method, scheme, path)) in requests.iter().enumerate() {
            let pseudo = Pseudo {
                method: Some(method.clone()),
                scheme: Some(text(scheme)),
                authority: Some(text("a")),
                path: Some(text(path)),
                ..Pseudo::default()
            };
            let id = StreamId::from(2 * i as u32 + 1);
            sent.push(frame::Headers::new(id, pseudo, HeaderMap::new()).into());
        }
        let statuses = [200, 204, 206, 304, 400, 404, 500, 100, 201, 503, 599];
        for &status in &statuses {
            let pseudo = Pseudo::response(StatusCode::from_u16(status).unwrap());
            let mut headers = frame::Headers::new(StreamId::from(1), pseudo, HeaderMap::new());
            headers.set_end_stream();
            sent.push(headers.into());
        }
        let mut got = round_trip(sent, 16_384, 1 << 20).await.into_iter();
        for (method, scheme, path) in requests {
            let (pseudo, _) = into_headers(got.next().unwrap()).into_parts();
            assert_eq!(pseudo.method, Some(method));
            assert_eq!(pseudo.scheme.as_deref(), Some(scheme));
            assert_eq!(pseudo.authority.as_deref(), Some("a"));
            assert_eq!(pseudo.path.as_deref(), Some(path));
        }
        for status in statuses {
            let headers = into_headers(got.next().unwrap());
            assert!(headers.is_end_stream());
            let (pseudo, fields) = headers.into_parts();
            assert_eq!(pseudo.status.map(|s| s.as_u16()), Some(status));
            assert!(fields.is_empty());
        }
    }

    #[tokio::test]
    async fn large_blocks_go_in_continuation_frames() {
        // Blocks over the largest frame, through a pipe that takes a few bytes at a time.
        let mut fields = every_kind_of_field();
        for i in 0..200 {
            fields.append(
                "x-many",
                HeaderValue::from_str(&format!("{i:0>100}")).unwrap(),
            );
        }
        let mut trailers = frame::Headers::trailers(StreamId::from(3), fields.clone());
        trailers.set_end_stream();
        let sent = vec![
            frame::Headers::new(
                StreamId::from(1),
                Pseudo::response(StatusCode::OK),
                fields.clone(),
            )
            .into(),
            trailers.into(),
        ];
        let got = round_trip(sent, 16_384, 1000).await;
        let mut got = got.into_iter().map(into_headers);
        let first = got.next().unwrap();
        assert_eq!(first.stream_id(), StreamId::from(1));
        assert!(!first.is_end_stream());
        assert!(first.into_parts().1 == fields, "HEADERS block differs");
        let second = got.next().unwrap();
        assert_eq!(second.stream_id(), StreamId::from(3));
        assert!(second.is_end_stream());
        assert!(second.into_parts().1 == fields, "trailers differ");
    }

    #[tokio::test]
    async fn data_and_control_frames_keep_their_order() {
        let big = Bytes::from(vec![7u8; 10_000]);
        let mut last = frame::Data::new(StreamId::from(1), Bytes::from_static(b"end"));
        last.set_end_stream(true);
        let mut settings = Settings::default();
        settings.set_initial_window_size(Some(1 << 20));
        let mut sent: Vec<Frame<Bytes>> = vec![settings.into()];
        for i in 0..40u32 {
            // Chained and copied payloads in turn, more than one vectored write holds.
            let payload = if i % 2 == 0 {
                big.clone()
            } else {
                Bytes::from(vec![i as u8; 10])
            };
            sent.push(frame::Data::new(StreamId::from(1), payload).into());
        }
        sent.push(last.into());
        sent.push(WindowUpdate::new(StreamId::zero(), 1000).into());
        sent.push(Ping::new([1; 8]).into());
        sent.push(Reset::new(StreamId::from(5), Reason::CANCEL).into());
        sent.push(GoAway::new(StreamId::from(5), Reason::NO_ERROR).into());
        let got = round_trip(sent, 16_384, 4096).await;
        let mut got = got.into_iter();
        assert!(
            matches!(got.next(), Some(Frame::Settings(s)) if s.initial_window_size() == Some(1 << 20))
        );
        for i in 0..40u32 {
            let Some(Frame::Data(data)) = got.next() else {
                panic!("not DATA")
            };
            assert!(!data.is_end_stream());
            if i % 2 == 0 {
                assert_eq!(data.payload(), &big);
            } else {
                assert_eq!(&data.payload()[..], &[i as u8; 10]);
            }
        }
        let Some(Frame::Data(data)) = got.next() else {
            panic!("not DATA")
        };
        assert!(data.is_end_stream());
        assert_eq!(&data.payload()[..], b"end");
        assert!(matches!(got.next(), Some(Frame::WindowUpdate(w)) if w.size_increment() == 1000));
        assert!(matches!(got.next(), Some(Frame::Ping(p)) if p.payload() == &[1; 8]));
        assert!(matches!(got.next(), Some(Frame::Reset(r)) if r.reason() == Reason::CANCEL));
        assert!(matches!(got.next(), Some(Frame::GoAway(g)) if g.reason() == Reason::NO_ERROR));
    }

    #[tokio::test]
    async fn a_table_size_update_leads_the_next_block_only() {
        let (mut ours, _theirs) = tokio::io::duplex(1 << 16);
        let mut writer = Writer::new();
        writer.header_table_size_changed();
        for _ in 0..2 {
            let pseudo = Pseudo::response(StatusCode::OK);
            let headers = frame::Headers::new(StreamId::from(1), pseudo, HeaderMap::new());
            writer.buffer(headers.into()).unwrap();
        }
        // HEADERS heads (9 bytes) with 0x20 (size 0) then 0x88 (:status 200), then 0x88 alone.
        assert_eq!(&writer.buf[9..11], &[0x20, 0x88]);
        assert_eq!(&writer.buf[20..], &[0x88]);
        std::future::poll_fn(|cx| writer.poll_flush(&mut ours, cx))
            .await
            .unwrap();
    }

    #[test]
    fn data_over_the_largest_frame_is_refused() {
        let mut writer = Writer::new();
        let data = frame::Data::new(StreamId::from(1), Bytes::from(vec![0; 16_385]));
        assert!(writer.buffer(data.into()).is_err());
        assert_eq!(writer.queued(), 0);
    }
}
