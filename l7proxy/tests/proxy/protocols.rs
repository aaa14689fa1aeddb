//! HTTP/1.1, h2c, gRPC-style streaming, upgrades and opaque TCP pass through.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Frame;
use http_body_util::BodyExt;
use l7proxy::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn http1_keep_alive_and_chunked_streaming_echo() {
    let b = backend("a").await;
    let _p = proxy(vec![service(
        "web.shop.global",
        "127.10.1.1",
        8080,
        Protocol::Http,
        &[(b.addr, local())],
    )])
    .await;
    let mut c = h1(addr("127.10.1.1:8080")).await;
    for _ in 0..10 {
        let (status, headers, body) = get1(&mut c, "/").await;
        assert_eq!(status, 200);
        assert_eq!(body, "a");
        assert_eq!(
            headers["x-host"], "web.shop.global",
            "Host passes unchanged"
        );
        assert_eq!(headers["x-version"], "HTTP/1.1");
    }
    // A chunked request body, streamed back chunk by chunk.
    let (tx, body) = channel();
    c.ready().await.unwrap();
    let response = c.send_request(request("POST", "/echo", body));
    tx.send(Frame::data(Bytes::from_static(b"chunk0;")))
        .await
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    for i in 1..5 {
        tx.send(Frame::data(Bytes::from(format!("chunk{i};"))))
            .await
            .unwrap();
    }
    drop(tx);
    let mut echoed = Vec::new();
    while let Some(frame) = body.frame().await {
        echoed.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    assert_eq!(echoed, b"chunk0;chunk1;chunk2;chunk3;chunk4;");
    // The keep-alive connection upstream was reused throughout.
    let (status, _, _) = get1(&mut c, "/").await;
    assert_eq!(status, 200);
    assert_eq!(
        b.state
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn h2c_prior_knowledge_on_an_http_port() {
    let b = backend("a").await;
    let _p = proxy(vec![service(
        "web.shop.global",
        "127.10.2.1",
        8080,
        Protocol::Http,
        &[(b.addr, local())],
    )])
    .await;
    let mut c = h2(addr("127.10.2.1:8080")).await;
    for _ in 0..5 {
        let response = c
            .send_request(request("GET", "http://web.shop.global/", empty()))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-version"], "HTTP/2.0");
        assert_eq!(response.headers()["x-host"], "web.shop.global");
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "a"
        );
    }
    // HTTP/1.1 on the same port still works.
    let mut c1 = h1(addr("127.10.2.1:8080")).await;
    assert_eq!(get1(&mut c1, "/").await.0, 200);
}

#[tokio::test]
async fn grpc_bidi_streaming_passes_through_incrementally_with_trailers() {
    let b = backend("g").await;
    let _p = proxy(vec![service(
        "grpc.shop.global",
        "127.10.3.1",
        9090,
        Protocol::Grpc,
        &[(b.addr, local())],
    )])
    .await;
    let mut c = h2(addr("127.10.3.1:9090")).await;
    let (tx, body) = channel();
    let req = Request::builder()
        .method("POST")
        .uri("http://grpc.shop.global/grpc")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let response = c.send_request(req);
    tx.send(Frame::data(Bytes::from_static(b"\0\0\0\0\x03ab0")))
        .await
        .unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, &b"\0\0\0\0\x03ab0"[..]);
    // Each message comes back before the next one is sent: nothing is buffered whole.
    for i in 1..5u8 {
        let msg = Bytes::from(vec![0, 0, 0, 0, 3, b'a', b'b', b'0' + i]);
        tx.send(Frame::data(msg.clone())).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("echo arrives while the request stream is still open")
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_data().unwrap(), msg);
    }
    drop(tx);
    let trailers = body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_trailers()
        .unwrap();
    assert_eq!(trailers["grpc-status"], "0");
}

#[tokio::test]
async fn websocket_style_upgrade_echo() {
    let b = backend("w").await;
    let _p = proxy(vec![service(
        "web.shop.global",
        "127.10.4.1",
        8080,
        Protocol::Http,
        &[(b.addr, local())],
    )])
    .await;
    let mut s = TcpStream::connect("127.10.4.1:8080").await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: web.shop.global\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for msg in [&b"hello"[..], b"\x81\x05world", b"bye"] {
        s.write_all(msg).await.unwrap();
        let mut buf = vec![0; msg.len()];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg);
    }
}

#[tokio::test]
async fn non_http_bytes_on_an_http_port_are_forwarded_as_opaque_tcp() {
    let echo = tcp_echo().await;
    let _p = proxy(vec![service(
        "db.shop.global",
        "127.10.5.1",
        8080,
        Protocol::Http,
        &[(echo, local())],
    )])
    .await;
    let mut s = TcpStream::connect("127.10.5.1:8080").await.unwrap();
    let hello = b"\x16\x03\x01\x00\x05hello\x00\xff";
    s.write_all(hello).await.unwrap();
    let mut buf = vec![0; hello.len()];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, hello);
    s.write_all(b"more").await.unwrap();
    let mut buf = [0; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"more");
}

#[tokio::test]
async fn tcp_port_forwards_and_fails_over_connect_errors() {
    let echo = tcp_echo().await;
    let _p = proxy(vec![service(
        "db.shop.global",
        "127.10.6.1",
        5432,
        Protocol::Tcp,
        &[(dead_addr(), local()), (echo, local())],
    )])
    .await;
    for i in 0..20u8 {
        let mut s = TcpStream::connect("127.10.6.1:5432").await.unwrap();
        s.write_all(&[i; 100]).await.unwrap();
        let mut buf = [0; 100];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, [i; 100]);
    }
}

/// Reads up to the end of a response head.
pub async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}
