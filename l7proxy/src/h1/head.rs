//! Request and response heads on the fast path: parsed with httparse, checked, and copied to the
//! other side without their hop-by-hop fields (RFC 9110 §7.6.1).

use crate::access_log::Summary;
use crate::detect::{MAX_HEAD, MAX_HEADERS};
use crate::errors::ProxyError;
use crate::forward::MAX_REPLAY_BODY;

/// A request the fast path forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestHead {
    /// Bytes of the head in the client's buffer.
    pub(crate) len: usize,
    /// Bytes of body after the head (`content-length`; at most [`MAX_REPLAY_BODY`]).
    pub(crate) body_len: usize,
    /// GET, HEAD, OPTIONS, PUT, DELETE or TRACE: may be sent again after a failure.
    pub(crate) idempotent: bool,
    /// A HEAD request: its response has no body whatever its fields say.
    pub(crate) head_method: bool,
    /// The client asked to close the connection after this request.
    pub(crate) close: bool,
}

/// What the fast path makes of the bytes at the start of a client's buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request {
    /// The head is not complete yet.
    Partial,
    /// A request the fast path forwards; its head (without body) was written to `out`.
    Fast(RequestHead),
    /// A request hyper should serve (HTTP/1.0, `Upgrade`, `Expect`, `CONNECT`, chunked or large
    /// bodies): the connection is handed over from here on.
    Slow,
    /// A malformed or oversize head.
    Bad(ProxyError),
}

/// Parses the request head at the start of `buf`; for a fast request, writes the head to send
/// upstream into `out` (cleared first) and, when `summary` is given, fills it in.
pub(crate) fn parse_request(
    buf: &[u8],
    out: &mut Vec<u8>,
    summary: Option<&mut Summary>,
) -> Request {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Request::Partial,
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {
            return Request::Bad(ProxyError::HeadersTooLarge { limit: MAX_HEAD });
        }
        Err(_) => return Request::Bad(ProxyError::BadRequest),
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Request::Slow;
    };
    if method == "CONNECT" {
        return Request::Slow;
    }
    let mut fields = Fields::default();
    for h in req.headers.iter() {
        match fields.note(h) {
            Err(BadLength) => return Request::Bad(ProxyError::BadRequest),
            Ok(Field::TransferEncoding | Field::Upgrade | Field::Expect) => return Request::Slow,
            Ok(_) => {}
        }
    }
    let body_len = fields.content_length.unwrap_or(0);
    if body_len > MAX_REPLAY_BODY {
        return Request::Slow;
    }
    out.clear();
    out.reserve(len + body_len as usize);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    copy_fields(req.headers, &fields, out);
    out.extend_from_slice(b"\r\n");
    if let Some(summary) = summary {
        summary.method = method.to_owned();
        summary.path = path.split('?').next().unwrap_or_default().to_owned();
        summary.authority = String::from_utf8_lossy(fields.host.unwrap_or_default()).into_owned();
    }
    Request::Fast(RequestHead {
        len,
        body_len: body_len as usize,
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
        ),
        head_method: method == "HEAD",
        close: fields.close,
    })
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: HEAD responses, 1xx, 204 and 304.
    Empty,
    /// `content-length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the endpoint closes the connection.
    UntilClose,
}

/// A response head from an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    /// Bytes of the head in the upstream buffer.
    pub(crate) len: usize,
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    /// The endpoint keeps the connection open after the body.
    pub(crate) keep_alive: bool,
}

/// Parses the response head at the start of `buf`. `head_method`: the request was HEAD. For a
/// complete head, writes the head to send to the client into `out` (cleared first), asking the
/// client to close when `close` or when the body runs until the endpoint closes.
pub(crate) fn parse_response(
    buf: &[u8],
    head_method: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, ProxyError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        Ok(_) | Err(_) => return Err(ProxyError::UpstreamProtocol),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err(ProxyError::UpstreamProtocol);
    };
    let mut fields = Fields::default();
    let mut chunked = None;
    for h in resp.headers.iter() {
        // Only the last coding decides the framing (RFC 9112 §6.3).
        if fields
            .note(h)
            .map_err(|BadLength| ProxyError::UpstreamProtocol)?
            == Field::TransferEncoding
        {
            chunked = Some(last_coding_is_chunked(h.value));
        }
    }
    let framing = match (status, chunked, fields.content_length) {
        _ if head_method || status < 200 || status == 204 || status == 304 => Framing::Empty,
        // Both: a smuggling attempt or a broken endpoint (RFC 9112 §6.3 ¶3).
        (_, Some(_), Some(_)) => return Err(ProxyError::UpstreamProtocol),
        (_, Some(true), None) => Framing::Chunked,
        (_, Some(false), None) | (_, None, None) => Framing::UntilClose,
        (_, None, Some(n)) => Framing::Length(n),
    };
    let keep_alive = version == 1 && !fields.close && framing != Framing::UntilClose;
    out.clear();
    out.reserve(len + 32);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa3(status).as_slice());
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or_default().as_bytes());
    out.extend_from_slice(b"\r\n");
    copy_fields(resp.headers, &fields, out);
    if status >= 200 && (close || framing == Framing::UntilClose) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        len,
        status,
        framing,
        keep_alive,
    }))
}

/// What the fast path needs to know of a message's fields.
#[derive(Debug, Default)]
struct Fields<'a> {
    content_length: Option<u64>,
    /// `connection: close`.
    close: bool,
    /// The `connection` field's values: the fields they name are hop-by-hop too.
    connection: Vec<&'a [u8]>,
    host: Option<&'a [u8]>,
    /// Some field must not be copied: [`copy_fields`] then looks at each one.
    hop_by_hop: bool,
}

/// Differing or malformed `content-length` values.
struct BadLength;

impl<'a> Fields<'a> {
    /// Notes what the fast path needs of one field and returns its kind.
    fn note(&mut self, h: &httparse::Header<'a>) -> Result<Field, BadLength> {
        let field = classify(h.name);
        match field {
            Field::ContentLength => match (content_length(h.value), self.content_length) {
                (Some(n), None) => self.content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Err(BadLength),
            },
            Field::Connection => {
                self.hop_by_hop = true;
                self.note_connection(h.value);
            }
            Field::HopByHop | Field::Upgrade => self.hop_by_hop = true,
            // `te: trailers` is what gRPC-aware endpoints look for; other codings are hop-by-hop.
            Field::Te => self.hop_by_hop |= !h.value.eq_ignore_ascii_case(b"trailers"),
            Field::Host => self.host = Some(h.value),
            Field::TransferEncoding | Field::Expect | Field::Other => {}
        }
        Ok(field)
    }

    fn note_connection(&mut self, value: &'a [u8]) {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if !(token.is_empty()
                || token.eq_ignore_ascii_case(b"keep-alive")
                || token.eq_ignore_ascii_case(b"upgrade"))
            {
                // Those two are dropped anyway: no allocation for the common values.
                self.connection.push(token);
            }
        }
    }

    /// Whether field `h` goes on to the next hop.
    fn keeps(&self, h: &httparse::Header<'_>) -> bool {
        match classify(h.name) {
            Field::Connection | Field::HopByHop | Field::Upgrade => false,
            Field::Te => h.value.eq_ignore_ascii_case(b"trailers"),
            _ => !self
                .connection
                .iter()
                .any(|token| token.eq_ignore_ascii_case(h.name.as_bytes())),
        }
    }
}

/// Appends the end-to-end fields of `headers` to `out`. Most messages have no hop-by-hop
/// field: then every field is copied without looking at its name again.
fn copy_fields(headers: &[httparse::Header<'_>], fields: &Fields<'_>, out: &mut Vec<u8>) {
    for h in headers {
        if !fields.hop_by_hop || fields.keeps(h) {
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Expect,
    Te,
    Host,
    /// `keep-alive`, `proxy-connection`.
    HopByHop,
    Other,
}

fn classify(name: &str) -> Field {
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    // Dispatch on the length first: most names are compared against nothing.
    match name.len() {
        4 if is("host") => Field::Host,
        2 if is("te") => Field::Te,
        6 if is("expect") => Field::Expect,
        7 if is("upgrade") => Field::Upgrade,
        10 if is("connection") => Field::Connection,
        10 if is("keep-alive") => Field::HopByHop,
        14 if is("content-length") => Field::ContentLength,
        16 if is("proxy-connection") => Field::HopByHop,
        17 if is("transfer-encoding") => Field::TransferEncoding,
        _ => Field::Other,
    }
}

/// A `content-length` value: digits only (RFC 9110 §8.6), at most 18 of them.
fn content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn last_coding_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A status code's three digits (httparse guarantees 100..=999).
fn itoa3(status: u16) -> [u8; 3] {
    let status = status.min(999);
    [
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &[u8]) -> (Request, String) {
        let mut out = Vec::new();
        let parsed = parse_request(raw, &mut out, None);
        (parsed, String::from_utf8(out).unwrap())
    }

    #[test]
    fn plain_requests_take_the_fast_path_without_hop_by_hop_fields() {
        let raw = b"GET /a?b=1 HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, x-hop\r\n\
                    x-hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nx-end: 2\r\n\r\nNEXT";
        let (parsed, out) = request(raw);
        let Request::Fast(head) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(head.len, raw.len() - 4);
        assert_eq!(head.body_len, 0);
        assert!(head.idempotent && !head.head_method && !head.close);
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nHost: web\r\nTE: trailers\r\nx-end: 2\r\n\r\n"
        );

        let (parsed, out) =
            request(b"POST /p HTTP/1.1\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc");
        assert!(matches!(
            parsed,
            Request::Fast(RequestHead {
                body_len: 3,
                idempotent: false,
                close: true,
                ..
            })
        ));
        assert_eq!(out, "POST /p HTTP/1.1\r\ncontent-length: 3\r\n\r\n");
    }

    #[test]
    fn unusual_requests_go_to_hyper_and_bad_ones_are_refused() {
        for raw in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"PUT / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 100000\r\n\r\n",
        ] {
            assert_eq!(
                request(raw).0,
                Request::Slow,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(
            request(b"GET / HTTP/1.1\r\nhost: a\r\n").0,
            Request::Partial
        );
        for raw in [
            &b"GET / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\ncontent-length: 1x\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                request(raw).0,
                Request::Bad(ProxyError::BadRequest),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(
            request(&big).0,
            Request::Bad(ProxyError::HeadersTooLarge { limit: MAX_HEAD })
        );
    }

    fn response(raw: &[u8], head_method: bool, close: bool) -> (ResponseHead, String) {
        let mut out = Vec::new();
        let head = parse_response(raw, head_method, close, &mut out)
            .unwrap()
            .unwrap();
        (head, String::from_utf8(out).unwrap())
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nkeep-alive: x\r\n\r\nhello";
        let (head, out) = response(raw, false, false);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(head.len, raw.len() - 5);

        let (head, _) = response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true, false);
        assert_eq!(head.framing, Framing::Empty);
        let (head, _) = response(b"HTTP/1.1 204 No Content\r\n\r\n", false, false);
        assert_eq!(head.framing, Framing::Empty);
        let (head, out) = response(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            false,
            true,
        );
        assert_eq!(head.framing, Framing::Chunked);
        assert!(out.ends_with("transfer-encoding: gzip, chunked\r\nconnection: close\r\n\r\n"));
        let (head, out) = response(b"HTTP/1.0 200 OK\r\n\r\n", false, false);
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.keep_alive);
        assert_eq!(out, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
        let (head, out) = response(
            b"HTTP/1.1 503 Busy\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            false,
            false,
        );
        assert!(!head.keep_alive);
        assert_eq!(head.status, 503);
        assert_eq!(out, "HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n");
        let (head, out) = response(
            b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
            false,
            true,
        );
        assert_eq!((head.status, head.framing), (103, Framing::Empty));
        assert_eq!(out, "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n");
    }

    #[test]
    fn ambiguous_or_broken_responses_are_errors() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: z\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert_eq!(
                parse_response(raw, false, false, &mut Vec::new()),
                Err(ProxyError::UpstreamProtocol),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n", false, false, &mut Vec::new()),
            Ok(None)
        );
    }

    proptest::proptest! {
        /// Arbitrary bytes after a request line never panic either parser.
        #[test]
        fn garbage_heads_do_not_panic(tail in proptest::collection::vec(0u8..=255, 0..300)) {
            let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
            raw.extend_from_slice(&tail);
            let _ = parse_request(&raw, &mut Vec::new(), Some(&mut Summary::default()));
            let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
            raw.extend_from_slice(&tail);
            let _ = parse_response(&raw, false, false, &mut Vec::new());
        }
    }
}
