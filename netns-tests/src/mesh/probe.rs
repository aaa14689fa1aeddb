//! Timing what crosses the mesh: how soon pods reach an address, and a steady UDP stream whose
//! arrivals are time-stamped (to see when traffic stops and flows again).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::netns::Netns;
use crate::traffic::in_netns;

/// How long one probing ping waits for its reply.
const PING_WAIT: &str = "0.2";

/// From every namespace in `sources` at once, pings `dst` (one echo at a time, 0.2 s wait each)
/// until a reply comes; returns, per source name, the time from `since` to its first reply.
/// Fails if any source gets no reply within `timeout` of `since`.
pub fn reach_times(
    sources: &[(&str, &Netns)],
    dst: Ipv4Addr,
    since: Instant,
    timeout: Duration,
) -> Result<Vec<(String, Duration)>> {
    let threads: Vec<_> = sources
        .iter()
        .map(|(name, ns)| {
            let (name, ns) = ((*name).to_owned(), ns.handle());
            std::thread::spawn(move || -> Result<(String, Duration)> {
                let addr = dst.to_string();
                loop {
                    let out = ns.exec(&["ping", "-n", "-q", "-c", "1", "-W", PING_WAIT, &addr])?;
                    if out.status.success() {
                        return Ok((name, since.elapsed()));
                    }
                    if since.elapsed() > timeout {
                        bail!(
                            "no ping reply from {dst} in {} within {timeout:?}",
                            ns.name()
                        );
                    }
                    // A quick failure (no route yet) would spin: pace the retries.
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().map_err(|_| anyhow!("ping thread panicked"))?)
        .collect()
}

/// A steady one-way UDP stream between two namespaces: a datagram every `interval`, and a
/// receiver that time-stamps every arrival. Send errors (no route while a daemon restarts) are
/// counted, not fatal.
#[derive(Debug)]
pub struct UdpProbe {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    send_errors: Arc<AtomicU64>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    sender: JoinHandle<Result<()>>,
    receiver: JoinHandle<Result<()>>,
}

impl UdpProbe {
    /// Binds `dst` in `to` (returns once bound) and starts sending to it from `from`.
    pub fn start(from: &Netns, to: &Netns, dst: SocketAddr, interval: Duration) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stopped, log) = (stop.clone(), arrivals.clone());
        let receiver = in_netns(to, move || {
            let socket = UdpSocket::bind(dst);
            let _ = tx.send(socket.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            let socket = socket?;
            socket.set_read_timeout(Some(Duration::from_millis(20)))?;
            let mut buf = [0u8; 64];
            while !stopped.load(Ordering::Relaxed) {
                match socket.recv_from(&mut buf) {
                    Ok(_) => log
                        .lock()
                        .map_err(|_| anyhow!("poisoned"))?
                        .push(Instant::now()),
                    Err(e)
                        if matches!(
                            e.kind(),
                            ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                        ) => {}
                    Err(e) => return Err(e).context("udp probe receive"),
                }
            }
            Ok(())
        });
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("udp probe cannot bind {dst} in {}: {e}", to.name()),
            Err(_) => bail!("udp probe receiver died before binding {dst}"),
        }
        let (sent, send_errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (stopped, count, errors) = (stop.clone(), sent.clone(), send_errors.clone());
        let sender = in_netns(from, move || {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            let mut seq = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                seq += 1;
                match socket.send_to(&seq.to_be_bytes(), dst) {
                    Ok(_) => count.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(interval); // pacing, not waiting for readiness
            }
            Ok(())
        });
        Ok(UdpProbe {
            stop,
            sent,
            send_errors,
            arrivals,
            sender,
            receiver,
        })
    }

    /// Datagrams received so far.
    pub fn received(&self) -> usize {
        self.arrivals.lock().map_or(0, |a| a.len())
    }

    /// The first arrival after `t`, if any.
    pub fn first_after(&self, t: Instant) -> Option<Instant> {
        let arrivals = self.arrivals.lock().ok()?;
        arrivals.iter().copied().find(|a| *a > t)
    }

    /// The last arrival, if any.
    pub fn last(&self) -> Option<Instant> {
        self.arrivals.lock().ok()?.last().copied()
    }

    /// Stops both ends; returns (sent, send errors, received).
    pub fn stop(self) -> Result<(u64, u64, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        for (what, handle) in [("sender", self.sender), ("receiver", self.receiver)] {
            handle
                .join()
                .map_err(|_| anyhow!("udp probe {what} panicked"))??;
        }
        let received = self.arrivals.lock().map_or(0, |a| a.len());
        Ok((
            self.sent.load(Ordering::Relaxed),
            self.send_errors.load(Ordering::Relaxed),
            received,
        ))
    }
}
