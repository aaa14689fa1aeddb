//! gRPC (unary and bidirectional streaming), opaque TCP and WebSocket through the proxy, each
//! to an endpoint in the other cluster.

use std::io::{Read, Write};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::endpoint::block_in;
use crate::grpc::{Call, grpc_status, unary};
use crate::ws;

const GRPC_PORT: u16 = 50051;
const ECHO_PORT: u16 = 7000;

/// east-0 exports `web.shop` (one endpoint); west-0 exports `web.shop`, `grpc.shop` (grpc) and
/// `echo.shop` (tcp), one endpoint each.
struct Protocols {
    _endpoints: Vec<Endpoint>,
    mesh: MeshLab,
}

fn protocols_lab() -> Protocols {
    let mesh = mesh_lab("ppro", |c, pod| {
        let mut services = vec![web(pod, &HTTP_PORTS[..1])];
        if c == WEST {
            services.push(service("grpc", 50051, "grpc", pod, &[GRPC_PORT]));
            services.push(service("echo", 7000, "tcp", pod, &[ECHO_PORT]));
        }
        services
    });
    let mut endpoints = http_endpoints(&mesh, EAST0, &HTTP_PORTS[..1]);
    endpoints.extend(http_endpoints(&mesh, WEST0, &HTTP_PORTS[..1]));
    let west = mesh.node(WEST0);
    for (kind, port, id) in [
        (Kind::Grpc, GRPC_PORT, "west-grpc"),
        (Kind::TcpEcho, ECHO_PORT, "west-echo"),
    ] {
        let addr = SocketAddr::new(west.pod_ip.into(), port);
        endpoints.push(Endpoint::start(west.pod(), kind, addr, id).expect("endpoint starts"));
    }
    Protocols {
        _endpoints: endpoints,
        mesh,
    }
}

#[test]
fn grpc_tcp_and_websocket_cross_clusters() {
    require_proxy!();
    let lab = protocols_lab();
    let mesh = &lab.mesh;
    let pod = mesh.node(EAST0).pod();
    let grpc_vip = wait_ready(mesh, EAST0, "grpc.shop.global", 1);
    let echo_vip = wait_ready(mesh, EAST0, "echo.shop.global", 1);
    // The pinned name lists east-0's endpoint too (ready, but out of its scope).
    let ws_vip = wait_ready(mesh, EAST0, "west.web.shop.global", 2);

    block_in(pod, move || grpc_calls(grpc_vip)).unwrap_or_else(|e| panic!("gRPC: {e:#}"));
    tcp_echo(pod, echo_vip).unwrap_or_else(|e| panic!("TCP echo: {e:#}"));
    block_in(pod, move || websocket(ws_vip)).unwrap_or_else(|e| panic!("WebSocket: {e:#}"));
}

/// Unary calls, concurrent and in sequence, then a bidirectional stream in lock step: each
/// message is answered before the next is sent, so the proxy must stream both ways.
async fn grpc_calls(vip: SocketAddr) -> Result<()> {
    let authority = "grpc.shop.global";
    let mut sender = grpc::connect(vip).await?;
    for i in 0..20 {
        let message = format!("unary {i}");
        let (answer, status) = unary(&mut sender, authority, message.as_bytes()).await?;
        anyhow::ensure!(
            answer == format!("west-grpc:{message}").as_bytes() && status == "0",
            "unary {i}: answer {answer:?}, grpc-status {status}"
        );
    }
    let calls: Vec<_> = (0..16)
        .map(|i| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                unary(&mut sender, authority, format!("concurrent {i}").as_bytes()).await
            })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let (answer, status) = call.await??;
        anyhow::ensure!(
            answer == format!("west-grpc:concurrent {i}").as_bytes() && status == "0",
            "concurrent {i}: {answer:?} {status}"
        );
    }

    let mut call = Call::start(&mut sender, authority, "/echo.Echo/Bidi").await?;
    anyhow::ensure!(
        call.headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")),
        "bidi response headers {:?}",
        call.headers
    );
    for i in 0..10 {
        let message = format!("ping {i} {}", "x".repeat(i * 1000));
        call.send(message.as_bytes()).await?;
        let answer = tokio::time::timeout(Duration::from_secs(5), call.recv())
            .await
            .context("no streamed answer within 5 s")??;
        match answer {
            Ok(m) => anyhow::ensure!(
                m == format!("west-grpc:{message}").as_bytes(),
                "bidi message {i}: {:?}",
                String::from_utf8_lossy(&m[..m.len().min(40)])
            ),
            Err(trailers) => anyhow::bail!("stream ended early: {trailers:?}"),
        }
    }
    call.close();
    match call.recv().await? {
        Ok(m) => anyhow::bail!("an answer after the last: {m:?}"),
        Err(trailers) => {
            anyhow::ensure!(grpc_status(&trailers) == "0", "bidi trailers {trailers:?}")
        }
    }
    Ok(())
}

/// 1 MiB through the opaque TCP port, after the endpoint's greeting line.
fn tcp_echo(pod: &netns_tests::Netns, vip: SocketAddr) -> Result<()> {
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 + i / 251) as u8).collect();
    let echoed = netns_tests::in_netns(pod, move || {
        let mut stream = std::net::TcpStream::connect_timeout(&vip, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = stream.try_clone()?;
        let sent = data.clone();
        let writer = std::thread::spawn(move || -> std::io::Result<()> {
            stream.write_all(&sent)?;
            stream.shutdown(std::net::Shutdown::Write)
        });
        let mut got = Vec::new();
        reader.read_to_end(&mut got)?;
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))??;
        Ok((got, data))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("client panicked"))??;
    let (got, data) = echoed;
    let greeting = b"west-echo\n";
    anyhow::ensure!(
        got.starts_with(greeting),
        "greeting {:?}",
        String::from_utf8_lossy(&got[..got.len().min(20)])
    );
    anyhow::ensure!(
        got[greeting.len()..] == data[..],
        "echo of {} bytes came back as {} bytes, different",
        data.len(),
        got.len() - greeting.len()
    );
    Ok(())
}

/// A WebSocket handshake on `west.web.shop.global` and an echo of text and binary frames of
/// every length encoding.
async fn websocket(vip: SocketAddr) -> Result<()> {
    let mut stream = TcpStream::connect(vip).await?;
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let request = format!(
        "GET /chat HTTP/1.1\r\nHost: west.web.shop.global\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = stream.read_u8().await.context("response head")?;
        head.push(b);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    anyhow::ensure!(
        head.starts_with("http/1.1 101")
            // The RFC 6455 §1.3 example: this key must give this accept value.
            && head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=")
            && head.contains("x-endpoint: west-1"),
        "handshake answer: {head}"
    );
    let mask = Some([0x37, 0xfa, 0x21, 0x3d]);
    for (opcode, len) in [(ws::TEXT, 5), (ws::BINARY, 300), (ws::BINARY, 70_000)] {
        let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        ws::write_frame(&mut stream, opcode, &payload, mask).await?;
        let (got_op, got) =
            tokio::time::timeout(Duration::from_secs(5), ws::read_frame(&mut stream))
                .await
                .context("no echo within 5 s")??;
        anyhow::ensure!(
            got_op == opcode && got == payload,
            "echo of a {len}-byte frame: opcode {got_op}, {} bytes",
            got.len()
        );
    }
    ws::write_frame(&mut stream, ws::CLOSE, &[0x03, 0xe8], mask).await?;
    let (op, _) = ws::read_frame(&mut stream).await?;
    anyhow::ensure!(op == ws::CLOSE, "close answered with opcode {op}");
    Ok(())
}
