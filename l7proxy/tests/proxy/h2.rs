//! HTTP/2 with prior knowledge (h2c) from the client to the proxy and from the proxy to the
//! endpoints: retries, per-try timeouts, large bodies under flow control, multiplexing, client
//! and endpoint resets, endpoint connections going away, gRPC trailers-only answers, and heads
//! passing unchanged. Virtual IPs 127.16.x.y.
//!
//! Most endpoints are the hyper endpoints of [`crate::support`]; endpoints that must misbehave
//! in ways hyper does not script (reset a stream after some DATA, go away after N requests) run
//! on the `h2` crate ([`scripted`]), and [`Frames`] is a bare client that sees the frames on the
//! wire.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http2::SendRequest;
use l7proxy::{Policy, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::support::*;

mod fuzz;
mod wire;

const MIB: usize = 1 << 20;

/// A request to `http://web.shop.global{path}`.
fn req(method: &str, path: &str, body: TestBody) -> Request<TestBody> {
    Request::builder()
        .method(method)
        .uri(format!("http://web.shop.global{path}"))
        .body(body)
        .unwrap()
}

fn get(path: &str) -> Request<TestBody> {
    req("GET", path, empty())
}

/// A gRPC-style unary request (one empty message) to `http://grpc.shop.global{path}`.
fn grpc_request(path: &str) -> Request<TestBody> {
    Request::builder()
        .method("POST")
        .uri(format!("http://grpc.shop.global{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(&b"\0\0\0\0\0"[..]))
        .unwrap()
}

/// Sends on an HTTP/2 connection (a clone of `c`, so that callers can share it); returns status,
/// head and the whole body.
async fn send2(
    c: &SendRequest<TestBody>,
    req: Request<TestBody>,
) -> (StatusCode, HeaderMap, Bytes) {
    let (status, headers, body, _) = send2_trailers(c, req).await;
    (status, headers, body)
}

/// [`send2`], also returning the trailers.
async fn send2_trailers(
    c: &SendRequest<TestBody>,
    req: Request<TestBody>,
) -> (StatusCode, HeaderMap, Bytes, Option<HeaderMap>) {
    let response = c.clone().send_request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (parts.status, parts.headers, collected.to_bytes(), trailers)
}

/// `n` GETs of `/` at once on client connection `c`: each answered 200 with `body`.
async fn gets_at_once(c: &SendRequest<TestBody>, n: usize, body: &'static [u8]) {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let c = c.clone();
        set.spawn(async move { send2(&c, get("/")).await });
    }
    while let Some(result) = set.join_next().await {
        let (status, _, got) = result.unwrap();
        assert_eq!((status.as_u16(), &got[..]), (200, body));
    }
}

/// `n` bytes that differ with `seed`.
fn seeded(seed: u8, n: usize) -> Bytes {
    (0..n)
        .map(|i| (i % 253) as u8 ^ seed.wrapping_mul(37))
        .collect::<Vec<u8>>()
        .into()
}

/// Whether `cond` holds within `within`, checking every 5 ms.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The head without `date` (the endpoint stamps each answer with the current second).
fn without_date(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    headers.remove(http::header::DATE);
    headers
}

fn remote() -> l7proxy::Locality {
    locality("c3", "r2", "z9", "n9")
}

/// A proxy with one service, `web.shop.global` on `vip`:8080, and one local endpoint.
async fn web_shop(vip: &str, protocol: Protocol, endpoint: SocketAddr) -> l7proxy::Proxy {
    proxy(vec![service(
        "web.shop.global",
        vip,
        8080,
        protocol,
        &[(endpoint, local())],
    )])
    .await
}

#[tokio::test]
async fn five_hundreds_are_retried_for_get_but_not_for_post() {
    // The failing endpoint is the nearest, so every request tries it first.
    let bad = backend("bad").await;
    bad.state.status.store(503, Ordering::SeqCst);
    let good = backend("good").await;
    let endpoints = [(bad.addr, local()), (good.addr, remote())];
    // Two names over the same endpoints: each has its own balancer state.
    let p = proxy(vec![
        service(
            "get.shop.global",
            "127.16.1.1",
            8080,
            Protocol::Http2,
            &endpoints,
        ),
        service(
            "post.shop.global",
            "127.16.1.2",
            8080,
            Protocol::Http2,
            &endpoints,
        ),
    ])
    .await;

    // Fewer POSTs than the 5 failures in a row that eject an endpoint: each goes to `bad`.
    let c = h2(addr("127.16.1.2:8080")).await;
    for _ in 0..3 {
        let (status, headers, body) = send2(&c, req("POST", "/", full("order"))).await;
        assert_eq!((status.as_u16(), &body[..]), (503, &b"bad"[..]));
        assert_eq!(headers["x-backend"], "bad");
        assert!(
            headers.get("x-peerd-error").is_none(),
            "the endpoint's own answer passes: {headers:?}"
        );
    }
    assert_eq!(
        (bad.state.requests(), good.state.requests()),
        (3, 0),
        "no POST was retried"
    );

    let c = h2(addr("127.16.1.1:8080")).await;
    for _ in 0..3 {
        let (status, _, body) = send2(&c, get("/")).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"good"[..]));
    }
    assert_eq!(
        (bad.state.requests(), good.state.requests()),
        (6, 3),
        "every GET went to `bad` first and was retried on `good`"
    );
    assert_metrics(
        &p,
        &[
            r#"retries_total{service="get.shop.global"} 3"#,
            r#"retries_total{service="post.shop.global"} 0"#,
        ],
    );

    // Concurrent GETs on the one client connection fare the same.
    gets_at_once(&c, 20, b"good").await;
    assert_eq!(good.state.requests(), 23);
}

#[tokio::test]
async fn per_try_timeouts_are_504_alone_and_retried_on_another_endpoint() {
    let slow = backend("slow").await;
    slow.state.delay_ms.store(2000, Ordering::SeqCst);
    let fast = backend("fast").await;
    let policy = Policy {
        try_timeout: Duration::from_millis(100),
        ..Policy::default()
    };
    let mut alone = service(
        "slow.shop.global",
        "127.16.2.1",
        8080,
        Protocol::Http2,
        &[(slow.addr, local())],
    );
    alone.policy = policy.clone();
    // The slow endpoint is the nearest, so every request tries it first.
    let mut pair = service(
        "pair.shop.global",
        "127.16.2.2",
        8080,
        Protocol::Http2,
        &[(slow.addr, local()), (fast.addr, remote())],
    );
    pair.policy = policy;
    let _p = proxy(vec![alone, pair]).await;

    let c = h2(addr("127.16.2.1:8080")).await;
    let start = Instant::now();
    let (status, headers, _) = send2(&c, get("/")).await;
    assert_eq!(status, 504);
    assert_eq!(headers["x-peerd-error"], "try-timeout");
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    let tried = slow.state.requests();
    assert!(tried >= 1);
    // Every attempt that timed out was cancelled at the endpoint, not left running.
    assert!(
        eventually(Duration::from_secs(1), || slow.state.cancelled() == tried).await,
        "{} of {tried} attempts cancelled",
        slow.state.cancelled()
    );
    // A POST gets one attempt.
    let (status, headers, _) = send2(&c, req("POST", "/", full("order"))).await;
    assert_eq!(status, 504);
    assert_eq!(headers["x-peerd-error"], "try-timeout");
    assert_eq!(slow.state.requests(), tried + 1, "the POST was not retried");

    let c = h2(addr("127.16.2.2:8080")).await;
    let start = Instant::now();
    gets_at_once(&c, 10, b"fast").await;
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert!(
        slow.state.requests() > tried + 1,
        "the slow endpoint was tried first"
    );
    assert_eq!(fast.state.requests(), 10);
}

#[tokio::test]
async fn large_bodies_stream_both_ways_under_flow_control() {
    let b = backend("a").await;
    let _p = web_shop("127.16.3.1", Protocol::Http2, b.addr).await;
    let c = h2(addr("127.16.3.1:8080")).await;

    let sent = seeded(1, MIB);
    let (status, _, echoed) = send2(&c, req("POST", "/echo", full(sent.clone()))).await;
    assert_eq!(status, 200);
    assert_eq!(echoed.len(), MIB);
    assert!(echoed == sent, "the echo differs from what was sent");

    // Four at once on the same client connection, each with its own bytes.
    let mut set = JoinSet::new();
    for seed in 2..6u8 {
        let c = c.clone();
        set.spawn(async move {
            let sent = seeded(seed, MIB);
            let (status, _, echoed) = send2(&c, req("POST", "/echo", full(sent.clone()))).await;
            (seed, status, echoed == sent, echoed.len())
        });
    }
    while let Some(result) = set.join_next().await {
        let (seed, status, same, len) = result.unwrap();
        assert_eq!(status, 200);
        assert!(same, "stream {seed}: {len} bytes echoed, not the ones sent");
    }

    // 3 MiB down to a client that waits, then reads slowly: more than every flow-control window
    // on the way, so the endpoint must be held back and resumed, and nothing may be lost.
    let response = c
        .clone()
        .send_request(get(&format!("/bytes/{}", 3 * MIB)))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut body = response.into_body();
    let mut got = Vec::with_capacity(3 * MIB);
    let mut pause_at = MIB / 4;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(2), body.frame())
        .await
        .expect("the body keeps coming")
    {
        got.extend_from_slice(&frame.unwrap().into_data().unwrap());
        if got.len() >= pause_at {
            tokio::time::sleep(Duration::from_millis(20)).await;
            pause_at += MIB / 4;
        }
    }
    assert_eq!(got.len(), 3 * MIB);
    assert!(got == pattern(3 * MIB), "the body arrived altered");

    assert_eq!(send2(&c, get("/")).await.0, 200);
    assert_eq!(b.state.connections(), 1);
}

#[tokio::test]
async fn two_hundred_concurrent_streams_share_one_upstream_connection() {
    // h2c with prior knowledge on an `http` port.
    let b = backend("a").await;
    let _p = web_shop("127.16.4.1", Protocol::Http, b.addr).await;
    let c = h2(addr("127.16.4.1:8080")).await;
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..200 {
        let c = c.clone();
        set.spawn(async move { send2(&c, get("/delay/100")).await });
    }
    while let Some(result) = set.join_next().await {
        let (status, headers, body) = result.unwrap();
        assert_eq!((status.as_u16(), &body[..]), (200, &b"a"[..]));
        assert_eq!(headers["x-version"], "HTTP/2.0");
    }
    // One after the other they would take 20 s.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(b.state.requests(), 200);
    assert_eq!(
        b.state.connections(),
        1,
        "the proxy multiplexes on one connection to the endpoint"
    );
}

/// An `h2` crate client connection (it can reset streams).
async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn h2_get(path: &str) -> Request<()> {
    Request::get(format!("http://web.shop.global{path}"))
        .body(())
        .unwrap()
}

/// Opens a stream on `client` with a request without body.
async fn h2_send(
    client: &h2::client::SendRequest<Bytes>,
    path: &str,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut client = client.clone().ready().await.unwrap();
    client.send_request(h2_get(path), true).unwrap()
}

/// Status and whole body of an `h2` crate response.
async fn h2_read(response: h2::client::ResponseFuture) -> (StatusCode, Bytes) {
    let response = tokio::time::timeout(Duration::from_secs(2), response)
        .await
        .expect("the response head within 2 s")
        .unwrap();
    let status = response.status();
    let mut body = response.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    (status, got.into())
}

#[tokio::test]
async fn a_client_reset_cancels_the_upstream_request_and_spares_other_streams() {
    let b = backend("a").await;
    let _p = web_shop("127.16.5.1", Protocol::Http2, b.addr).await;
    let client = h2_client(addr("127.16.5.1:8080")).await;
    let (doomed, mut doomed_stream) = h2_send(&client, "/delay/10000").await;
    let (survivor, _survivor_stream) = h2_send(&client, "/delay/300").await;
    assert!(
        eventually(Duration::from_secs(2), || b.state.requests() == 2).await,
        "both requests reach the endpoint"
    );
    doomed_stream.send_reset(h2::Reason::CANCEL);
    assert!(
        eventually(Duration::from_secs(1), || b.state.cancelled() == 1).await,
        "the endpoint sees its request cancelled within 1 s"
    );
    assert!(doomed.await.is_err());
    // The stream in flight on the same connection, and a new one, are served.
    assert_eq!(h2_read(survivor).await, (StatusCode::OK, Bytes::from("a")));
    let (fresh, _fresh_stream) = h2_send(&client, "/").await;
    assert_eq!(h2_read(fresh).await, (StatusCode::OK, Bytes::from("a")));
    assert_eq!((b.state.requests(), b.state.cancelled()), (3, 1));

    // A client that gives up on a response (drops its future) cancels the same way.
    let c = h2(addr("127.16.5.1:8080")).await;
    let mut pending = Box::pin(c.clone().send_request(get("/delay/10000")));
    let reached = tokio::select! {
        _ = &mut pending => panic!("answered despite the delay"),
        reached = eventually(Duration::from_secs(2), || b.state.requests() == 4) => reached,
    };
    assert!(reached, "the request reaches the endpoint");
    drop(pending);
    assert!(
        eventually(Duration::from_secs(1), || b.state.cancelled() == 2).await,
        "the endpoint sees its request cancelled within 1 s"
    );
    let (status, _, body) = send2(&c, get("/")).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"a"[..]));
}

/// How a [`scripted`] endpoint ends a connection after its quota of requests.
#[derive(Debug, Clone, Copy)]
enum Close {
    /// Graceful shutdown: GOAWAY, streams already opened are still served, then the socket is
    /// closed.
    GoAway,
    /// The socket is closed without GOAWAY shortly after the last answer; streams opened
    /// meanwhile are never answered.
    Drop,
}

/// An HTTP/2 endpoint on the `h2` crate.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Streams accepted (handed to the handler), over all connections.
    requests: Arc<AtomicUsize>,
}

impl Scripted {
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Serves every stream with `handler(connection number from 1, request, respond)`, each in a
/// task of its own, on connections with `builder`'s settings; with `quota`, ends every
/// connection after that many streams.
async fn scripted<F, Fut>(
    builder: h2::server::Builder,
    quota: Option<(usize, Close)>,
    handler: F,
) -> Scripted
where
    F: Fn(usize, Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(handler);
    let (conns, reqs) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let number = conns.fetch_add(1, Ordering::SeqCst) + 1;
            let (handler, reqs, builder) = (handler.clone(), reqs.clone(), builder.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = builder.handshake(stream).await else {
                    return;
                };
                let mut served = 0;
                while let Some(Ok((request, respond))) = conn.accept().await {
                    served += 1;
                    reqs.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn((*handler)(number, request, respond));
                    match quota {
                        Some((n, Close::GoAway)) if served == n => conn.graceful_shutdown(),
                        Some((n, Close::Drop)) if served == n => {
                            // Long enough to write the answer; then the socket closes.
                            let closed = poll_fn(|cx| conn.poll_closed(cx));
                            let _ = tokio::time::timeout(Duration::from_millis(50), closed).await;
                            return;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    Scripted {
        addr,
        connections,
        requests,
    }
}

/// Answers with the request body and `x-conn: <connection number>`.
async fn echo_handler(
    number: usize,
    request: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let mut body = request.into_body();
    let mut got = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    let response = Response::builder()
        .header("x-conn", number)
        .body(())
        .unwrap();
    if let Ok(mut stream) = respond.send_response(response, false) {
        let _ = stream.send_data(Bytes::from(got), true);
    }
}

/// Sends `gets` GETs, then (after a pause) a POST, through a proxy in front of `endpoint`;
/// returns the connection number each GET and the POST landed on.
async fn connections_used(endpoint: &Scripted, vip: &str, gets: usize) -> (Vec<String>, String) {
    let _p = proxy(vec![service(
        "web.shop.global",
        vip,
        8080,
        Protocol::Http2,
        &[(endpoint.addr, local())],
    )])
    .await;
    let c = h2(SocketAddr::new(vip.parse().unwrap(), 8080)).await;
    let mut seen = Vec::new();
    for i in 0..gets {
        let (status, headers, _) = send2(&c, get("/")).await;
        assert_eq!(status, 200, "request {i}: {headers:?}");
        seen.push(headers["x-conn"].to_str().unwrap().to_owned());
    }
    assert_eq!(endpoint.requests(), gets);
    // The last connection is gone by now: a POST, which the proxy cannot retry, goes on a new
    // one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, headers, body) = send2(&c, req("POST", "/", full("order"))).await;
    assert_eq!(
        (status.as_u16(), &body[..]),
        (200, &b"order"[..]),
        "{headers:?}"
    );
    (seen, headers["x-conn"].to_str().unwrap().to_owned())
}

#[tokio::test]
async fn an_endpoint_at_its_stream_limit_gets_another_connection() {
    // The endpoint takes 4 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS): 12
    // requests at once need 3 connections, or they would wait for each other.
    let mut builder = h2::server::Builder::new();
    builder.max_concurrent_streams(4);
    let endpoint = scripted(builder, None, |number, request, respond| async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        echo_handler(number, request, respond).await;
    })
    .await;
    let p = web_shop("127.16.6.3", Protocol::Http2, endpoint.addr).await;
    let c = h2(addr("127.16.6.3:8080")).await;
    // The first connection, and the endpoint's SETTINGS, before the burst.
    let (status, headers, _) = send2(&c, get("/")).await;
    assert_eq!(
        (status.as_u16(), headers["x-conn"].to_str().unwrap()),
        (200, "1")
    );
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..12 {
        let c = c.clone();
        set.spawn(async move { send2(&c, get("/")).await });
    }
    let mut per_conn = std::collections::BTreeMap::new();
    while let Some(result) = set.join_next().await {
        let (status, headers, _) = result.unwrap();
        assert_eq!(status, 200, "{headers:?}");
        *per_conn
            .entry(headers["x-conn"].to_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    let elapsed = start.elapsed();
    // All at once: one wait of 500 ms, not three.
    assert!(elapsed < Duration::from_millis(900), "{elapsed:?}");
    assert_eq!(endpoint.connections(), 3, "{per_conn:?}");
    assert_eq!(per_conn.values().copied().collect::<Vec<_>>(), [4, 4, 4]);
    assert_eq!(endpoint.requests(), 13, "none was refused and sent again");
    assert_metrics(
        &p,
        &[r#"upstream_http2_connections{service="web.shop.global"} 3"#],
    );
    // Quiet again: requests go on the oldest connection, and the others idle.
    for _ in 0..3 {
        let (status, headers, _) = send2(&c, get("/")).await;
        assert_eq!(
            (status.as_u16(), headers["x-conn"].to_str().unwrap()),
            (200, "1")
        );
    }
    assert_eq!(endpoint.connections(), 3);
}

#[tokio::test]
async fn an_endpoint_going_away_after_each_request_is_dialed_again() {
    let endpoint = scripted(
        h2::server::Builder::new(),
        Some((1, Close::GoAway)),
        echo_handler,
    )
    .await;
    let (seen, post) = connections_used(&endpoint, "127.16.6.1", 10).await;
    // The endpoint sends GOAWAY before the answer, and a client must not open streams on a
    // connection after its GOAWAY (RFC 9113 §6.8): each request gets a connection of its own.
    let each_its_own: Vec<String> = (1..=10).map(|n| n.to_string()).collect();
    assert_eq!(seen, each_its_own);
    assert_eq!(post, "11");
}

#[tokio::test]
async fn an_endpoint_closing_its_socket_after_three_requests_is_dialed_again() {
    let endpoint = scripted(
        h2::server::Builder::new(),
        Some((3, Close::Drop)),
        echo_handler,
    )
    .await;
    let (seen, post) = connections_used(&endpoint, "127.16.6.2", 9).await;
    // A request sent as a connection closed is lost with it; the proxy retried it elsewhere.
    assert_eq!(seen, ["1", "1", "1", "2", "2", "2", "3", "3", "3"]);
    assert_eq!(post, "4");
}

#[tokio::test]
async fn grpc_trailers_only_answers_pass_unchanged_and_te_reaches_the_endpoint() {
    let b = backend("g").await;
    let via = addr("127.16.7.1:9090");
    let _p = proxy(vec![service(
        "grpc.shop.global",
        "127.16.7.1",
        9090,
        Protocol::Grpc,
        &[(b.addr, local())],
    )])
    .await;

    // The same head as straight from the endpoint; no body, no trailers.
    let direct = send2_trailers(&h2(b.addr).await, grpc_request("/grpc-status/5")).await;
    let proxied = send2_trailers(&h2(via).await, grpc_request("/grpc-status/5")).await;
    let (status, headers, body, trailers) = &proxied;
    assert_eq!(*status, 200);
    assert_eq!(headers["grpc-status"], "5");
    assert_eq!(headers["grpc-message"], "scripted%20error");
    assert_eq!(headers["content-type"], "application/grpc");
    assert!(headers.get("x-peerd-error").is_none(), "{headers:?}");
    assert!(body.is_empty(), "{body:?}");
    assert!(trailers.is_none(), "{trailers:?}");
    assert_eq!(without_date(headers), without_date(&direct.1));

    // On the wire, through the proxy as from the endpoint: one HEADERS frame ending the stream.
    for target in [b.addr, via] {
        let mut wire = Frames::connect(target).await;
        wire.post(1, "grpc.shop.global", "/grpc-status/5", b"\0\0\0\0\0")
            .await;
        let (kind, flags, _) = wire.next_on(1).await;
        assert_eq!(kind, HEADERS, "{target}: first frame of the answer");
        assert_eq!(
            flags & END_STREAM,
            END_STREAM,
            "{target}: HEADERS ends the stream (trailers-only)"
        );
    }

    // `te: trailers` reaches the endpoint.
    let (status, _, body) = send2(&h2(via).await, grpc_request("/headers")).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(text.lines().any(|l| l == "te: trailers"), "{text}");
    assert!(
        text.lines().any(|l| l == "content-type: application/grpc"),
        "{text}"
    );
}

#[tokio::test]
async fn an_endpoint_reset_mid_body_fails_only_that_client_stream() {
    let go = Arc::new(Notify::new());
    let endpoint = scripted(h2::server::Builder::new(), None, {
        let go = go.clone();
        move |_, request: Request<h2::RecvStream>, mut respond: h2::server::SendResponse<Bytes>| {
            let go = go.clone();
            async move {
                let mut stream = respond.send_response(Response::new(()), false).unwrap();
                if request.uri().path() == "/partial" {
                    stream
                        .send_data(Bytes::from_static(b"partial-"), false)
                        .unwrap();
                    go.notified().await;
                    stream.send_reset(h2::Reason::INTERNAL_ERROR);
                } else {
                    stream.send_data(Bytes::from_static(b"ok"), true).unwrap();
                }
            }
        }
    })
    .await;
    let _p = web_shop("127.16.8.1", Protocol::Http2, endpoint.addr).await;
    let c = h2(addr("127.16.8.1:8080")).await;
    let response = c.clone().send_request(get("/partial")).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut got = Vec::new();
    while got.len() < 8 {
        let frame = tokio::time::timeout(Duration::from_secs(2), body.frame())
            .await
            .expect("the first DATA arrives")
            .expect("the body goes on")
            .unwrap();
        got.extend_from_slice(&frame.into_data().unwrap());
    }
    assert_eq!(got, b"partial-");
    // Only now that the client has the DATA does the endpoint reset the stream.
    go.notify_one();
    let end = tokio::time::timeout(Duration::from_secs(2), body.frame())
        .await
        .expect("the stream ends rather than hangs");
    assert!(
        matches!(end, Some(Err(_))),
        "the stream fails rather than ends cleanly: {end:?}"
    );
    for _ in 0..3 {
        let (status, _, body) = send2(&c, get("/")).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
    }
    assert_eq!(
        endpoint.connections(),
        1,
        "a stream reset does not cost the upstream connection"
    );
}

#[tokio::test]
async fn an_endpoint_reset_before_the_head_is_retried_for_get_and_502_or_unavailable_otherwise() {
    // The resetting endpoint is the nearest, so every request tries it first.
    let resetting = scripted(
        h2::server::Builder::new(),
        None,
        |_, _, mut respond: h2::server::SendResponse<Bytes>| async move {
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
        },
    )
    .await;
    let good = backend("good").await;
    let endpoints = [(resetting.addr, local()), (good.addr, remote())];
    let _p = proxy(vec![
        service(
            "web.shop.global",
            "127.16.11.1",
            8080,
            Protocol::Http2,
            &endpoints,
        ),
        service(
            "grpc.shop.global",
            "127.16.11.2",
            9090,
            Protocol::Grpc,
            &endpoints,
        ),
    ])
    .await;
    // Fewer failures than the 5 in a row that eject an endpoint: each request tries it first.
    let c = h2(addr("127.16.11.1:8080")).await;
    let (status, headers, _) = send2(&c, req("POST", "/", full("order"))).await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-peerd-error"], "upstream-reset");
    assert_eq!(
        (resetting.requests(), good.state.requests()),
        (1, 0),
        "the POST was not retried"
    );
    let (status, _, body) = send2(&c, get("/")).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"good"[..]));
    assert_eq!((resetting.requests(), good.state.requests()), (2, 1));

    let g = h2(addr("127.16.11.2:9090")).await;
    let (status, headers, body, trailers) = send2_trailers(&g, grpc_request("/svc/Method")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["grpc-status"], "14", "UNAVAILABLE: {headers:?}");
    assert_eq!(headers["x-peerd-error"], "upstream-reset");
    assert!(body.is_empty() && trailers.is_none(), "trailers-only");
    assert_eq!((resetting.requests(), good.state.requests()), (3, 1));
}

#[tokio::test]
async fn request_and_response_heads_pass_unchanged() {
    let b = backend("a").await;
    let via = addr("127.16.9.1:8080");
    let _p = web_shop("127.16.9.1", Protocol::Http2, b.addr).await;
    let (direct, proxied) = (h2(b.addr).await, h2(via).await);
    let values: Vec<String> = (0..100).map(|i| format!("value {i}, with comma")).collect();
    let request = |authority: &str, path: &str| {
        let mut builder = Request::get(format!("http://{authority}{path}"))
            .header("x-custom", "Mixed Case; q=0.5, \"quoted\"");
        for v in &values {
            builder = builder.header("x-many", v.as_str());
        }
        builder.body(empty()).unwrap()
    };
    for (authority, path) in [
        ("web.shop.global", "/headers?q=a%20b&list=1,2,3&empty=&flag"),
        ("web.shop.global:8080", "/headers?x=%2F%3F&y=%E2%9C%93"),
    ] {
        let (status, headers, body) = send2(&proxied, request(authority, path)).await;
        assert_eq!(status, 200);
        let text = String::from_utf8(body.to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&format!("uri: {path}").as_str()), "{text}");
        assert!(
            lines.contains(&format!("authority: {authority}").as_str()),
            "{text}"
        );
        assert!(lines.contains(&"method: GET"), "{text}");
        assert!(
            lines.contains(&"x-custom: Mixed Case; q=0.5, \"quoted\""),
            "{text}"
        );
        let many: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("x-many: "))
            .collect();
        assert_eq!(many, values, "every value, in order");
        // Exactly what the endpoint sees from the same client without the proxy.
        let (_, direct_headers, direct_body) = send2(&direct, request(authority, path)).await;
        assert_eq!(text, String::from_utf8(direct_body.to_vec()).unwrap());

        let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
        assert_eq!(
            cookies,
            [
                "a=1; Path=/; HttpOnly",
                "b=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT",
                "c=3"
            ]
        );
        let multi: Vec<_> = headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two, three", "four"]);
        assert_eq!(without_date(&headers), without_date(&direct_headers));
    }
}

#[tokio::test]
async fn a_thousand_concurrent_requests_on_one_connection_all_succeed() {
    // More streams than the proxy's SETTINGS_MAX_CONCURRENT_STREAMS: hyper's client queues them.
    let b = backend("a").await;
    let _p = web_shop("127.16.10.1", Protocol::Http, b.addr).await;
    let c = h2(addr("127.16.10.1:8080")).await;
    let mut set = JoinSet::new();
    for _ in 0..1000 {
        let c = c.clone();
        set.spawn(async move { send2(&c, get("/delay/10")).await });
    }
    let mut ok = 0;
    while let Some(result) = set.join_next().await {
        let (status, _, body) = result.unwrap();
        assert_eq!((status.as_u16(), &body[..]), (200, &b"a"[..]));
        ok += 1;
    }
    assert_eq!(ok, 1000);
    assert_eq!(b.state.requests(), 1000, "none failed and was retried");
}

const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const DATA: u8 = 0x0;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const PUSH_PROMISE: u8 = 0x5;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const PADDED: u8 = 0x8;

/// A bare HTTP/2 client that sees frames as they are on the wire.
struct Frames(TcpStream);

impl Frames {
    /// Connects and sends only the preface.
    async fn bare(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        Self(stream)
    }

    /// Connects and sends the preface and empty SETTINGS.
    async fn connect(addr: SocketAddr) -> Self {
        let mut frames = Self::bare(addr).await;
        frames.write(SETTINGS, 0, 0, &[]).await;
        frames
    }

    async fn write(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        self.0
            .write_all(&frame(kind, flags, stream, payload))
            .await
            .unwrap();
    }

    /// Sends a gRPC-style POST with `body` on `stream`.
    async fn post(&mut self, stream: u32, authority: &str, path: &str, body: &[u8]) {
        let block = hpack(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", authority),
            (":path", path),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]);
        self.write(HEADERS, END_HEADERS, stream, &block).await;
        self.write(0x0, END_STREAM, stream, body).await;
    }

    /// The next frame on `stream` (kind, flags, payload), answering SETTINGS and PING meanwhile.
    async fn next_on(&mut self, stream: u32) -> (u8, u8, Vec<u8>) {
        let next = async {
            loop {
                let (kind, flags, id, payload) = self.next().await.expect("the connection open");
                if id == stream {
                    return (kind, flags, payload);
                }
                assert_ne!(kind, GOAWAY, "GOAWAY {payload:?}");
            }
        };
        tokio::time::timeout(Duration::from_secs(2), next)
            .await
            .expect("a frame on the stream within 2 s")
    }

    /// The next frame (kind, flags, stream, payload); SETTINGS and PING are acknowledged, as a
    /// client would, before they are returned (the proxy may have closed the connection
    /// already, after a GOAWAY still to be read). `None` when the connection ends.
    async fn next(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        let (kind, flags, id, payload) = read_frame(&mut self.0).await.ok()?;
        let ack = match kind {
            SETTINGS if flags & ACK == 0 => Some(frame(SETTINGS, ACK, 0, &[])),
            PING if flags & ACK == 0 => Some(frame(PING, ACK, 0, &payload)),
            _ => None,
        };
        if let Some(ack) = ack {
            let _ = self.0.write_all(&ack).await;
        }
        Some((kind, flags, id, payload))
    }
}

/// A frame as it is on the wire.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The next frame off the wire: kind, flags, stream, payload.
async fn read_frame(
    io: &mut (impl tokio::io::AsyncRead + Unpin),
) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0; len];
    io.read_exact(&mut payload).await?;
    Ok((head[3], head[4], id, payload))
}

/// An HPACK block of literal fields without indexing, new names, no Huffman (RFC 7541 §6.2.2).
fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in fields {
        assert!(name.len() < 127 && value.len() < 127);
        block.push(0);
        block.push(name.len() as u8);
        block.extend_from_slice(name.as_bytes());
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    block
}

#[tokio::test]
async fn refused_streams_go_elsewhere_whatever_the_method() {
    // RFC 9113 §8.7: a stream refused with REFUSED_STREAM was not processed, so even a POST may
    // be sent again. The refusing endpoint is the nearest: every request tries it first.
    let refusing = scripted(
        h2::server::Builder::new(),
        None,
        |_, _, mut respond: h2::server::SendResponse<Bytes>| async move {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        },
    )
    .await;
    let good = backend("good").await;
    let p = proxy(vec![service(
        "web.shop.global",
        "127.16.13.1",
        8080,
        Protocol::Http2,
        &[(refusing.addr, local()), (good.addr, remote())],
    )])
    .await;
    let c = h2(addr("127.16.13.1:8080")).await;
    let (status, _, body) = send2(&c, req("POST", "/", empty())).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"good"[..]));
    assert_eq!((refusing.requests(), good.state.requests()), (1, 1));
    let (status, _, body) = send2(&c, req("DELETE", "/", empty())).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"good"[..]));
    assert_eq!((refusing.requests(), good.state.requests()), (2, 2));
    // Free retries: the retry budget is not charged for requests that were never processed.
    assert_metrics(&p, &[r#"retries_total{service="web.shop.global"} 2"#]);
}

#[tokio::test]
async fn a_client_reset_during_a_silent_response_body_cancels_the_upstream_stream() {
    // A streaming answer (think gRPC server streaming) whose endpoint sends its head and then
    // nothing: a client that cancels must release the endpoint's stream at once.
    let cancelled = Arc::new(AtomicUsize::new(0));
    let seen = cancelled.clone();
    let endpoint = scripted(
        h2::server::Builder::new(),
        None,
        move |_, _, mut respond: h2::server::SendResponse<Bytes>| {
            let seen = seen.clone();
            async move {
                let Ok(mut stream) = respond.send_response(Response::new(()), false) else {
                    return;
                };
                let reset = poll_fn(|cx| stream.poll_reset(cx));
                if let Ok(Ok(reason)) = tokio::time::timeout(Duration::from_secs(5), reset).await {
                    assert_eq!(reason, h2::Reason::CANCEL);
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            }
        },
    )
    .await;
    let _p = web_shop("127.16.14.1", Protocol::Http2, endpoint.addr).await;
    let client = h2_client(addr("127.16.14.1:8080")).await;
    let (response, _request_stream) = h2_send(&client, "/stream").await;
    let response = tokio::time::timeout(Duration::from_secs(2), response)
        .await
        .expect("the head arrives")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // Dropping the body and the request handle cancels the stream (RST_STREAM CANCEL).
    drop(response);
    drop(_request_stream);
    assert!(
        eventually(Duration::from_secs(1), || cancelled.load(Ordering::SeqCst)
            == 1)
        .await,
        "the endpoint sees its stream cancelled within 1 s"
    );
}

/// A client connection without a stream for a second gives back its buffers, header block
/// room and stream boxes; the streams after that build them again.
#[tokio::test]
async fn a_client_connection_quiet_for_a_while_serves_streams_again() {
    let b = backend("a").await;
    let _p = web_shop("127.16.16.1", Protocol::Http2, b.addr).await;
    let c = h2(addr("127.16.16.1:8080")).await;
    for round in 0..3u8 {
        let sent = seeded(round, 256 * 1024);
        let (status, _, echoed) = send2(&c, req("POST", "/echo", full(sent.clone()))).await;
        assert_eq!(status, 200);
        assert!(
            echoed == sent,
            "round {round}: the echo differs from what was sent"
        );
        gets_at_once(&c, 8, b"a").await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    assert_eq!(b.state.connections(), 1);
}

#[tokio::test]
async fn an_idle_client_connection_is_shut_down_once_without_streams_for_the_limit() {
    let b = backend("a").await;
    let p = proxy(vec![service(
        "web.shop.global",
        "127.16.15.1",
        8080,
        Protocol::Http2,
        &[(b.addr, local())],
    )])
    .await;
    p.set_client_idle_timeout(Duration::from_millis(400));
    let stream = TcpStream::connect(addr("127.16.15.1:8080")).await.unwrap();
    let (client, conn) = h2::client::handshake(stream).await.unwrap();
    let mut conn = tokio::spawn(conn);
    // A stream longer than the limit keeps the connection open: the limit is for idleness.
    let (response, _stream) = h2_send(&client, "/delay/700").await;
    assert_eq!(h2_read(response).await, (StatusCode::OK, Bytes::from("a")));
    let last = Instant::now();
    let (response, _stream) = h2_send(&client, "/").await;
    assert_eq!(h2_read(response).await, (StatusCode::OK, Bytes::from("a")));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!conn.is_finished(), "closed before the limit");
    // Then GOAWAY, and the connection ends cleanly.
    let ended = tokio::time::timeout(Duration::from_secs(2), &mut conn).await;
    let result = ended.expect("the connection ends after the limit");
    assert!(result.unwrap().is_ok(), "a graceful shutdown, not an error");
    assert!(last.elapsed() >= Duration::from_millis(400));
    assert!(client.clone().ready().await.is_err(), "no new streams");

    // On the wire: a connection that never opens a stream gets a GOAWAY before the end.
    let mut raw = TcpStream::connect(addr("127.16.15.1:8080")).await.unwrap();
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), raw.read_to_end(&mut bytes))
        .await
        .expect("closed within 3 s")
        .unwrap();
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        types.push(bytes[at + 3]);
        at += 9 + len;
    }
    const GOAWAY: u8 = 0x7;
    assert!(types.contains(&GOAWAY), "frame types {types:?}");
}
