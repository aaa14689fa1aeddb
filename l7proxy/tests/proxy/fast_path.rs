//! The HTTP/1.1 fast path byte for byte: raw clients against scripted raw endpoints, so that
//! framing (chunked bodies with trailers, HEAD, 204, close-delimited bodies, interim responses),
//! hop-by-hop fields, pipelining, stale pooled connections and broken endpoints are seen exactly
//! as they are on the wire.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use l7proxy::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// What a scripted endpoint does after each response.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    KeepOpen,
    /// Close without saying so (a keep-alive timeout racing the next request).
    Close,
    /// Close after answering this path (a body delimited by the end of the connection).
    CloseAfter(&'static str),
}

/// A raw HTTP/1.1 endpoint on 127.0.0.1: reads each request (head and `content-length` body),
/// records it, and writes `answer(request)` verbatim.
struct Scripted {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    connections: Arc<Mutex<usize>>,
    /// Connections the proxy closed.
    closed: Arc<Mutex<usize>>,
}

async fn scripted(answer: fn(&str) -> Vec<u8>, then: Then) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(Mutex::new(0));
    let closed = Arc::new(Mutex::new(0));
    let (log, count, ended) = (requests.clone(), connections.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            let (log, ended) = (log.clone(), ended.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(request) = next_request(&mut s, &mut buf).await else {
                        *ended.lock().unwrap() += 1;
                        return;
                    };
                    log.lock().unwrap().push(request.clone());
                    let close = match then {
                        Then::KeepOpen => false,
                        Then::Close => true,
                        Then::CloseAfter(p) => path(&request) == p,
                    };
                    if s.write_all(&answer(&request)).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    Scripted {
        addr,
        requests,
        connections,
        closed,
    }
}

/// Reads one request (head and `content-length` body) from `s`, keeping extra bytes in `buf`.
async fn next_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let body = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse::<usize>().unwrap());
            if buf.len() >= end + 4 + body {
                let request: Vec<u8> = buf.drain(..end + 4 + body).collect();
                return Some(String::from_utf8_lossy(&request).into_owned());
            }
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn read_exactly(s: &mut TcpStream, n: usize) -> String {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("response in time")
        .expect("whole response");
    String::from_utf8(buf).unwrap()
}

/// A response with `body` and its `content-length`.
fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The path of a recorded request.
fn path(request: &str) -> &str {
    request.split(' ').nth(1).unwrap_or_default()
}

const CHUNKED: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                       5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-checksum: 42\r\n\r\n";

fn framing_answers(request: &str) -> Vec<u8> {
    match path(request) {
        "/chunked" => CHUNKED.into(),
        "/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n".to_vec(),
        "/empty" => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        "/hints" => {
            let mut r = b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n".to_vec();
            r.extend_from_slice(&ok("after hints"));
            r
        }
        "/until-close" => b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(),
        "/big" => ok(&big_body()),
        "/big-chunked" => {
            let mut r = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for piece in big_body().as_bytes().chunks(100_000) {
                r.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                r.extend_from_slice(piece);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\n\r\n");
            r
        }
        p => ok(p),
    }
}

/// A megabyte of varied text.
fn big_body() -> String {
    (0..100_000).map(|i| format!("{i:09}\n")).collect()
}

#[tokio::test]
async fn response_framing_passes_through_byte_for_byte() {
    let e = scripted(framing_answers, Then::CloseAfter("/until-close")).await;
    let vip = "127.15.1.1:8080";
    let _p = web_proxy("127.15.1.1", e.addr).await;
    let mut c = TcpStream::connect(vip).await.unwrap();
    let mut ask = async |method: &str, path: &str, expect: &str| {
        c.write_all(format!("{method} {path} HTTP/1.1\r\nhost: web\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert_eq!(read_exactly(&mut c, expect.len()).await, expect, "{path}");
    };
    ask("GET", "/chunked", CHUNKED).await;
    ask(
        "HEAD",
        "/head",
        "HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",
    )
    .await;
    ask("GET", "/empty", "HTTP/1.1 204 No Content\r\n\r\n").await;
    let hints = "HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n\
                 HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nafter hints";
    ask("GET", "/hints", hints).await;
    let big = String::from_utf8(framing_answers("GET /big HTTP/1.1")).unwrap();
    ask("GET", "/big", &big).await;
    let chunked = String::from_utf8(framing_answers("GET /big-chunked HTTP/1.1")).unwrap();
    ask("GET", "/big-chunked", &chunked).await;
    // All of that on one upstream connection.
    assert_eq!(*e.connections.lock().unwrap(), 1);
    // A body that ends when the endpoint closes ends the client connection too.
    ask(
        "GET",
        "/until-close",
        "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
    )
    .await;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "closed after the body");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let e = scripted(|r| ok(path(r)), Then::KeepOpen).await;
    let _p = web_proxy("127.15.2.1", e.addr).await;
    let mut c = TcpStream::connect("127.15.2.1:8080").await.unwrap();
    let mut burst = Vec::new();
    for i in 0..5 {
        burst.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nhost: web\r\n\r\n").as_bytes());
    }
    burst.extend_from_slice(b"POST /p HTTP/1.1\r\nhost: web\r\ncontent-length: 4\r\n\r\nbody");
    c.write_all(&burst).await.unwrap();
    let mut expected = String::new();
    for p in ["/0", "/1", "/2", "/3", "/4", "/p"] {
        expected.push_str(&String::from_utf8(ok(p)).unwrap());
    }
    assert_eq!(read_exactly(&mut c, expected.len()).await, expected);
    let seen = e.requests.lock().unwrap().clone();
    assert_eq!(seen.len(), 6);
    assert!(seen[5].ends_with("\r\n\r\nbody"), "{}", seen[5]);
}

#[tokio::test]
async fn hop_by_hop_fields_stay_on_their_hop() {
    let e = scripted(
        |_| {
            b"HTTP/1.1 200 OK\r\nconnection: x-resp-hop\r\nx-resp-hop: 1\r\n\
              keep-alive: timeout=5\r\nx-resp-end: 2\r\ncontent-length: 2\r\n\r\nok"
                .to_vec()
        },
        Then::KeepOpen,
    )
    .await;
    let _p = web_proxy("127.15.3.1", e.addr).await;
    let mut c = TcpStream::connect("127.15.3.1:8080").await.unwrap();
    c.write_all(
        b"GET / HTTP/1.1\r\nhost: web\r\nconnection: keep-alive, x-hop\r\nx-hop: 1\r\n\
          proxy-connection: keep-alive\r\nte: trailers\r\nx-end: 2\r\n\r\n",
    )
    .await
    .unwrap();
    let expected = "HTTP/1.1 200 OK\r\nx-resp-end: 2\r\ncontent-length: 2\r\n\r\nok";
    assert_eq!(read_exactly(&mut c, expected.len()).await, expected);
    let seen = e.requests.lock().unwrap()[0].clone();
    assert_eq!(
        seen,
        "GET / HTTP/1.1\r\nhost: web\r\nte: trailers\r\nx-end: 2\r\n\r\n"
    );
}

#[tokio::test]
async fn pooled_connections_the_endpoint_closed_are_replaced() {
    // The endpoint closes every connection after one response, without saying so.
    let e = scripted(|r| ok(path(r)), Then::Close).await;
    let _p = web_proxy("127.15.4.1", e.addr).await;
    let mut c = h1(addr("127.15.4.1:8080")).await;
    for i in 0..10 {
        let path = format!("/{i}");
        let (status, headers, body) = get1(&mut c, &path).await;
        assert_eq!(status, 200, "{headers:?}");
        assert_eq!(body, path);
        // A POST cannot be sent twice: it must find out before sending that the connection
        // is gone.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (status, headers, body) = send1(&mut c, request("POST", "/post", full("x"))).await;
        assert_eq!(status, 200, "{headers:?}");
        assert_eq!(body, "/post");
    }
    assert_eq!(e.requests.lock().unwrap().len(), 20);
}

#[tokio::test]
async fn broken_endpoint_responses_are_502_and_the_client_connection_stays() {
    let e = scripted(
        |r| match path(r) {
            "/garbage" => b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(),
            "/smuggle" => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\
                            transfer-encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            "/switch" => b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n".to_vec(),
            p => ok(p),
        },
        Then::KeepOpen,
    )
    .await;
    let mut service = service(
        "web.shop.global",
        "127.15.5.1",
        8080,
        Protocol::Http,
        &[(e.addr, local())],
    );
    // One attempt: the error is the endpoint's, not a retry's.
    service.policy.max_attempts = 1;
    let _p = proxy(vec![service]).await;
    let mut c = h1(addr("127.15.5.1:8080")).await;
    for p in ["/garbage", "/smuggle", "/switch"] {
        let (status, headers, _) = get1(&mut c, p).await;
        assert_eq!(status, 502, "{p}");
        assert_eq!(headers["x-peerd-error"], "upstream-protocol", "{p}");
        let (status, _, body) = get1(&mut c, "/fine").await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"/fine"[..]));
    }
}

#[tokio::test]
async fn requests_for_hyper_take_the_connection_over_midway() {
    let b = backend("a").await;
    let _p = web_proxy("127.15.6.1", b.addr).await;
    let mut c = TcpStream::connect("127.15.6.1:8080").await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n")
        .await
        .unwrap();
    let head = crate::protocols::read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(read_exactly(&mut c, 1).await, "a");
    // `Expect: 100-continue` is hyper's to handle; so is everything after it.
    c.write_all(
        b"PUT /echo HTTP/1.1\r\nhost: web\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\n",
    )
    .await
    .unwrap();
    let head = crate::protocols::read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");
    c.write_all(b"data").await.unwrap();
    let head = crate::protocols::read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(read_exactly(&mut c, 4).await, "data");
    c.write_all(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n")
        .await
        .unwrap();
    let head = crate::protocols::read_head(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn each_request_on_a_connection_gets_its_own_try_timeout() {
    let b = backend("a").await;
    let mut service = service(
        "web.shop.global",
        "127.15.7.1",
        8080,
        Protocol::Http,
        &[(b.addr, local())],
    );
    service.policy.try_timeout = Duration::from_millis(200);
    service.policy.max_attempts = 1;
    let _p = proxy(vec![service]).await;
    let mut c = h1(addr("127.15.7.1:8080")).await;
    for round in 0..3 {
        // Fast requests well within the limit, spread over more than one limit's time.
        for _ in 0..3 {
            let (status, _, _) = get1(&mut c, "/delay/50").await;
            assert_eq!(status, 200, "round {round}");
        }
        let started = std::time::Instant::now();
        let (status, headers, _) = get1(&mut c, "/delay/3000").await;
        let took = started.elapsed();
        assert_eq!(status, 504, "round {round}");
        assert_eq!(headers["x-peerd-error"], "try-timeout");
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_secs(2),
            "round {round}: timed out after {took:?}"
        );
    }
}

#[tokio::test]
async fn a_malformed_head_after_good_requests_is_a_400_and_a_close() {
    let e = scripted(|r| ok(path(r)), Then::KeepOpen).await;
    let _p = web_proxy("127.15.8.1", e.addr).await;
    let mut c = TcpStream::connect("127.15.8.1:8080").await.unwrap();
    c.write_all(b"GET /ok HTTP/1.1\r\nhost: web\r\n\r\nGET /x HTTP/1.1\r\nbad header\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let expected_first = String::from_utf8(ok("/ok")).unwrap();
    let rest = answer
        .strip_prefix(expected_first.as_str())
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(rest.starts_with("HTTP/1.1 400"), "{rest}");
    assert!(rest.contains("x-peerd-error: bad-request"), "{rest}");
    assert_eq!(e.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_client_that_leaves_abandons_its_attempt() {
    // `/hang` is never answered.
    let e = scripted(
        |r| match path(r) {
            "/hang" => Vec::new(),
            p => ok(p),
        },
        Then::KeepOpen,
    )
    .await;
    let _p = web_proxy("127.15.9.1", e.addr).await;
    let mut c = TcpStream::connect("127.15.9.1:8080").await.unwrap();
    c.write_all(b"GET /hang HTTP/1.1\r\nhost: web\r\n\r\n")
        .await
        .unwrap();
    while e.requests.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(c);
    // The proxy lets go of the endpoint connection at once, not after the 10 s per-try timeout.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while *e.closed.lock().unwrap() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the endpoint connection is still open"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Bytes that arrive while a request waits are the next request, not a departure.
    let b = backend("b").await;
    let _p2 = web_proxy("127.15.9.2", b.addr).await;
    let mut c = TcpStream::connect("127.15.9.2:8080").await.unwrap();
    c.write_all(b"GET /delay/300 HTTP/1.1\r\nhost: web\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.write_all(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..2 {
        let head = crate::protocols::read_head(&mut c).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(read_exactly(&mut c, 1).await, "b");
    }
    assert_eq!(b.state.requests(), 2);
}

#[tokio::test]
async fn idle_keep_alive_connections_and_silent_clients_are_closed_after_the_limit() {
    let e = scripted(|r| ok(path(r)), Then::KeepOpen).await;
    let p = web_proxy("127.15.10.1", e.addr).await;
    p.set_client_idle_timeout(Duration::from_millis(300));
    // A keep-alive connection: answered, then closed once idle for the limit.
    let mut c = TcpStream::connect("127.15.10.1:8080").await.unwrap();
    c.write_all(b"GET /a HTTP/1.1\r\nhost: web\r\n\r\n")
        .await
        .unwrap();
    let answered = read_exactly(&mut c, ok("/a").len()).await;
    assert_eq!(answered.as_bytes(), ok("/a"));
    let idle_from = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut rest))
        .await
        .expect("closed within 3 s")
        .unwrap();
    assert!(rest.is_empty(), "nothing more: {rest:?}");
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_millis(250), "closed after {idle:?}");
    // A client that connects and sends nothing is closed after the limit too.
    let mut silent = TcpStream::connect("127.15.10.1:8080").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), silent.read_to_end(&mut rest))
        .await
        .expect("closed within 3 s")
        .unwrap();
    assert!(rest.is_empty());
}
