//! Random frame sequences, well framed but meaning anything, from clients and from endpoints:
//! every client connection ends or stays responsive, every request gets an answer, an error
//! status or a reset, nothing panics, and the proxy serves on.

use std::sync::Mutex;

use super::*;

/// xorshift64: the same cases on every run, so that a failure names its case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

/// Counts the panics on this thread from now on: the tasks of the test's current-thread
/// runtime, the proxy's among them, run on it, and tokio would otherwise swallow them.
fn count_panics() -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let thread = std::thread::current().id();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == thread {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    count
}

/// A frame of any type, mostly on the streams a peer is likely to have open, with flags and
/// payloads that are sometimes right and sometimes not. `head`: a header block that makes
/// sense on this side (a request's or a response's).
fn random_frame(rng: &mut Rng, head: &[u8]) -> Vec<u8> {
    let stream = match rng.below(8) {
        0 => 0,
        1..=3 => 1,
        4 => 3,
        5 => 2,
        6 => 5,
        _ => rng.next() as u32 & 0x7fff_ffff,
    };
    let kind = rng.pick(&[
        DATA,
        HEADERS,
        HEADERS,
        PRIORITY,
        RST_STREAM,
        SETTINGS,
        PUSH_PROMISE,
        PING,
        GOAWAY,
        WINDOW_UPDATE,
        WINDOW_UPDATE,
        CONTINUATION,
        0x0a,
        0xfe,
    ]);
    let flags = match rng.below(3) {
        0 => 0,
        1 => rng.pick(&[
            END_STREAM,
            END_HEADERS,
            END_STREAM | END_HEADERS,
            PADDED | END_HEADERS,
            0x20 | END_HEADERS,
        ]),
        _ => rng.next() as u8,
    };
    let mut payload = match kind {
        HEADERS | CONTINUATION if rng.below(2) == 0 => head.to_vec(),
        SETTINGS => {
            let mut settings = Vec::new();
            for _ in 0..rng.below(4) {
                settings.extend_from_slice(&(rng.below(9) as u16).to_be_bytes());
                let value = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(100) as u32,
                    2 => rng.below(1 << 24) as u32,
                    _ => rng.next() as u32,
                };
                settings.extend_from_slice(&value.to_be_bytes());
            }
            settings
        }
        WINDOW_UPDATE => {
            let increment = match rng.below(4) {
                0 => 0,
                1 => rng.below(1 << 16) as u32,
                2 => 0x7fff_ffff,
                _ => rng.next() as u32,
            };
            increment.to_be_bytes().to_vec()
        }
        RST_STREAM => (rng.below(16) as u32).to_be_bytes().to_vec(),
        PING => rng.bytes(8),
        PRIORITY => rng.bytes(5),
        GOAWAY => {
            let mut goaway = (rng.next() as u32 & 0x7fff_ffff).to_be_bytes().to_vec();
            goaway.extend_from_slice(&(rng.below(16) as u32).to_be_bytes());
            goaway
        }
        _ => {
            let n = rng.below(48) as usize;
            rng.bytes(n)
        }
    };
    // Now and then a length one off what the type needs.
    match rng.below(12) {
        0 => payload.push(rng.next() as u8),
        1 => {
            payload.pop();
        }
        _ => {}
    }
    frame(kind, flags, stream, &payload)
}

/// A frame a well-behaved client could send next, on its streams `1..next` (a request opens
/// `next`), so that cases get past the first frames into the connection's later states.
fn plausible_frame(rng: &mut Rng, next: &mut u32, get: &[u8]) -> Vec<u8> {
    let open = 1 + 2 * (rng.below(u64::from(*next / 2).max(1)) as u32);
    match rng.below(7) {
        0 | 1 => {
            let id = *next;
            *next += 2;
            let end = if rng.below(2) == 0 { END_STREAM } else { 0 };
            frame(HEADERS, END_HEADERS | end, id, get)
        }
        2 => {
            let n = rng.below(64) as usize;
            frame(DATA, rng.pick(&[0, END_STREAM]), open, &rng.bytes(n))
        }
        3 => {
            let increment = 1 + rng.below(1 << 20) as u32;
            frame(
                WINDOW_UPDATE,
                0,
                rng.pick(&[0, open]),
                &increment.to_be_bytes(),
            )
        }
        4 => frame(PING, 0, 0, &rng.bytes(8)),
        5 => {
            let (id, value) = rng.pick(&[
                (1u16, 4096u32),
                (2, 0),
                (3, 100),
                (4, 65_535),
                (4, 0),
                (5, 16_384),
                (6, 8192),
            ]);
            let mut setting = id.to_be_bytes().to_vec();
            setting.extend_from_slice(&value.to_be_bytes());
            frame(SETTINGS, 0, 0, &setting)
        }
        _ => frame(RST_STREAM, 0, open, &(rng.below(14) as u32).to_be_bytes()),
    }
}

#[tokio::test]
async fn random_frames_from_clients_end_every_connection_and_nothing_panics() {
    let panics = count_panics();
    let b = backend("b").await;
    let _p = web_proxy("127.16.21.1", b.addr).await;
    let via = addr("127.16.21.1:8080");
    let host = "web.shop.global";
    let get = hpack(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", host),
        (":path", "/"),
    ]);
    let mut rng = Rng(0x243f_6a88_85a3_08d3);
    const CASES: usize = 300;
    let (mut answered, mut closed, mut alive) = (0, 0, 0);
    for case in 0..CASES {
        let mut wire = Frames::connect(via).await;
        let mut sent = Vec::new();
        let mut next = 1;
        for _ in 0..1 + rng.below(12) {
            // Mostly what a client could send, now and then anything.
            if rng.below(6) == 0 {
                sent.extend(random_frame(&mut rng, &get));
            } else {
                sent.extend(plausible_frame(&mut rng, &mut next, &get));
            }
        }
        // Then a PING: the proxy must either end the connection or answer it.
        sent.extend(frame(PING, 0, 0, b"fuzzping"));
        // The proxy may close the connection before it has read everything.
        let _ = wire.0.write_all(&sent).await;
        let outcome = tokio::time::timeout(Duration::from_secs(5), async {
            let mut heads = 0;
            loop {
                match read_frame(&mut wire.0).await {
                    Err(_) => return (false, heads),
                    Ok((PING, ACK, 0, payload)) if payload == b"fuzzping" => return (true, heads),
                    Ok((HEADERS, ..)) => heads += 1,
                    Ok(_) => {}
                }
            }
        })
        .await;
        let Ok((open, heads)) = outcome else {
            panic!(
                "case {case}: the connection neither ended nor answered a PING within 5 s; \
                 the client sent {sent:02x?}"
            );
        };
        if open {
            alive += 1;
        } else {
            closed += 1;
        }
        // A request the frames opened is answered after the PING: wait a little for its head.
        let mut answer = heads > 0;
        if open && !answer {
            let head = async {
                while let Ok((kind, ..)) = read_frame(&mut wire.0).await {
                    if kind == HEADERS {
                        return true;
                    }
                }
                false
            };
            answer = tokio::time::timeout(Duration::from_millis(200), head)
                .await
                .unwrap_or(false);
        }
        answered += usize::from(answer);
        assert_eq!(panics.load(Ordering::SeqCst), 0, "case {case} panicked");
    }
    // Some cases ask for a page the right way, and get it; some break the connection, some
    // do not.
    assert!(
        answered >= 10,
        "only {answered} of {CASES} cases got a response head"
    );
    assert!(
        closed >= 10 && alive >= 10,
        "closed {closed}, alive {alive}"
    );

    // The proxy serves on.
    let mut wire = Frames::connect(via).await;
    wire.get(1, host, "/").await;
    assert_eq!(wire.body(1).await, b"b");
}

#[tokio::test]
async fn random_frames_from_an_endpoint_get_answers_or_errors_and_nothing_panics() {
    let panics = count_panics();
    let rng = Arc::new(Mutex::new(Rng(0x1319_8a2e_0370_7344)));
    let answer = hpack(&[(":status", "200")]);
    let (endpoint, _) = super::wire::frame_endpoint(move |kind, _, id, _| {
        if kind != HEADERS {
            return Vec::new();
        }
        let mut rng = rng.lock().unwrap();
        let mut out = Vec::new();
        for _ in 0..1 + rng.below(6) {
            // Mostly on the request's own stream.
            let mut one = random_frame(&mut rng, &answer);
            if rng.below(3) != 0 {
                one[5..9].copy_from_slice(&id.to_be_bytes());
            }
            out.extend(one);
        }
        out
    })
    .await;
    let mut web = service(
        "web.shop.global",
        "127.16.21.2",
        8080,
        Protocol::Http2,
        &[(endpoint, local())],
    );
    web.policy = Policy {
        try_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(2),
        ..Policy::default()
    };
    // A sane endpoint behind the same proxy.
    let b = backend("b").await;
    let sane = service(
        "sane.shop.global",
        "127.16.21.3",
        8080,
        Protocol::Http2,
        &[(b.addr, local())],
    );
    let _p = proxy(vec![web, sane]).await;
    let via = addr("127.16.21.2:8080");
    let mut statuses = std::collections::BTreeMap::new();
    for case in 0..150 {
        let client = h2_client(via).await;
        let (response, _) = h2_send(&client, "/").await;
        // Every request gets the endpoint's answer, or the proxy's error status, or a reset
        // of its stream: never silence past the request timeout.
        let status = match tokio::time::timeout(Duration::from_secs(5), response).await {
            Err(_) => panic!("case {case}: no answer within 5 s"),
            Ok(Ok(response)) => response.status().as_u16(),
            Ok(Err(_)) => 0,
        };
        *statuses.entry(status).or_insert(0) += 1;
        assert_eq!(panics.load(Ordering::SeqCst), 0, "case {case} panicked");
    }
    assert!(
        statuses.keys().any(|s| *s >= 500),
        "no error status among {statuses:?}"
    );

    // The sane endpoint is still served.
    let mut wire = Frames::connect(addr("127.16.21.3:8080")).await;
    wire.get(1, "sane.shop.global", "/").await;
    assert_eq!(wire.body(1).await, b"b");
}
