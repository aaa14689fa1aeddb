//! gRPC over HTTP/2 (prior knowledge) without a gRPC library: 5-byte length-prefixed messages
//! (compressed flag, big-endian length), `content-type: application/grpc`, `te: trailers`, and
//! the `grpc-status` trailer (the gRPC over HTTP/2 protocol document).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, Result, bail};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A body fed frame by frame through a channel; it ends when the sender is dropped.
pub struct ChanBody(mpsc::Receiver<Frame<Bytes>>);

impl ChanBody {
    /// A body and the sender that feeds it.
    pub fn new() -> (mpsc::Sender<Frame<Bytes>>, ChanBody) {
        let (tx, rx) = mpsc::channel(16);
        (tx, ChanBody(rx))
    }
}

impl http_body::Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut().0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// One message with its 5-byte prefix.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}

/// Takes the first complete message off the front of `buf`, if there is one.
pub fn next_message(buf: &mut BytesMut) -> Option<Bytes> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    buf.advance(5);
    Some(buf.split_to(len).freeze())
}

/// The server side of both methods: every request message is answered at once with
/// `<identity>:<message>`; when the request ends, `grpc-status: 0`.
pub fn serve(req: Request<Incoming>, identity: Arc<str>) -> Response<crate::endpoint::Body> {
    let (tx, body) = ChanBody::new();
    tokio::spawn(async move {
        let mut incoming = req.into_body();
        let mut buf = BytesMut::new();
        while let Some(Ok(got)) = incoming.frame().await {
            let Ok(data) = got.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(m) = next_message(&mut buf) {
                let mut reply = identity.as_bytes().to_vec();
                reply.push(b':');
                reply.extend_from_slice(&m);
                if tx.send(Frame::data(frame(&reply))).await.is_err() {
                    return;
                }
            }
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let _ = tx.send(Frame::trailers(trailers)).await;
    });
    let mut response = Response::new(body.boxed());
    response.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/grpc+proto"),
    );
    response
}

/// An HTTP/2 client connection (prior knowledge) to `target`.
pub async fn connect(target: std::net::SocketAddr) -> Result<http2::SendRequest<ChanBody>> {
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("connect {target}"))?;
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .context("h2 handshake")?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A call in progress: messages go out through `send`, answers come from `recv`.
pub struct Call {
    tx: Option<mpsc::Sender<Frame<Bytes>>>,
    body: Incoming,
    buf: BytesMut,
    /// Response headers.
    pub headers: HeaderMap,
}

impl Call {
    /// Starts a call of `method` (`/echo.Echo/Bidi`) on `sender`; returns once response headers
    /// arrived.
    pub async fn start(
        sender: &mut http2::SendRequest<ChanBody>,
        authority: &str,
        method: &str,
    ) -> Result<Call> {
        let (tx, body) = ChanBody::new();
        let req = Request::post(format!("http://{authority}{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(body)?;
        sender.ready().await.context("h2 connection not ready")?;
        let response = sender.send_request(req).await.context("grpc call")?;
        let (parts, body) = response.into_parts();
        if parts.status != 200 {
            bail!("grpc call {method}: HTTP status {}", parts.status);
        }
        Ok(Call {
            tx: Some(tx),
            body,
            buf: BytesMut::new(),
            headers: parts.headers,
        })
    }

    /// Sends one message.
    pub async fn send(&mut self, message: &[u8]) -> Result<()> {
        let tx = self.tx.as_ref().context("request already closed")?;
        tx.send(Frame::data(frame(message)))
            .await
            .map_err(|_| anyhow::anyhow!("request stream closed"))
    }

    /// Ends the request stream.
    pub fn close(&mut self) {
        self.tx = None;
    }

    /// The next answer; `Ok(Err(trailers))` once the response ended with trailers.
    pub async fn recv(&mut self) -> Result<std::result::Result<Bytes, HeaderMap>> {
        loop {
            if let Some(m) = next_message(&mut self.buf) {
                return Ok(Ok(m));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) => return Ok(Err(trailers)),
                        Err(_) => bail!("unexpected response frame"),
                    },
                },
                Some(Err(e)) => bail!("response stream failed: {e}"),
                None => bail!("response ended without trailers"),
            }
        }
    }
}

/// One unary call: a request message, its answer and the final `grpc-status`.
pub async fn unary(
    sender: &mut http2::SendRequest<ChanBody>,
    authority: &str,
    message: &[u8],
) -> Result<(Bytes, String)> {
    let mut call = Call::start(sender, authority, "/echo.Echo/Unary").await?;
    call.send(message).await?;
    call.close();
    let answer = match call.recv().await? {
        Ok(m) => m,
        Err(trailers) => bail!("no answer, trailers {trailers:?}"),
    };
    let status = match call.recv().await? {
        Ok(m) => bail!("a second answer {m:?}"),
        Err(trailers) => grpc_status(&trailers),
    };
    Ok((answer, status))
}

/// The `grpc-status` of `trailers` (`"missing"` without one).
pub fn grpc_status(trailers: &HeaderMap) -> String {
    trailers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing")
        .to_owned()
}
