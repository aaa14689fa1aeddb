//! Real servers and clients for the component tests: hyper endpoints with scripted behaviour,
//! a TCP echo server, HTTP/1.1 and HTTP/2 clients, and configuration builders.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use l7proxy::{
    Backend, Locality, Policy, Protocol, Proxy, ProxyConfig, ServicePort, ServiceRoute, TcpDialer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The client body type.
pub type TestBody = BoxBody<Bytes, Infallible>;

/// What a test endpoint saw.
#[derive(Debug, Default)]
pub struct BackendState {
    pub id: String,
    /// Status for plain requests (default 200).
    pub status: AtomicU16,
    pub requests: AtomicUsize,
    pub connections: AtomicUsize,
    /// Requests whose handler was dropped before it produced the response head (the client,
    /// or the proxy on its behalf, cancelled the request).
    pub cancelled: AtomicUsize,
    /// Milliseconds to wait before answering any request (default 0).
    pub delay_ms: AtomicU64,
}

impl BackendState {
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// Counts a handler dropped before it completed in [`BackendState::cancelled`].
struct CancelGuard {
    state: Arc<BackendState>,
    done: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            self.state.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A hyper endpoint (HTTP/1.1 and h2c) on 127.0.0.1. Paths: `/echo` streams the body back,
/// `/grpc` echoes gRPC-style (frames back as they come, then `grpc-status: 0` trailers), `/ws`
/// upgrades and echoes bytes, `/status/N` answers N, `/delay/MS` waits, `/bytes/N` answers N
/// bytes of [`pattern`], `/grpc-status/N` answers gRPC trailers-only (`grpc-status: N` in the
/// head, no body), `/headers` lists the request head in its body (see [`echo_head`]) and answers
/// with several `set-cookie` and `x-multi` fields; anything else answers the backend's id with
/// its configured status. Every answer waits for the backend's `delay_ms` first.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub state: Arc<BackendState>,
}

pub async fn backend(id: &str) -> TestBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(BackendState {
        id: id.to_owned(),
        status: AtomicU16::new(200),
        ..Default::default()
    });
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            st.connections.fetch_add(1, Ordering::SeqCst);
            let st = st.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let st = st.clone();
                    async move {
                        let mut guard = CancelGuard {
                            state: st.clone(),
                            done: false,
                        };
                        let response = handle(st, req).await;
                        guard.done = true;
                        response
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestBackend { addr, state }
}

type ServerBody = BoxBody<Bytes, hyper::Error>;

fn full_server(bytes: impl Into<Bytes>) -> ServerBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

async fn handle(
    state: Arc<BackendState>,
    mut req: Request<Incoming>,
) -> Result<Response<ServerBody>, Infallible> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let path = req.uri().path().to_owned();
    let version = format!("{:?}", req.version());
    let host = req
        .headers()
        .get(http::header::HOST)
        .map(|h| h.to_str().unwrap_or("").to_owned())
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let mut response = if path == "/echo" {
        Response::new(req.into_body().boxed())
    } else if path == "/grpc" {
        let mut r = Response::new(
            GrpcEcho {
                inner: req.into_body(),
                done: false,
            }
            .boxed(),
        );
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        r
    } else if path == "/ws" {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(full_server(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("connection", HeaderValue::from_static("upgrade"));
        r.headers_mut()
            .insert("upgrade", HeaderValue::from_static("websocket"));
        r
    } else if let Some(code) = path.strip_prefix("/status/") {
        let mut r = Response::new(full_server(state.id.clone()));
        *r.status_mut() = code.parse().unwrap_or(StatusCode::OK);
        r
    } else if let Some(ms) = path.strip_prefix("/delay/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        Response::new(full_server(state.id.clone()))
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let body = Pattern {
            left: n.parse().unwrap_or(0),
            offset: 0,
        };
        Response::new(body.boxed())
    } else if let Some(code) = path.strip_prefix("/grpc-status/") {
        // Empty and known to be: hyper sends END_STREAM on the HEADERS frame.
        let mut r = Response::new(full_server(Bytes::new()));
        let headers = r.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert(
            "grpc-status",
            HeaderValue::from_str(code).unwrap_or(HeaderValue::from_static("2")),
        );
        headers.insert("grpc-message", HeaderValue::from_static("scripted%20error"));
        r
    } else if path == "/headers" {
        let mut r = Response::new(full_server(echo_head(&req)));
        let headers = r.headers_mut();
        for cookie in [
            "a=1; Path=/; HttpOnly",
            "b=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
            "c=3",
        ] {
            headers.append("set-cookie", HeaderValue::from_static(cookie));
        }
        for value in ["one", "two, three", "four"] {
            headers.append("x-multi", HeaderValue::from_static(value));
        }
        r
    } else {
        let mut r = Response::new(full_server(state.id.clone()));
        *r.status_mut() = StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap();
        r
    };
    let headers = response.headers_mut();
    headers.insert("x-backend", HeaderValue::from_str(&state.id).unwrap());
    headers.insert("x-version", HeaderValue::from_str(&version).unwrap());
    headers.insert("x-host", HeaderValue::from_str(&host).unwrap());
    Ok(response)
}

/// The request head as text, one field a line: `method: M`, `uri: PATH?QUERY`, `authority: A`
/// (empty when the URI has none), `version: V`, then `NAME: VALUE` for every field in order
/// (values lossily decoded as UTF-8).
pub fn echo_head<B>(req: &Request<B>) -> String {
    let mut text = format!(
        "method: {}\nuri: {}\nauthority: {}\nversion: {:?}\n",
        req.method(),
        req.uri().path_and_query().map_or("", |pq| pq.as_str()),
        req.uri().authority().map_or("", |a| a.as_str()),
        req.version(),
    );
    for (name, value) in req.headers() {
        text.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    text
}

/// Byte `i` of the bodies `/bytes/N` answers.
pub fn pattern_byte(i: usize) -> u8 {
    (i.wrapping_mul(31).wrapping_add(i >> 13) % 251) as u8
}

/// The first `n` bytes of the `/bytes/N` bodies.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(pattern_byte).collect()
}

/// A `/bytes/N` body: [`pattern`] in 16 KiB frames.
struct Pattern {
    left: usize,
    offset: usize,
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(16 * 1024);
        let chunk: Vec<u8> = (self.offset..self.offset + n).map(pattern_byte).collect();
        self.left -= n;
        self.offset += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left as u64)
    }
}

/// Echoes data frames as they arrive, then ends with `grpc-status: 0` trailers.
struct GrpcEcho {
    inner: Incoming,
    done: bool,
}

impl Body for GrpcEcho {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) if frame.is_data() => Poll::Ready(Some(Ok(frame))),
            Some(Ok(_)) | None => {
                self.done = true;
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }
}

/// A TCP echo server on 127.0.0.1.
pub async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// An address nothing listens on (connections are refused).
pub fn dead_addr() -> SocketAddr {
    "127.66.0.1:1".parse().unwrap()
}

pub async fn h1(addr: SocketAddr) -> http1::SendRequest<TestBody> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
}

pub async fn h2(addr: SocketAddr) -> http2::SendRequest<TestBody> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

pub fn empty() -> TestBody {
    Empty::new().boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed()
}

/// A body the test feeds frame by frame.
pub fn channel() -> (mpsc::Sender<Frame<Bytes>>, TestBody) {
    let (tx, rx) = mpsc::channel(16);
    (tx, ChannelBody(rx).boxed())
}

struct ChannelBody(mpsc::Receiver<Frame<Bytes>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

/// A request with a `Host` header.
pub fn request(method: &str, uri: &str, body: TestBody) -> Request<TestBody> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "web.shop.global")
        .body(body)
        .unwrap()
}

/// Sends on an HTTP/1.1 connection; returns status, headers and the whole body.
pub async fn send1(
    client: &mut http1::SendRequest<TestBody>,
    req: Request<TestBody>,
) -> (StatusCode, HeaderMap, Bytes) {
    client.ready().await.unwrap();
    let response = client.send_request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

pub async fn get1(
    client: &mut http1::SendRequest<TestBody>,
    path: &str,
) -> (StatusCode, HeaderMap, Bytes) {
    send1(client, request("GET", path, empty())).await
}

/// The proxy's own locality in every test.
pub fn local() -> Locality {
    locality("c1", "r1", "z1", "n1")
}

pub fn locality(cluster: &str, region: &str, zone: &str, node: &str) -> Locality {
    Locality {
        cluster: cluster.into(),
        region: region.into(),
        zone: zone.into(),
        node: node.into(),
    }
}

/// A service with one port named `p` on `vip:port`.
pub fn service(
    name: &str,
    vip: &str,
    port: u16,
    protocol: Protocol,
    endpoints: &[(SocketAddr, Locality)],
) -> ServiceRoute {
    ServiceRoute {
        name: name.into(),
        vip: vip.parse::<IpAddr>().unwrap(),
        ports: vec![ServicePort {
            name: "p".into(),
            port,
            protocol,
        }],
        endpoints: endpoints
            .iter()
            .map(|(addr, locality)| Backend {
                address: addr.ip(),
                ports: vec![("p".into(), addr.port())],
                locality: locality.clone(),
                ready: true,
            })
            .collect(),
        policy: Policy::default(),
    }
}

/// A proxy serving `web.shop.global` over HTTP on `vip:8080` with one local endpoint.
pub async fn web_proxy(vip: &str, endpoint: SocketAddr) -> Proxy {
    proxy(vec![service(
        "web.shop.global",
        vip,
        8080,
        Protocol::Http,
        &[(endpoint, local())],
    )])
    .await
}

/// A proxy at [`local`] serving `services`.
pub async fn proxy(services: Vec<ServiceRoute>) -> Proxy {
    let proxy = Proxy::new(local(), Arc::new(TcpDialer));
    let failures = proxy.update(ProxyConfig { services }).await;
    assert!(failures.is_empty(), "{failures:?}");
    proxy
}

/// The proxy's metrics in Prometheus' text format.
pub fn metrics_text(p: &Proxy) -> String {
    let mut text = String::new();
    p.encode_metrics(&mut text);
    text
}

/// Asserts that the proxy's metrics contain every one of `lines` (whole samples, or their
/// beginnings).
pub fn assert_metrics(p: &Proxy, lines: &[&str]) {
    let text = metrics_text(p);
    for line in lines {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}
