//! The client-facing HTTP/2 server on the wire: what RFC 9113 calls a stream error gets a
//! RST_STREAM with the code it names and the connection serves on; a connection error gets a
//! GOAWAY with its code; pings, padding and abusive clients are handled as the RFC and h2's
//! own server do.

use super::*;

const PROTOCOL_ERROR: u32 = 0x1;
const STREAM_CLOSED: u32 = 0x5;
const FRAME_SIZE_ERROR: u32 = 0x6;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

impl Frames {
    /// Reads up to a frame of `kind` on `stream` (flags, payload), answering SETTINGS and PING
    /// meanwhile; `None` when the connection ends first.
    async fn until(&mut self, kind: u8, stream: u32) -> Option<(u8, Vec<u8>)> {
        let next = async {
            loop {
                let (k, flags, id, payload) = self.next().await?;
                if k == kind && id == stream {
                    return Some((flags, payload));
                }
                if k == GOAWAY {
                    panic!("GOAWAY code {}", code(&payload[4..]));
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the frame within 5 s")
    }

    /// The error code of the RST_STREAM the proxy sends on `stream`.
    async fn reset_code(&mut self, stream: u32) -> u32 {
        let (_, payload) = self.until(RST_STREAM, stream).await.expect("RST_STREAM");
        code(&payload)
    }

    /// The error code of the GOAWAY the proxy sends.
    async fn goaway_code(&mut self) -> u32 {
        let (_, payload) = self.until(GOAWAY, 0).await.expect("GOAWAY");
        code(&payload[4..8])
    }

    /// A response's body on `stream`: DATA frames up to END_STREAM.
    pub(super) async fn body(&mut self, stream: u32) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let (flags, payload) = self.until(DATA, stream).await.expect("DATA");
            body.extend(payload);
            if flags & END_STREAM != 0 {
                return body;
            }
        }
    }

    pub(super) async fn get(&mut self, stream: u32, authority: &str, path: &str) {
        let block = hpack(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", authority),
            (":path", path),
        ]);
        self.write(HEADERS, END_HEADERS | END_STREAM, stream, &block)
            .await;
    }
}

fn code(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[..4].try_into().unwrap())
}

/// An HPACK string or integer length with a 7-bit prefix (RFC 7541 §5.1).
fn hpack_len(mut n: usize, out: &mut Vec<u8>) {
    if n < 127 {
        out.push(n as u8);
        return;
    }
    out.push(127);
    n -= 127;
    while n >= 128 {
        out.push((n % 128 + 128) as u8);
        n /= 128;
    }
    out.push(n as u8);
}

#[tokio::test]
async fn malformed_requests_are_reset_and_the_connection_serves_on() {
    let b = backend("b").await;
    let _p = web_proxy("127.16.20.1", b.addr).await;
    let mut wire = Frames::connect(addr("127.16.20.1:8080")).await;
    let host = "web.shop.global";

    // No :path (§8.3.1).
    let block = hpack(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", host),
    ]);
    wire.write(HEADERS, END_HEADERS | END_STREAM, 1, &block)
        .await;
    assert_eq!(wire.reset_code(1).await, PROTOCOL_ERROR);
    // Fewer bytes than its content-length (§8.1.1). (Small idempotent bodies are read before
    // the endpoint is chosen: none of these reaches it.)
    let block = hpack(&[
        (":method", "PUT"),
        (":scheme", "http"),
        (":authority", host),
        (":path", "/echo"),
        ("content-length", "5"),
    ]);
    wire.write(HEADERS, END_HEADERS, 3, &block).await;
    wire.write(DATA, END_STREAM, 3, b"abc").await;
    assert_eq!(wire.reset_code(3).await, PROTOCOL_ERROR);
    // Trailers that do not end the stream (§8.1).
    let block = hpack(&[
        (":method", "PUT"),
        (":scheme", "http"),
        (":authority", host),
        (":path", "/echo"),
        ("content-length", "1"),
    ]);
    wire.write(HEADERS, END_HEADERS, 5, &block).await;
    wire.write(DATA, 0, 5, b"x").await;
    wire.write(HEADERS, END_HEADERS, 5, &hpack(&[("x-trailer", "1")]))
        .await;
    assert_eq!(wire.reset_code(5).await, PROTOCOL_ERROR);

    // The connection still serves: a good request gets the endpoint's answer.
    wire.get(9, host, "/").await;
    assert!(wire.until(HEADERS, 9).await.is_some());
    assert_eq!(wire.body(9).await, b"b");
    // A stream that is over cannot be opened again (§5.1.1).
    wire.get(3, host, "/").await;
    assert_eq!(wire.reset_code(3).await, STREAM_CLOSED);
    wire.get(11, host, "/").await;
    assert_eq!(wire.body(11).await, b"b");
    assert_eq!(
        b.state.requests(),
        2,
        "only the good requests reached the endpoint"
    );
}

#[tokio::test]
async fn connection_errors_get_a_goaway_with_the_rfc_code() {
    let b = backend("b").await;
    let _p = web_proxy("127.16.20.2", b.addr).await;
    let via = addr("127.16.20.2:8080");

    // The preface must end with SETTINGS (§3.4).
    let mut wire = Frames::bare(via).await;
    wire.write(PING, 0, 0, &[0; 8]).await;
    assert_eq!(wire.goaway_code().await, PROTOCOL_ERROR);
    // Clients open odd streams only (§5.1.1).
    let mut wire = Frames::connect(via).await;
    wire.get(2, "web.shop.global", "/").await;
    assert_eq!(wire.goaway_code().await, PROTOCOL_ERROR);
    // A WINDOW_UPDATE of nothing (§6.9).
    let mut wire = Frames::connect(via).await;
    wire.write(WINDOW_UPDATE, 0, 0, &[0; 4]).await;
    assert_eq!(wire.goaway_code().await, PROTOCOL_ERROR);
    // DATA on a stream never opened (§5.1).
    let mut wire = Frames::connect(via).await;
    wire.write(DATA, 0, 11, b"x").await;
    assert_eq!(wire.goaway_code().await, PROTOCOL_ERROR);
    // A frame larger than SETTINGS_MAX_FRAME_SIZE (§4.2).
    let mut wire = Frames::connect(via).await;
    wire.write(DATA, 0, 1, &vec![0; 20_000]).await;
    assert_eq!(wire.goaway_code().await, FRAME_SIZE_ERROR);
    // An upper-case field name (§8.2.1): h2's HPACK layer takes it for a broken header block,
    // which fails the connection (§4.3).
    let mut wire = Frames::connect(via).await;
    let block = hpack(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "web.shop.global"),
        (":path", "/"),
        ("X-Upper", "1"),
    ]);
    wire.write(HEADERS, END_HEADERS | END_STREAM, 1, &block)
        .await;
    assert_eq!(wire.goaway_code().await, PROTOCOL_ERROR);
    // Garbage where a frame should be.
    let mut wire = Frames::connect(via).await;
    wire.0.write_all(&[0xff; 64]).await.unwrap();
    let code = wire.goaway_code().await;
    assert!(code == FRAME_SIZE_ERROR || code == PROTOCOL_ERROR, "{code}");

    // Pings are answered with their payload, and the proxy serves on.
    let mut wire = Frames::connect(via).await;
    wire.write(PING, 0, 0, b"12345678").await;
    let (flags, payload) = wire.until(PING, 0).await.expect("PING ACK");
    assert_eq!((flags & ACK, &payload[..]), (ACK, &b"12345678"[..]));
    let (status, _, body) = send2(&h2(via).await, get("/")).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"b"[..]));
}

#[tokio::test]
async fn padded_request_data_counts_against_the_windows_and_comes_back() {
    // 4,300 frames of 200 bytes and 255 of padding: 1.1 MB of padding through windows of
    // 1 MiB, so the padding must be given back to the stream and the connection, or the
    // stream fails with FLOW_CONTROL_ERROR (h2's own server, before this one, did fail so).
    let b = backend("b").await;
    let _p = web_proxy("127.16.20.3", b.addr).await;
    let mut wire = Frames::connect(addr("127.16.20.3:8080")).await;
    let block = hpack(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "web.shop.global"),
        (":path", "/echo"),
    ]);
    // The echo comes back just as large: open the windows this client never updates.
    wire.write(SETTINGS, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff])
        .await;
    let more = 0x7fff_ffffu32 - 65_535;
    wire.write(WINDOW_UPDATE, 0, 0, &more.to_be_bytes()).await;
    wire.write(HEADERS, END_HEADERS, 1, &block).await;
    let mut sent = Vec::new();
    let mut frames = Vec::new();
    for i in 0..4300usize {
        let data = [b'a' + (i % 26) as u8; 200];
        sent.extend(data);
        // Pad length, data, padding.
        let mut payload = vec![255];
        payload.extend(data);
        payload.resize(1 + 200 + 255, 0);
        let flags = PADDED | if i == 4299 { END_STREAM } else { 0 };
        frames.extend(frame(DATA, flags, 1, &payload));
    }
    // The request within the proxy's windows (1 MiB each, as it advertised): one frame at a
    // time as WINDOW_UPDATEs give room.
    let credit = std::sync::Mutex::new((1i64 << 20, 1i64 << 20)); // connection, stream
    let room = Notify::new();
    let (mut read, mut write) = wire.0.split();
    let send = async {
        for chunk in frames.chunks(9 + 1 + 200 + 255) {
            let len = (chunk.len() - 9) as i64;
            loop {
                let notified = room.notified();
                {
                    let mut c = credit.lock().unwrap();
                    if c.0 >= len && c.1 >= len {
                        c.0 -= len;
                        c.1 -= len;
                        break;
                    }
                }
                notified.await;
            }
            write.write_all(chunk).await.unwrap();
        }
    };
    // Read meanwhile: the echo comes back while the request is still going.
    let mut echoed = Vec::new();
    let receive = async {
        loop {
            let (kind, flags, id, payload) = read_frame(&mut read).await.unwrap();
            match kind {
                DATA => {
                    echoed.extend(payload);
                    if flags & END_STREAM != 0 {
                        return;
                    }
                }
                WINDOW_UPDATE => {
                    let inc = i64::from(code(&payload));
                    let mut c = credit.lock().unwrap();
                    if id == 0 {
                        c.0 += inc
                    } else {
                        c.1 += inc
                    }
                    room.notify_one();
                }
                RST_STREAM => panic!("RST_STREAM code {}", code(&payload)),
                GOAWAY => panic!("GOAWAY code {}", code(&payload[4..])),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(send, receive)
    })
    .await
    .expect("echoed within 10 s");
    assert_eq!(echoed, sent);
}

#[tokio::test]
async fn a_client_that_opens_and_resets_streams_in_a_loop_is_told_to_calm_down() {
    // Rapid reset (CVE-2023-44487): each stream starts a request the client never waits for.
    let b = backend("b").await;
    let _p = web_proxy("127.16.20.4", b.addr).await;
    let mut wire = Frames::connect(addr("127.16.20.4:8080")).await;
    let block = hpack(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "web.shop.global"),
        (":path", "/delay/2000"),
    ]);
    let mut burst = Vec::new();
    for i in 0..210u32 {
        let id = 2 * i + 1;
        burst.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
    }
    wire.0.write_all(&burst).await.unwrap();
    assert_eq!(wire.goaway_code().await, ENHANCE_YOUR_CALM);
    // Other clients are served.
    let via = addr("127.16.20.4:8080");
    let c = h2(via).await;
    for _ in 0..300 {
        let (status, _, _) = send2(&c, get("/")).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn oversize_request_headers_get_431_and_never_reach_the_endpoint() {
    let b = backend("b").await;
    let _p = web_proxy("127.16.20.5", b.addr).await;
    let mut wire = Frames::connect(addr("127.16.20.5:8080")).await;
    let mut block = hpack(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "web.shop.global"),
        (":path", "/"),
    ]);
    // One 70,000-byte field: over the 64 KiB header list limit.
    block.push(0);
    hpack_len(7, &mut block);
    block.extend(b"x-large");
    hpack_len(70_000, &mut block);
    block.extend(vec![b'v'; 70_000]);
    let mut chunks = block.chunks(16_000).peekable();
    wire.write(HEADERS, 0, 1, chunks.next().unwrap()).await;
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        wire.write(CONTINUATION, flags, 1, chunk).await;
    }
    let (flags, head) = wire.until(HEADERS, 1).await.expect("HEADERS");
    assert_ne!(flags & END_STREAM, 0, "the answer is the head alone");
    // `:status: 431` is not in HPACK's static table: a literal whose value is "431", Huffman
    // coded or not (RFC 7541 §5.2, Appendix B: "4" 011010, "3" 011001, "1" 00001, then EOS ones).
    let huffman = [0x69, 0x90, 0xff];
    assert!(
        head.windows(3).any(|w| w == b"431" || w == huffman),
        "{head:?}"
    );
    assert_eq!(wire.reset_code(1).await, REFUSED_STREAM);
    assert_eq!(b.state.requests(), 0);
    // The connection serves on.
    wire.get(3, "web.shop.global", "/").await;
    assert_eq!(wire.body(3).await, b"b");
}

/// An endpoint that speaks raw frames: it answers SETTINGS and PING, and writes what
/// `answer` returns for each request head (HEADERS) it gets. Counts the heads.
async fn raw_endpoint(answer: fn(u32) -> Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    let (addr, heads, _) = raw_endpoint_closes(answer).await;
    (addr, heads)
}

/// [`raw_endpoint`], also counting the connections the proxy closed.
async fn raw_endpoint_closes(
    answer: fn(u32) -> Vec<u8>,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let heads = Arc::new(AtomicUsize::new(0));
    let seen = heads.clone();
    let (addr, closes) = frame_endpoint(move |kind, _, id, _| {
        if kind != HEADERS {
            return Vec::new();
        }
        seen.fetch_add(1, Ordering::SeqCst);
        answer(id)
    })
    .await;
    (addr, heads, closes)
}

/// An endpoint that answers SETTINGS and PING and writes what `on_frame(kind, flags, stream,
/// payload)` returns for every other frame. Counts the connections the proxy closed.
pub(super) async fn frame_endpoint<F>(on_frame: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(u8, u8, u32, Vec<u8>) -> Vec<u8> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closes = Arc::new(AtomicUsize::new(0));
    let closed = closes.clone();
    let on_frame = Arc::new(on_frame);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (on_frame, closed) = (on_frame.clone(), closed.clone());
            tokio::spawn(async move {
                let served = async {
                    let mut preface = [0u8; 24];
                    stream.read_exact(&mut preface).await?;
                    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
                    loop {
                        let (kind, flags, id, payload) = read_frame(&mut stream).await?;
                        let reply = match kind {
                            SETTINGS if flags & ACK == 0 => frame(SETTINGS, ACK, 0, &[]),
                            PING if flags & ACK == 0 => frame(PING, ACK, 0, &payload),
                            SETTINGS | PING => continue,
                            _ => on_frame(kind, flags, id, payload),
                        };
                        stream.write_all(&reply).await?;
                    }
                    #[allow(unreachable_code)]
                    Ok::<_, std::io::Error>(())
                };
                let _ = served.await;
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, closes)
}

/// A 200 answer with the body `ok`.
fn ok_answer(id: u32) -> Vec<u8> {
    let mut out = frame(HEADERS, END_HEADERS, id, &hpack(&[(":status", "200")]));
    out.extend(frame(DATA, END_STREAM, id, b"ok"));
    out
}

#[tokio::test]
async fn the_connection_to_an_endpoint_removed_from_its_service_is_closed() {
    let (gone, heads, closes) = raw_endpoint_closes(ok_answer).await;
    let (stays, _) = raw_endpoint(ok_answer).await;
    let svc = |endpoints: &[SocketAddr]| {
        let endpoints: Vec<_> = endpoints.iter().map(|&a| (a, local())).collect();
        service(
            "web.shop.global",
            "127.16.20.8",
            8080,
            Protocol::Http2,
            &endpoints,
        )
    };
    let p = proxy(vec![svc(&[gone])]).await;
    let c = h2(addr("127.16.20.8:8080")).await;
    let (status, _, body) = send2(&c, get("/")).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
    assert_eq!(heads.load(Ordering::SeqCst), 1);
    assert_eq!(
        closes.load(Ordering::SeqCst),
        0,
        "pooled while in the service"
    );
    let config = l7proxy::ProxyConfig {
        services: vec![svc(&[stays])],
    };
    assert!(p.update(config).await.is_empty());
    let (status, _, _) = send2(&c, get("/")).await;
    assert_eq!(status, 200);
    for _ in 0..100 {
        if closes.load(Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the removed endpoint's connection is still open after 2 s");
}

#[tokio::test]
async fn interim_heads_and_padded_data_from_an_endpoint_are_relayed_as_one_answer() {
    // 103 Early Hints first (RFC 8297: interim, the final head follows), then the answer
    // with padded data: the client gets the 200 and the data without the padding.
    let (endpoint, heads) = raw_endpoint(|id| {
        let mut out = frame(HEADERS, END_HEADERS, id, &hpack(&[(":status", "103")]));
        out.extend(frame(
            HEADERS,
            END_HEADERS,
            id,
            &hpack(&[(":status", "200")]),
        ));
        let mut padded = vec![3];
        padded.extend(b"hello");
        padded.extend([0; 3]);
        out.extend(frame(DATA, END_STREAM | PADDED, id, &padded));
        out
    })
    .await;
    let _p = web_proxy("127.16.20.6", endpoint).await;
    let c = h2(addr("127.16.20.6:8080")).await;
    for _ in 0..3 {
        let (status, _, body) = send2(&c, get("/")).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"hello"[..]));
    }
    assert_eq!(heads.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn streams_an_endpoint_goes_away_without_taking_are_sent_elsewhere_even_posts() {
    // RFC 9113 §6.8: streams above the GOAWAY's last stream were not processed. The nearest
    // endpoint takes none (last stream 0): every POST goes to the other one, unanswered by
    // the first, and without charging the retry budget.
    let (leaving, heads) = raw_endpoint(|_| {
        let mut payload = 0u32.to_be_bytes().to_vec();
        payload.extend(0u32.to_be_bytes()); // NO_ERROR
        frame(GOAWAY, 0, 0, &payload)
    })
    .await;
    let good = backend("good").await;
    let p = proxy(vec![service(
        "web.shop.global",
        "127.16.20.7",
        8080,
        Protocol::Http2,
        &[(leaving, local()), (good.addr, remote())],
    )])
    .await;
    let c = h2(addr("127.16.20.7:8080")).await;
    for n in 1..=3 {
        let (status, _, body) = send2(&c, req("POST", "/", empty())).await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"good"[..]));
        assert_eq!(good.state.requests(), n);
    }
    assert!(heads.load(Ordering::SeqCst) >= 1);
    assert_metrics(&p, &[r#"retries_total{service="web.shop.global"} 3"#]);
}

#[tokio::test]
async fn a_burst_of_tiny_data_frames_reaches_the_endpoint_in_few_frames() {
    // 1,000 DATA frames of 10 bytes in one write: relayed one frame each, an endpoint built
    // on h2 (hyper's) takes that for a flood of small frames and goes away.
    let seen = Arc::new(std::sync::Mutex::new((0usize, Vec::new())));
    let counts = seen.clone();
    let (endpoint, _) = frame_endpoint(move |kind, flags, id, payload| {
        if kind != DATA {
            return Vec::new();
        }
        let mut c = counts.lock().unwrap();
        c.0 += 1;
        c.1.extend(payload);
        if flags & END_STREAM == 0 {
            return Vec::new();
        }
        frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &hpack(&[(":status", "200")]),
        )
    })
    .await;
    let _p = web_proxy("127.16.20.9", endpoint).await;
    let mut wire = Frames::connect(addr("127.16.20.9:8080")).await;
    let block = hpack(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "web.shop.global"),
        (":path", "/"),
    ]);
    let mut burst = frame(HEADERS, END_HEADERS, 1, &block);
    let mut sent = Vec::new();
    for i in 0..1000usize {
        let data = [b'a' + (i % 26) as u8; 10];
        sent.extend(data);
        let flags = if i == 999 { END_STREAM } else { 0 };
        burst.extend(frame(DATA, flags, 1, &data));
    }
    wire.0.write_all(&burst).await.unwrap();
    let (flags, _) = wire.until(HEADERS, 1).await.expect("the answer");
    assert_ne!(flags & END_STREAM, 0);
    let (frames, bytes) = seen.lock().unwrap().clone();
    assert_eq!(bytes, sent, "every byte, in order");
    assert!(frames < 100, "{frames} DATA frames for 1,000");
}
