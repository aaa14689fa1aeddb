//! UDP from inside a namespace: a flood of random datagrams aimed at a WireGuard port, and a sink
//! that counts what arrives at an address.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::netns::Netns;
use crate::traffic::in_netns;

/// Sizes of WireGuard messages (initiation, response, cookie reply, empty data) and one MTU-sized
/// data message: random bodies of these sizes get past length checks into the parsers.
const WG_SIZES: [usize; 5] = [148, 92, 64, 32, 1452];

/// Sends `count` random datagrams from inside `ns` to `dst`, reproducible from `seed`.
///
/// Lengths are random in 0..1500; about two thirds start like a WireGuard message (type 1..=4,
/// three zero reserved bytes), half of those with a real message size, so they reach WireGuard's
/// message parsers instead of failing the first byte check. Sending pauses for a millisecond every
/// 64 datagrams so that the receiver's socket buffer, not the flood, decides what gets through.
/// Returns the number of datagrams sent.
pub fn udp_flood(ns: &Netns, dst: SocketAddr, count: usize, seed: u64) -> Result<u64> {
    let handle = in_netns(ns, move || {
        let bind: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
        let socket = UdpSocket::bind(bind)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut buf = [0u8; 1500];
        let mut sent = 0u64;
        for i in 0..count {
            let len = random_datagram(&mut rng, &mut buf);
            match socket.send_to(&buf[..len], dst) {
                Ok(_) => sent += 1,
                // The receiver's ICMP port unreachable surfaces here; the flood goes on.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e).with_context(|| format!("udp flood to {dst}")),
            }
            if i % 64 == 63 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(sent)
    });
    handle
        .join()
        .map_err(|_| anyhow!("udp flood thread panicked"))?
}

fn random_datagram(rng: &mut StdRng, buf: &mut [u8; 1500]) -> usize {
    let shaped = rng.gen_ratio(2, 3);
    let len = if shaped && rng.gen_bool(0.5) {
        WG_SIZES[rng.gen_range(0..WG_SIZES.len())]
    } else {
        rng.gen_range(0..1500)
    };
    rng.fill(&mut buf[..len]);
    if shaped && len >= 4 {
        buf[0] = rng.gen_range(1..=4);
        buf[1..4].fill(0);
    }
    len
}

/// Sends `count` datagrams of `payload` from a socket bound to `src` inside `ns` to `dst`.
pub fn udp_send(
    ns: &Netns,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    count: usize,
) -> Result<()> {
    let payload = payload.to_vec();
    let handle = in_netns(ns, move || {
        let socket = UdpSocket::bind(src).with_context(|| format!("udp bind {src}"))?;
        for _ in 0..count {
            socket
                .send_to(&payload, dst)
                .with_context(|| format!("udp send {src} -> {dst}"))?;
        }
        Ok(())
    });
    handle
        .join()
        .map_err(|_| anyhow!("udp send thread panicked"))?
}

/// A UDP socket in a namespace that counts the datagrams it receives until stopped.
#[derive(Debug)]
pub struct UdpSink {
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<()>>,
}

impl UdpSink {
    /// Binds `bind` inside `ns` (returns once bound) and counts in the background.
    pub fn start(ns: &Netns, bind: SocketAddr) -> Result<UdpSink> {
        let (received, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (counter, stopped) = (received.clone(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = in_netns(ns, move || {
            let socket = UdpSocket::bind(bind);
            let _ = tx.send(socket.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            let socket = socket?;
            socket.set_read_timeout(Some(Duration::from_millis(50)))?;
            let mut buf = [0u8; 2048];
            while !stopped.load(Ordering::Relaxed) {
                match socket.recv_from(&mut buf) {
                    Ok(_) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                        ) => {}
                    Err(e) => return Err(e).context("udp sink receive"),
                }
            }
            Ok(())
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(UdpSink {
                received,
                stop,
                handle,
            }),
            Ok(Err(e)) => bail!("udp sink cannot bind {bind} in {}: {e}", ns.name()),
            Err(_) => bail!("udp sink thread died before binding {bind}"),
        }
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Stops the sink and returns the final count.
    pub fn stop(self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let received = self.received.clone();
        self.handle
            .join()
            .map_err(|_| anyhow!("udp sink thread panicked"))??;
        Ok(received.load(Ordering::Relaxed))
    }
}
