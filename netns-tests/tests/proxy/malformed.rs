//! Garbage and malformed HTTP on the proxy's listeners: the right error status (or a closed
//! connection), no crash, and normal service afterwards.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;

use super::*;
use crate::client::{failures, get_many, tally};

const GRPC_PORT: u16 = 50051;

/// What came back on one raw connection.
#[derive(Debug)]
struct Raw {
    bytes: Vec<u8>,
    /// The proxy closed the connection (EOF or reset) within the read timeout.
    closed: bool,
}

impl Raw {
    /// The status code of the first response line, if any.
    fn status(&self) -> Option<u16> {
        let line = self.bytes.split(|&b| b == b'\n').next()?;
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        words.next().filter(|v| v.starts_with("HTTP/1."))?;
        words.next()?.parse().ok()
    }

    /// How many responses start in the bytes.
    fn responses(&self) -> usize {
        String::from_utf8_lossy(&self.bytes)
            .matches("HTTP/1.1 ")
            .count()
    }
}

/// Sends `bytes` on a new connection from `ns` to `target`, optionally half-closes, and reads
/// until the proxy closes (or 5 s pass).
fn raw(ns: &netns_tests::Netns, target: SocketAddr, bytes: Vec<u8>, half_close: bool) -> Raw {
    netns_tests::in_netns(ns, move || {
        let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        // The proxy may answer and close before reading everything: a failed write is fine.
        let _ = s.write_all(&bytes);
        if half_close {
            let _ = s.shutdown(Shutdown::Write);
        }
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break false;
                }
                Err(_) => break true,
            }
        };
        Ok(Raw { bytes: out, closed })
    })
    .join()
    .expect("raw client thread")
    .expect("raw client")
}

#[test]
fn garbage_and_malformed_http_get_errors_and_the_proxy_keeps_serving() {
    require_proxy!();
    let mut mesh = mesh_lab("pbad", |c, pod| {
        if c == EAST {
            vec![
                web(pod, &HTTP_PORTS[..1]),
                service("grpc", 50051, "grpc", pod, &[GRPC_PORT]),
            ]
        } else {
            vec![]
        }
    });
    // Declared after the lab, so dropped (stopped) before its namespaces go.
    let mut endpoints = http_endpoints(&mesh, EAST0, &HTTP_PORTS[..1]);
    let east = mesh.node(EAST0);
    let grpc_addr = SocketAddr::new(east.pod_ip.into(), GRPC_PORT);
    endpoints.push(Endpoint::start(east.pod(), Kind::Grpc, grpc_addr, "east-grpc").unwrap());
    let web_vip = wait_ready(&mesh, EAST0, WEB, 1);
    let grpc_vip = wait_ready(&mesh, EAST0, "grpc.shop.global", 1);
    let pod = mesh.node(EAST0).pod().handle();

    let header = |name: &str, len: usize| format!("{name}: {}\r\n", "a".repeat(len));
    let many: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases: Vec<(&str, String, u16)> = vec![
        ("bad version", "GET /x HTTP/9 9\r\n\r\n".into(), 400),
        ("bad request line", "GET  HTTP/1.1\r\n\r\n".into(), 400),
        ("space in header name", "GET / HTTP/1.1\r\nbad name: v\r\n\r\n".into(), 400),
        (
            "oversize header",
            format!("GET / HTTP/1.1\r\nhost: a\r\n{}\r\n", header("x-big", 70_000)),
            431,
        ),
        ("120 headers", format!("GET / HTTP/1.1\r\nhost: a\r\n{many}\r\n"), 431),
        (
            "conflicting content-length",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello"
                .into(),
            400,
        ),
        (
            "bad chunk size",
            "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                .into(),
            400,
        ),
        (
            "oversize second head",
            format!(
                "GET / HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\n{}\r\n",
                header("x-big", 70_000)
            ),
            431,
        ),
    ];
    for (what, request, want) in cases {
        let reply = raw(&pod, web_vip, request.into_bytes(), false);
        let text = String::from_utf8_lossy(&reply.bytes);
        // A pipelined second head is answered after the first request's 200.
        let last_status = text
            .rsplit("HTTP/1.1 ")
            .next()
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse::<u16>().ok());
        let got = if reply.responses() > 1 {
            last_status
        } else {
            reply.status()
        };
        assert_eq!(
            got,
            Some(want),
            "{what}: got {:?}",
            &text[..text.len().min(300)]
        );
        assert!(reply.closed, "{what}: the connection stayed open");
        assert!(running(&mut mesh, EAST0), "peerd died after: {what}");
    }

    // HTTP/1 and garbage where HTTP/2 is required; a broken HTTP/2 frame after the preface.
    let reply = raw(
        &pod,
        grpc_vip,
        b"GET / HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(),
        false,
    );
    assert_eq!(
        reply.status(),
        Some(400),
        "HTTP/1 on a grpc port: {reply:?}"
    );
    let reply = raw(
        &pod,
        grpc_vip,
        b"\x16\x03\x01\x00\xffgarbage".to_vec(),
        false,
    );
    assert!(
        reply.closed && reply.bytes.is_empty(),
        "TLS on a grpc port: {reply:?}"
    );
    let mut broken = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    broken.extend_from_slice(&[0, 0, 3, 0xff, 0, 0, 0, 0, 1, 1, 2, 3]); // unknown type, stream 1
    broken.extend_from_slice(&[0, 0, 1, 4, 0, 0, 0, 0, 0, 9]); // SETTINGS with a bad length
    let reply = raw(&pod, grpc_vip, broken, false);
    assert!(
        reply.closed,
        "a broken HTTP/2 connection stayed open: {reply:?}"
    );

    // Random bytes, many connections at once: every connection ends, the proxy stays up.
    let garbage = netns_tests::in_netns(&pod, move || {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let threads: Vec<_> = (0..8)
            .map(|t| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(t);
                let mut rng = seed;
                std::thread::spawn(move || -> Result<usize> {
                    let mut ended = 0;
                    for _ in 0..40 {
                        let mut bytes = vec![0u8; 1 + (rng % 3000) as usize];
                        for b in &mut bytes {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            *b = rng as u8;
                        }
                        let mut s =
                            std::net::TcpStream::connect_timeout(&web_vip, Duration::from_secs(5))?;
                        s.set_read_timeout(Some(Duration::from_secs(10)))?;
                        let _ = s.write_all(&bytes);
                        let _ = s.shutdown(Shutdown::Write);
                        let mut sink = Vec::new();
                        match s.read_to_end(&mut sink) {
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    ErrorKind::WouldBlock | ErrorKind::TimedOut
                                ) => {}
                            _ => ended += 1,
                        }
                    }
                    Ok(ended)
                })
            })
            .collect();
        // A new thread starts in the namespace of the thread that created it: the pod's.
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("garbage thread panicked"))?
            })
            .sum::<Result<usize>>()
    })
    .join()
    .expect("garbage thread")
    .expect("garbage connections");
    assert_eq!(garbage, 320, "connections with random bytes that ended");
    assert!(running(&mut mesh, EAST0), "peerd died after the garbage");

    let replies = get_many(&pod, web_vip, 4, 200).expect("requests afterwards");
    assert!(failures(&replies).is_empty(), "{:?}", tally(&replies));
}
