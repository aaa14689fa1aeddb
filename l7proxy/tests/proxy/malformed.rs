//! Bad input gets the proxy's error responses (or a reset) and the proxy keeps serving.

use std::time::Duration;

use l7proxy::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocols::read_head;
use crate::support::*;

async fn exchange(vip: &str, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(vip).await.unwrap();
    s.write_all(bytes).await.unwrap();
    // Half-close, so that the proxy sees the end of what the client has to say.
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn still_serves(vip: &str) {
    let mut c = h1(addr(vip)).await;
    let (status, _, body) = get1(&mut c, "/").await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"a"[..]));
}

#[tokio::test]
async fn oversize_headers_get_431_and_bad_request_lines_400() {
    let a = backend("a").await;
    let vip = "127.13.1.1:8080";
    let _p = proxy(vec![service(
        "web.shop.global",
        "127.13.1.1",
        8080,
        Protocol::Http,
        &[(a.addr, local())],
    )])
    .await;

    // 100 KiB of headers in two fields.
    let mut big = b"GET / HTTP/1.1\r\nHost: web\r\n".to_vec();
    for name in ["x-a", "x-b"] {
        big.extend_from_slice(format!("{name}: {}\r\n", "v".repeat(50 * 1024)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let answer = exchange(vip, &big).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(
        answer.contains("x-peerd-error: headers-too-large"),
        "{answer}"
    );

    // Too many header fields is the same error.
    let mut many = b"GET / HTTP/1.1\r\nHost: web\r\n".to_vec();
    for i in 0..1000 {
        many.extend_from_slice(format!("x-h{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(exchange(vip, &many).await.starts_with("HTTP/1.1 431"));

    for bad in [
        &b"GET /x HTTP/1.1 extra\r\nHost: web\r\n\r\n"[..],
        b"GET /x HTCPCP/1.0\r\n\r\n",
        b"GET /a b c\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
    ] {
        let answer = exchange(vip, bad).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("x-peerd-error: bad-request"), "{answer}");
    }
    still_serves(vip).await;

    // On a keep-alive connection after a good request, hyper checks heads with the same limit.
    let mut s = TcpStream::connect(vip).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut rest = [0u8; 1];
    s.read_exact(&mut rest).await.unwrap();
    s.write_all(&big).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    still_serves(vip).await;
}

#[tokio::test]
async fn garbage_never_stops_the_proxy() {
    let a = backend("a").await;
    let _p = proxy(vec![
        service(
            "web.shop.global",
            "127.13.2.1",
            8080,
            Protocol::Http,
            &[(a.addr, local())],
        ),
        service(
            "grpc.shop.global",
            "127.13.2.2",
            9090,
            Protocol::Grpc,
            &[(a.addr, local())],
        ),
    ])
    .await;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..50 {
        let len = 1 + (round * 37) % 300;
        let garbage: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        for vip in ["127.13.2.1:8080", "127.13.2.2:9090"] {
            let _ = exchange(vip, &garbage).await;
        }
    }
    // Half an HTTP/2 preface, a lone request line, an HTTP/1 request on the HTTP/2 port.
    let _ = exchange("127.13.2.1:8080", b"PRI * HTTP/2.0\r\n").await;
    let _ = exchange("127.13.2.1:8080", b"GET").await;
    let answer = exchange("127.13.2.2:9090", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    still_serves("127.13.2.1:8080").await;
    let mut c = h2(addr("127.13.2.2:9090")).await;
    let response = c
        .send_request(request("GET", "http://grpc.shop.global/", empty()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_malformed_request_body_is_the_clients_400_not_the_endpoints_fault() {
    let a = backend("a").await;
    let vip = "127.13.3.1:8080";
    let p = proxy(vec![service(
        "web.shop.global",
        "127.13.3.1",
        8080,
        Protocol::Http,
        &[(a.addr, local())],
    )])
    .await;
    // A streamed (not idempotent) body whose chunk size is not hex.
    for _ in 0..10 {
        let answer = exchange(
            vip,
            b"POST /echo HTTP/1.1\r\nHost: web\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("x-peerd-error: request-body"), "{answer}");
    }
    // The endpoint was not blamed: not ejected, no retries.
    let explained = p.explain("web.shop.global").unwrap();
    let endpoint = &explained.ports[0].endpoints[0];
    assert_eq!(endpoint.ejected_for_ms, None, "{endpoint:?}");
    assert_metrics(&p, &[r#"retries_total{service="web.shop.global"} 0"#]);
    still_serves(vip).await;
}
