//! The IO shell around a [`Node`]: three threads move batches between a TUN device and the UDP
//! socket, and drive the node's timers. The node sits behind one mutex, taken once per batch.
//!
//! Outbound: one TUN read (a TSO super-packet split into segments) → encrypt every segment
//! back to back into one buffer → one GSO send per run of same-sized datagrams to one endpoint.
//! Inbound: one `recvmmsg` (with GRO) → decrypt every datagram into its own buffer → one
//! GRO-coalescing TUN write.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quinn_udp::RecvMeta;
use tun_rs::GROTable;

use crate::node::{Inbound, MIN_BUFFER, Node, OVERHEAD, Outbound};
use crate::stats::DropReason;
use crate::tun::{IDEAL_BATCH_SIZE, Tun, VIRTIO_NET_HDR_LEN};
use crate::udp::{RECV_BATCH, UdpIo, wait};

/// How long an idle IO thread sleeps before checking whether to stop.
const IDLE: Duration = Duration::from_millis(250);
/// Largest datagram or GRO buffer.
const MAX_BUF: usize = 65_535;

/// Receives datagrams that are not WireGuard messages (first byte outside 1–4), such as a
/// control plane sharing the port. Called on the data-path thread: it must not block.
pub type OtherSink = Box<OtherFn>;

/// The callable behind an [`OtherSink`].
pub type OtherFn = dyn Fn(SocketAddr, &[u8]) + Send + Sync;

/// A running node: its threads, TUN device and socket.
pub struct Device {
    node: Arc<Mutex<Node>>,
    udp: Arc<UdpIo>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Device {
    /// Starts moving packets between `tun` and `udp` through `node`.
    pub fn start(node: Arc<Mutex<Node>>, tun: Tun, udp: UdpIo) -> io::Result<Self> {
        Self::start_with(node, tun, udp, None)
    }

    /// Like [`Device::start`], handing non-WireGuard datagrams to `other` instead of counting
    /// them as malformed.
    pub fn start_with(
        node: Arc<Mutex<Node>>,
        tun: Tun,
        udp: UdpIo,
        other: Option<OtherSink>,
    ) -> io::Result<Self> {
        let tun = Arc::new(tun);
        let udp = Arc::new(udp);
        let stop = Arc::new(AtomicBool::new(false));
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.to_owned()).spawn(f)
        };
        let outbound = {
            let (node, tun, udp, stop) = (node.clone(), tun.clone(), udp.clone(), stop.clone());
            spawn(
                "pd-tun-rx",
                Box::new(move || run_outbound(&node, &tun, &udp, &stop)),
            )?
        };
        let inbound = {
            let (node, tun, udp, stop) = (node.clone(), tun.clone(), udp.clone(), stop.clone());
            spawn(
                "pd-udp-rx",
                Box::new(move || run_inbound(&node, &tun, &udp, &stop, other.as_deref())),
            )?
        };
        let timers = {
            let (node, udp, stop) = (node.clone(), udp.clone(), stop.clone());
            spawn(
                "pd-timers",
                Box::new(move || run_timers(&node, &udp, &stop)),
            )?
        };
        Ok(Self {
            node,
            udp,
            stop,
            threads: vec![outbound, inbound, timers],
        })
    }

    /// The node, shared with whoever configures peers and reads status.
    pub fn node(&self) -> &Arc<Mutex<Node>> {
        &self.node
    }

    /// The UDP port peers send to.
    pub fn listen_port(&self) -> u16 {
        self.udp.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Sends one datagram that is not a WireGuard message (a control-plane message) from the
    /// tunnel's port.
    pub fn send_other(&self, to: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        self.udp.send(to, datagram, None)
    }

    /// Sends whatever the node has queued (after a configuration change, say) now rather than
    /// at the next tick.
    pub fn flush(&self) {
        send_pending(&mut lock(&self.node), &self.udp, &mut vec![0u8; MAX_BUF]);
    }

    /// Stops the threads and waits for them.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Locks the node; a panic elsewhere must not take the data path down with it.
pub(crate) fn lock(node: &Mutex<Node>) -> MutexGuard<'_, Node> {
    node.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// TUN → encrypt → UDP.
fn run_outbound(node: &Mutex<Node>, tun: &Tun, udp: &UdpIo, stop: &AtomicBool) {
    let seg_cap = usize::from(tun.mtu()).max(1500) + 64;
    let mut scratch = vec![0u8; VIRTIO_NET_HDR_LEN + MAX_BUF];
    let mut bufs = vec![vec![0u8; seg_cap]; IDEAL_BATCH_SIZE];
    let mut sizes = vec![0usize; IDEAL_BATCH_SIZE];
    // Encrypted datagrams, back to back, and where each one starts, its length and endpoint.
    let mut wire = vec![0u8; IDEAL_BATCH_SIZE * (seg_cap + OVERHEAD + 16)];
    let mut sends: Vec<(SocketAddr, usize, usize)> = Vec::with_capacity(IDEAL_BATCH_SIZE);
    while !stop.load(Ordering::Relaxed) {
        let n = match tun.recv_batch(&mut scratch, &mut bufs, &mut sizes) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = wait(tun.as_raw_fd(), libc::POLLIN, IDLE) {
                    tracing::error!(error = %e, "TUN poll failed");
                    return;
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // A malformed offload header costs one batch, not the thread.
                tracing::debug!(error = %e, "TUN read failed");
                continue;
            }
        };
        sends.clear();
        let mut offset = 0;
        {
            let mut node = lock(node);
            let now = Instant::now();
            for (buf, &size) in bufs.iter().zip(&sizes).take(n) {
                let out = &mut wire[offset..];
                if let Outbound::Send { to, packet, .. } = node.encapsulate(&buf[..size], out, now)
                {
                    sends.push((to, offset, packet.len()));
                    offset += packet.len();
                }
            }
        }
        send_runs(udp, &wire, &sends, node);
    }
}

/// Sends datagrams laid out back to back in `wire`, one GSO call per run of equal-sized
/// datagrams to one endpoint (a run's last datagram may be shorter).
pub(crate) fn send_runs(
    udp: &UdpIo,
    wire: &[u8],
    sends: &[(SocketAddr, usize, usize)],
    node: &Mutex<Node>,
) {
    let mut i = 0;
    while i < sends.len() {
        let (to, start, size) = sends[i];
        let max = udp.max_segments(size);
        let mut j = i + 1;
        while j < sends.len()
            && j - i < max
            && sends[j].0 == to
            && sends[j - 1].2 == size
            && sends[j].2 <= size
        {
            j += 1;
        }
        let (_, last_start, last_len) = sends[j - 1];
        let contents = &wire[start..last_start + last_len];
        let segment = (j - i > 1).then_some(size);
        if let Err(e) = udp.send(to, contents, segment) {
            tracing::debug!(%to, error = %e, "UDP send failed");
            let mut node = lock(node);
            for _ in i..j {
                node.count_drop(DropReason::Io);
            }
        }
        i = j;
    }
}

/// UDP → decrypt → TUN.
fn run_inbound(
    node: &Mutex<Node>,
    tun: &Tun,
    udp: &UdpIo,
    stop: &AtomicBool,
    other: Option<&OtherFn>,
) {
    let offset = tun.write_offset();
    let plain_len = offset + MAX_BUF;
    let mut storage = vec![vec![0u8; MAX_BUF]; RECV_BATCH];
    let mut meta = vec![RecvMeta::default(); RECV_BATCH];
    let mut plain: Vec<Vec<u8>> = (0..IDEAL_BATCH_SIZE)
        .map(|_| Vec::with_capacity(plain_len))
        .collect();
    let mut gro = GROTable::new();
    let mut reply = vec![0u8; MAX_BUF];
    while !stop.load(Ordering::Relaxed) {
        let mut slices: Vec<IoSliceMut> = storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let n = match udp.recv(&mut slices, &mut meta, IDLE) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            }
        };
        drop(slices);
        let mut ready = 0;
        let mut guard = lock(node);
        let now = Instant::now();
        for (m, buf) in meta.iter().zip(&storage).take(n) {
            if m.len == 0 {
                // An empty datagram is no WireGuard message; `chunks` would skip it uncounted.
                guard.count_drop(DropReason::Malformed);
                continue;
            }
            for datagram in buf[..m.len].chunks(m.stride.max(1)) {
                if let Some(other) = other
                    && !matches!(datagram[0], 1..=4)
                {
                    other(m.addr, datagram);
                    continue;
                }
                let out = &mut plain[ready];
                out.resize(offset + datagram.len().max(MIN_BUFFER), 0);
                match guard.decapsulate(m.addr, datagram, &mut out[offset..], now) {
                    Inbound::Tunnel { packet, .. } => {
                        let len = packet.len();
                        out.truncate(offset + len);
                        ready += 1;
                    }
                    Inbound::Network { to, packet } => {
                        let len = packet.len();
                        reply[..len].copy_from_slice(&out[offset..offset + len]);
                        if let Err(e) = udp.send(to, &reply[..len], None) {
                            tracing::debug!(%to, error = %e, "UDP reply failed");
                        }
                    }
                    Inbound::Done | Inbound::Dropped(_) => {}
                }
                if ready == plain.len() {
                    drop(guard);
                    write_tun(tun, &mut gro, &mut plain[..ready], node);
                    ready = 0;
                    guard = lock(node);
                }
            }
        }
        send_pending(&mut guard, udp, &mut reply);
        drop(guard);
        if ready > 0 {
            write_tun(tun, &mut gro, &mut plain[..ready], node);
        }
    }
}

fn write_tun(tun: &Tun, gro: &mut GROTable, bufs: &mut [Vec<u8>], node: &Mutex<Node>) {
    if let Err(e) = tun.send_batch(gro, bufs) {
        tracing::debug!(error = %e, "TUN write failed");
        lock(node).count_drop(DropReason::Io);
    }
}

/// Timers: handshake retries, keepalives, rekeys, the rate limiter window.
fn run_timers(node: &Mutex<Node>, udp: &UdpIo, stop: &AtomicBool) {
    let mut buf = vec![0u8; MAX_BUF];
    while !stop.load(Ordering::Relaxed) {
        let deadline = lock(node).poll_timeout();
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep((deadline - now).min(IDLE));
            continue;
        }
        let mut guard = lock(node);
        guard.handle_timeout(Instant::now());
        send_pending(&mut guard, udp, &mut buf);
    }
}

/// Sends everything the node has queued (drained handshake queues, timer packets). These are
/// rare, so they go out one by one while the node stays locked.
pub(crate) fn send_pending(node: &mut Node, udp: &UdpIo, buf: &mut [u8]) {
    while let Some(t) = node.poll_transmit(buf) {
        if let Err(e) = udp.send(t.to, t.packet, None) {
            tracing::debug!(to = %t.to, error = %e, "UDP send failed");
        }
    }
}
