//! The userspace data plane end to end, in one process on loopback UDP: two `Netstack`s whose
//! nodes are each other's peer. No TUN, no routes, no privilege.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use overlay::netstack::{Netstack, forward};
use overlay::node::Inbound;
use overlay::udp::UdpIo;
use overlay::{Node, PeerConfig, PrivateKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A: &str = "10.77.0.1";
const B: &str = "10.77.0.2";
/// Generous bound for any one step; a healthy run takes milliseconds.
const STEP: Duration = Duration::from_secs(30);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Two nodes that know each other: A (10.77.0.1, fd77::1) and B (10.77.0.2, fd77::2); A knows
/// where B is.
fn pair() -> (Netstack, Netstack) {
    let now = Instant::now();
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (pa, pb) = (ka.public_key(), kb.public_key());
    let (ua, ub) = (UdpIo::bind(0).unwrap(), UdpIo::bind(0).unwrap());
    let port_b = ub.local_addr().unwrap().port();
    let mut na = Node::new(ka, now);
    let mut to_b = PeerConfig::new(pb);
    to_b.endpoint = Some(addr(&format!("127.0.0.1:{port_b}")));
    to_b.allowed_ips = vec![
        "10.77.0.2/32".parse().unwrap(),
        "fd77::2/128".parse().unwrap(),
    ];
    na.upsert_peer(to_b, now).unwrap();
    let mut nb = Node::new(kb, now);
    // B learns A's endpoint from A's handshake (roaming), so only A initiates: when both
    // initiate at once, only boringtun's retry timer settles who wins, and under the
    // `mock-time` feature that timer never fires.
    let mut to_a = PeerConfig::new(pa);
    to_a.allowed_ips = vec![
        "10.77.0.1/32".parse().unwrap(),
        "fd77::1/128".parse().unwrap(),
    ];
    nb.upsert_peer(to_a, now).unwrap();
    let start = |node: Node, udp: UdpIo, v4: &str, v6: &str| {
        let addresses = vec![
            format!("{v4}/24").parse().unwrap(),
            format!("{v6}/64").parse().unwrap(),
        ];
        Netstack::start(Arc::new(Mutex::new(node)), udp, addresses, 1420, None).unwrap()
    };
    (start(na, ua, A, "fd77::1"), start(nb, ub, B, "fd77::2"))
}

/// Deterministic, incompressible-looking bytes.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// FNV-1a, fed in whatever chunks arrive.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn of(bytes: &[u8]) -> u64 {
        let mut h = Self::new();
        h.update(bytes);
        h.0
    }
}

/// Reads to EOF, returning the byte count and hash.
async fn drain(mut r: impl AsyncReadExt + Unpin) -> io::Result<(usize, u64)> {
    let mut buf = vec![0u8; 64 << 10];
    let (mut n, mut h) = (0, Fnv::new());
    loop {
        let got = r.read(&mut buf).await?;
        if got == 0 {
            return Ok((n, h.0));
        }
        n += got;
        h.update(&buf[..got]);
    }
}

/// Spawns an echo server on `stack` at `local`; returns once it listens.
async fn echo_server(stack: &Netstack, local: SocketAddr) {
    let listener = stack.listen(local).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = conn.shutdown().await;
            });
        }
    });
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f).await.expect("step timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_ipv4_and_ipv6() {
    let (a, b) = pair();
    echo_server(&b, addr("0.0.0.0:7")).await;
    for remote in [format!("{B}:7"), "[fd77::2]:7".to_owned()] {
        let mut conn = within(a.connect(addr(&remote))).await.unwrap();
        assert_eq!(conn.peer_addr(), addr(&remote));
        assert_eq!(conn.local_addr().ip().is_ipv4(), conn.peer_addr().is_ipv4());
        conn.write_all(b"hello through the tunnel").await.unwrap();
        let mut got = [0u8; 24];
        within(conn.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"hello through the tunnel");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_megabytes_each_way_arrive_intact() {
    const LEN: usize = 20 << 20;
    let (a, b) = pair();
    let listener = b.listen(addr(&format!("{B}:9000"))).await.unwrap();
    let server = tokio::spawn(async move {
        let (conn, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), addr(&format!("{A}:1")).ip());
        let (r, mut w) = tokio::io::split(conn);
        let data = pattern(2, LEN);
        let send = async move {
            w.write_all(&data).await?;
            w.shutdown().await
        };
        let (sent, got) = tokio::join!(send, drain(r));
        sent.unwrap();
        got.unwrap()
    });
    let conn = within(a.connect(addr(&format!("{B}:9000")))).await.unwrap();
    let (r, mut w) = tokio::io::split(conn);
    let data = pattern(1, LEN);
    let expect_at_b = Fnv::of(&data);
    let send = async move {
        w.write_all(&data).await?;
        w.shutdown().await
    };
    let (sent, at_a) = within(async { tokio::join!(send, drain(r)) }).await;
    sent.unwrap();
    assert_eq!(at_a.unwrap(), (LEN, Fnv::of(&pattern(2, LEN))), "B → A");
    assert_eq!(within(server).await.unwrap(), (LEN, expect_at_b), "A → B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_connections_each_get_their_own_bytes_back() {
    let (a, b) = pair();
    echo_server(&b, addr(&format!("{B}:7"))).await;
    let a = Arc::new(a);
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let a = Arc::clone(&a);
        tasks.push(tokio::spawn(async move {
            let mut conn = a.connect(addr(&format!("{B}:7"))).await?;
            let data = pattern(100 + i, 64 << 10);
            let (mut r, mut w) = tokio::io::split(&mut conn);
            let send = async {
                w.write_all(&data).await?;
                w.shutdown().await
            };
            let mut back = Vec::new();
            let (sent, read) = tokio::join!(send, r.read_to_end(&mut back));
            sent?;
            read?;
            io::Result::Ok(back == data)
        }));
    }
    for t in tasks {
        assert!(within(t).await.unwrap().unwrap(), "echo matches");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_means_connection_refused() {
    let (a, _b) = pair();
    let err = within(a.connect(addr(&format!("{B}:4444"))))
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    let err = within(a.connect(addr("10.99.0.1:80")))
        .await
        .expect_err("no route");
    assert_eq!(err.kind(), io::ErrorKind::HostUnreachable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_reaches_the_other_side_as_eof_in_both_directions() {
    let (a, b) = pair();
    let listener = b.listen(addr(&format!("{B}:8080"))).await.unwrap();
    let server = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        conn.write_all(b"bye").await.unwrap();
        conn.shutdown().await.unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).await.unwrap();
        rest
    });
    let mut conn = within(a.connect(addr(&format!("{B}:8080")))).await.unwrap();
    let mut got = Vec::new();
    within(conn.read_to_end(&mut got)).await.unwrap();
    assert_eq!(got, b"bye", "data, then EOF");
    conn.write_all(b"ok, closing too").await.unwrap();
    conn.shutdown().await.unwrap();
    assert_eq!(within(server).await.unwrap(), b"ok, closing too");
    // A closed connection refuses further writes.
    let err = within(async {
        loop {
            if let Err(e) = conn.write_all(b"late").await {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_datagrams_cross_both_ways() {
    let (a, b) = pair();
    let ua = a.bind_udp(addr(&format!("{A}:5353"))).await.unwrap();
    let ub = b.bind_udp(addr("0.0.0.0:53")).await.unwrap();
    let mut buf = [0u8; 1500];
    // The first datagram may wait for the handshake; it must still arrive.
    ua.send_to(b"query", addr(&format!("{B}:53")))
        .await
        .unwrap();
    let (n, from) = within(ub.recv_from(&mut buf)).await.unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&b"query"[..], addr(&format!("{A}:5353")))
    );
    ub.send_to(b"answer", from).await.unwrap();
    let (n, from) = within(ua.recv_from(&mut buf)).await.unwrap();
    assert_eq!(
        (&buf[..n], from),
        (&b"answer"[..], addr(&format!("{B}:53")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_delivers_tunnel_connections_to_a_real_local_server() {
    let (a, b) = pair();
    let real = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let real_addr = real.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = real.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                w.write_all(b"real:").await.unwrap();
                tokio::io::copy(&mut r, &mut w).await.unwrap();
            });
        }
    });
    let listener = b.listen(addr(&format!("{B}:80"))).await.unwrap();
    tokio::spawn(forward(listener, real_addr));
    for _ in 0..3 {
        let mut conn = within(a.connect(addr(&format!("{B}:80")))).await.unwrap();
        conn.write_all(b"ping").await.unwrap();
        conn.shutdown().await.unwrap();
        let mut got = Vec::new();
        within(conn.read_to_end(&mut got)).await.unwrap();
        assert_eq!(got, b"real:ping");
    }
    // Nothing listens behind the forward: the tunnel client sees a reset, on its first read or
    // already while connecting when the reset follows the SYN-ACK within one batch.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let listener = b.listen(addr(&format!("{B}:81"))).await.unwrap();
    tokio::spawn(forward(listener, dead));
    let err = match within(a.connect(addr(&format!("{B}:81")))).await {
        Ok(mut conn) => {
            let mut got = Vec::new();
            within(conn.read_to_end(&mut got)).await.expect_err("reset")
        }
        Err(e) => e,
    };
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
        ),
        "{err}"
    );
}

/// What the stack emits must be plain, valid IPv4 that a kernel stack at the other end of the
/// tunnel accepts: a raw node decrypts A's SYN and checks its headers and checksums.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_emits_valid_ipv4() {
    let now = Instant::now();
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (ua, ub) = (UdpIo::bind(0).unwrap(), UdpIo::bind(0).unwrap());
    let port_a = ua.local_addr().unwrap().port();
    let port_b = ub.local_addr().unwrap().port();
    let mut na = Node::new(ka.clone(), now);
    let mut to_b = PeerConfig::new(kb.public_key());
    to_b.endpoint = Some(addr(&format!("127.0.0.1:{port_b}")));
    to_b.allowed_ips = vec!["10.77.0.2/32".parse().unwrap()];
    na.upsert_peer(to_b, now).unwrap();
    let a = Netstack::start(
        Arc::new(Mutex::new(na)),
        ua,
        vec![format!("{A}/24").parse().unwrap()],
        1420,
        None,
    )
    .unwrap();
    let mut nb = Node::new(kb, now);
    let mut to_a = PeerConfig::new(ka.public_key());
    to_a.endpoint = Some(addr(&format!("127.0.0.1:{port_a}")));
    to_a.allowed_ips = vec!["10.77.0.1/32".parse().unwrap()];
    nb.upsert_peer(to_a, now).unwrap();

    let connecting = tokio::spawn(async move { a.connect(addr(&format!("{B}:443"))).await });
    let syn = tokio::task::spawn_blocking(move || {
        let mut storage = vec![vec![0u8; 65535]; overlay::udp::RECV_BATCH];
        let mut meta = vec![quinn_udp::RecvMeta::default(); overlay::udp::RECV_BATCH];
        let mut out = vec![0u8; 65535];
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            let mut slices: Vec<_> = storage
                .iter_mut()
                .map(|b| std::io::IoSliceMut::new(b))
                .collect();
            let n = ub
                .recv(&mut slices, &mut meta, Duration::from_millis(100))
                .unwrap();
            for (m, buf) in meta.iter().zip(&storage).take(n) {
                for d in buf[..m.len].chunks(m.stride.max(1)) {
                    match nb.decapsulate(m.addr, d, &mut out, Instant::now()) {
                        Inbound::Tunnel { packet, .. } => return packet.to_vec(),
                        Inbound::Network { to, packet } => ub.send(to, packet, None).unwrap(),
                        _ => {}
                    }
                }
            }
        }
        panic!("no inner packet arrived");
    })
    .await
    .unwrap();
    connecting.abort();

    assert_eq!(syn[0], 0x45, "IPv4 without options");
    assert_eq!(u16::from_be_bytes([syn[2], syn[3]]) as usize, syn.len());
    assert_eq!(
        &syn[12..16],
        &[10, 77, 0, 1],
        "source is A's overlay address"
    );
    assert_eq!(&syn[16..20], &[10, 77, 0, 2]);
    assert!(syn[8] > 0, "TTL");
    assert_eq!(syn[9], 6, "TCP");
    assert_eq!(checksum(&[&syn[..20]]), 0, "IPv4 header checksum");
    let tcp = &syn[20..];
    assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 443);
    assert_eq!(tcp[13] & 0x3f, 0x02, "a bare SYN");
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&syn[12..20]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    assert_eq!(checksum(&[&pseudo, tcp]), 0, "TCP checksum");
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    let kinds = option_kinds(&tcp[20..data_offset]);
    assert!(kinds.contains(&2), "MSS option in {kinds:?}");
    assert!(kinds.contains(&3), "window scale option in {kinds:?}");
}

/// The kinds of the TCP options in `options` (RFC 9293 §3.1).
fn option_kinds(mut options: &[u8]) -> Vec<u8> {
    let mut kinds = Vec::new();
    while let Some(&kind) = options.first() {
        match kind {
            0 => break,
            1 => options = &options[1..],
            _ => {
                kinds.push(kind);
                let len = usize::from(*options.get(1).expect("option length")).max(2);
                options = &options[len.min(options.len())..];
            }
        }
    }
    kinds
}

/// The Internet checksum (RFC 1071); 0 over a packet that carries a correct one.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let bytes: Vec<u8> = parts.concat();
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_stack_fails_whoever_waits_on_it() {
    let (a, b) = pair();
    let listener = b.listen(addr(&format!("{B}:22"))).await.unwrap();
    let mut conn = within(a.connect(addr(&format!("{B}:22")))).await.unwrap();
    let (_accepted, _) = within(listener.accept()).await.unwrap();
    let udp = a.bind_udp(addr("0.0.0.0:0")).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        conn.read(&mut buf).await
    });
    let udp_reader = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        udp.recv_from(&mut buf).await.map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.stop();
    assert!(within(reader).await.unwrap().is_err(), "pending read fails");
    assert!(
        within(udp_reader).await.unwrap().is_err(),
        "pending recv fails"
    );
    let err = within(a.connect(addr(&format!("{B}:22"))))
        .await
        .expect_err("stopped");
    assert_eq!(err.kind(), io::ErrorKind::NotConnected, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_complete_into_the_backlog_before_anyone_accepts() {
    let (a, b) = pair();
    let listener = b.listen(addr(&format!("{B}:2000"))).await.unwrap();
    let a = Arc::new(a);
    let connects: Vec<_> = (0..20)
        .map(|_| {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.connect(addr(&format!("{B}:2000"))).await })
        })
        .collect();
    let mut clients = Vec::new();
    for c in connects {
        clients.push(
            within(c)
                .await
                .unwrap()
                .expect("connected without an accept"),
        );
    }
    let mut peers = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (_, peer) = within(listener.accept()).await.unwrap();
        peers.insert(peer);
    }
    let expected: std::collections::BTreeSet<_> = clients.iter().map(|c| c.local_addr()).collect();
    assert_eq!(peers, expected);
}
