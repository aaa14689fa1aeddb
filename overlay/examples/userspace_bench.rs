//! Throughput of the userspace data plane: two `Netstack`s in one process, their nodes peered
//! over loopback UDP, one TCP stream from A to B through the tunnel.
//!
//! `cargo run --release -p overlay --example userspace_bench -- [seconds] [streams]`
//! (default 10 s, 1 stream). Prints Gbit/s of payload received.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use overlay::netstack::Netstack;
use overlay::udp::UdpIo;
use overlay::{Node, PeerConfig, PrivateKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let streams: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(Duration::from_secs(seconds), streams))
}

async fn run(duration: Duration, streams: usize) -> Result<(), Box<dyn std::error::Error>> {
    let (a, b) = pair()?;
    let target: SocketAddr = "10.88.0.2:5201".parse()?;
    let listener = b.listen(target).await?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 << 10];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    let mut conns = Vec::new();
    for _ in 0..streams {
        conns.push(a.connect(target).await?);
    }
    // Warm up (handshake, slow start), then measure.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for mut conn in conns {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let chunk = vec![0x5au8; 256 << 10];
            while !stop.load(Ordering::Relaxed) {
                if conn.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (start, before) = (Instant::now(), received.load(Ordering::Relaxed));
    let mut last = (start, before);
    while start.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (now, bytes) = (Instant::now(), received.load(Ordering::Relaxed));
        println!(
            "{:5.1} s  {:6.2} Gbit/s",
            (now - start).as_secs_f64(),
            gbits(bytes - last.1, now - last.0)
        );
        last = (now, bytes);
    }
    stop.store(true, Ordering::Relaxed);
    let total = received.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed();
    println!(
        "userspace netstack, {streams} stream(s): {:.2} Gbit/s ({} MB in {:.1} s)",
        gbits(total, elapsed),
        total / 1_000_000,
        elapsed.as_secs_f64()
    );
    Ok(())
}

fn gbits(bytes: u64, over: Duration) -> f64 {
    bytes as f64 * 8.0 / over.as_secs_f64() / 1e9
}

/// Two netstacks whose nodes are each other's peer on loopback UDP.
fn pair() -> Result<(Netstack, Netstack), Box<dyn std::error::Error>> {
    let now = Instant::now();
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (ua, ub) = (UdpIo::bind(0)?, UdpIo::bind(0)?);
    let pb = ub.local_addr()?.port();
    let mut na = Node::new(ka.clone(), now);
    let mut to_b = PeerConfig::new(kb.public_key());
    to_b.endpoint = Some(SocketAddr::from(([127, 0, 0, 1], pb)));
    to_b.allowed_ips = vec!["10.88.0.2/32".parse()?];
    na.upsert_peer(to_b, now)?;
    let mut nb = Node::new(kb, now);
    // B learns A's endpoint from A's handshake: one initiator, no simultaneous-handshake race.
    let mut to_a = PeerConfig::new(ka.public_key());
    to_a.allowed_ips = vec!["10.88.0.1/32".parse()?];
    nb.upsert_peer(to_a, now)?;
    let mtu = overlay::DEFAULT_MTU;
    let a = Netstack::start(
        Arc::new(Mutex::new(na)),
        ua,
        vec!["10.88.0.1/24".parse()?],
        mtu,
        None,
    )?;
    let b = Netstack::start(
        Arc::new(Mutex::new(nb)),
        ub,
        vec!["10.88.0.2/24".parse()?],
        mtu,
        None,
    )?;
    Ok((a, b))
}
