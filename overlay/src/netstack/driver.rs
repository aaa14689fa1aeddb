//! The stack's thread: UDP batch → decrypt → one smoltcp poll → encrypt → GSO send, and the
//! node's timers. It sleeps in `poll(2)` on the UDP socket and the kick eventfd until the
//! earlier of smoltcp's `poll_at` and the node's next timer.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn_udp::RecvMeta;
use smoltcp::iface::{Config, Interface};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::NetstackConfig;
use super::pipe::Pipe;
use super::stack::{Kick, Shared, Stack, lock};
use crate::device::{OtherSink, lock as lock_node, send_pending, send_runs};
use crate::node::{Inbound, MIN_BUFFER, Node, OVERHEAD, Outbound};
use crate::stats::DropReason;
use crate::udp::{RECV_BATCH, UdpIo};

/// Largest datagram or GRO buffer.
pub(super) const MAX_BUF: usize = 65_535;
/// Packets the stack may emit before they are encrypted and sent (one GSO batch or a few).
const TX_BATCH: usize = 128;
/// Inbound packets handed to smoltcp per poll (a UDP batch with GRO can hold thousands).
const RX_CHUNK: usize = 256;
/// Longest sleep: the thread also checks whether it should stop.
const IDLE: Duration = Duration::from_millis(250);
/// How often sockets whose owner is gone are checked for removal.
const REAP_EVERY: Duration = Duration::from_millis(100);
/// Most addresses smoltcp was built to hold (`iface-max-addr-count-4`).
const MAX_ADDRESSES: usize = 4;

/// Builds the interface and starts the thread.
pub(super) fn spawn(
    node: Arc<Mutex<Node>>,
    udp: UdpIo,
    config: NetstackConfig,
    other: Option<OtherSink>,
) -> io::Result<Arc<Shared>> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    if config.addresses.is_empty() || config.addresses.len() > MAX_ADDRESSES {
        return Err(invalid(format!(
            "a netstack needs 1 to {MAX_ADDRESSES} addresses, got {}",
            config.addresses.len()
        )));
    }
    let min_mtu = if config.addresses.iter().any(|a| a.addr().is_ipv6()) {
        1280
    } else {
        576
    };
    if config.mtu < min_mtu {
        return Err(invalid(format!("MTU {} is below {min_mtu}", config.mtu)));
    }
    let mtu = usize::from(config.mtu);
    let mut pipe = Pipe::new(
        mtu,
        RECV_BATCH * MAX_BUF + MIN_BUFFER,
        RECV_BATCH * 64,
        TX_BATCH,
    );
    let epoch = Instant::now();
    let mut iface_config = Config::new(HardwareAddress::Ip);
    iface_config.random_seed = rand::random();
    let mut iface = Interface::new(iface_config, &mut pipe, smol(epoch, epoch));
    let mut full = false;
    iface.update_ip_addrs(|addrs| {
        for net in &config.addresses {
            let cidr = IpCidr::new(IpAddress::from(net.addr()), net.prefix_len());
            full |= addrs.push(cidr).is_err();
        }
    });
    if full {
        return Err(invalid("too many addresses".into()));
    }
    // Every destination leaves through the tunnel; the node's allowed IPs pick the peer.
    for net in &config.addresses {
        let routes = iface.routes_mut();
        let added = match net.addr() {
            IpAddr::V4(a) if routes.add_default_ipv4_route(a).is_err() => false,
            IpAddr::V6(a) if routes.add_default_ipv6_route(a).is_err() => false,
            _ => true,
        };
        if !added {
            return Err(invalid("too many routes".into()));
        }
    }
    let shared = Arc::new(Shared {
        stack: Mutex::new(Stack::new(iface, config.tcp_buffer)),
        node,
        udp: Arc::new(udp),
        other,
        kick: Kick::new()?,
        stopped: AtomicBool::new(false),
    });
    let thread_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("pd-netstack".into())
        .spawn(move || Driver::new(thread_shared, pipe, epoch, mtu).run())?;
    Ok(shared)
}

/// The thread's state: buffers reused for every batch.
struct Driver {
    shared: Arc<Shared>,
    pipe: Pipe,
    epoch: Instant,
    storage: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    wire: Vec<u8>,
    sends: Vec<(SocketAddr, usize, usize)>,
    reply: Vec<u8>,
    syns: Vec<(u16, usize)>,
    next_reap: Instant,
    node_at: Instant,
}

impl Driver {
    fn new(shared: Arc<Shared>, pipe: Pipe, epoch: Instant, mtu: usize) -> Self {
        Self {
            shared,
            pipe,
            epoch,
            storage: vec![vec![0u8; MAX_BUF]; RECV_BATCH],
            meta: vec![RecvMeta::default(); RECV_BATCH],
            wire: vec![0u8; TX_BATCH * (mtu + OVERHEAD) + MIN_BUFFER],
            sends: Vec::with_capacity(TX_BATCH),
            reply: vec![0u8; MAX_BUF],
            syns: Vec::new(),
            next_reap: epoch,
            node_at: epoch,
        }
    }

    fn run(mut self) {
        let mut sleep = Duration::ZERO;
        loop {
            // The thread holds the last reference once every handle and socket is gone.
            if self.shared.stopped.load(Ordering::Relaxed) || Arc::strong_count(&self.shared) == 1 {
                break;
            }
            if !sleep.is_zero()
                && let Err(e) = wait(self.shared.udp.as_raw_fd(), self.shared.kick.fd(), sleep)
            {
                tracing::error!(error = %e, "netstack poll failed");
                break;
            }
            self.shared.kick.clear();
            let now = Instant::now();
            if now >= self.node_at {
                let mut node = lock_node(&self.shared.node);
                node.handle_timeout(now);
                send_pending(&mut node, &self.shared.udp, &mut self.reply);
                self.node_at = node.poll_timeout();
            }
            let received = self.receive(now);
            let stack_delay = self.drive();
            sleep = if received > 0 {
                Duration::ZERO
            } else {
                let node_delay = self.node_at.saturating_duration_since(Instant::now());
                stack_delay.min(node_delay).min(IDLE)
            };
        }
        self.shared.stopped.store(true, Ordering::Relaxed);
        lock(&self.shared.stack).close_all();
        tracing::debug!("netstack stopped");
    }

    /// Reads one batch of datagrams and decrypts them into the pipe. Returns how many arrived.
    fn receive(&mut self, now: Instant) -> usize {
        let shared = &*self.shared;
        let mut slices: Vec<IoSliceMut> = self
            .storage
            .iter_mut()
            .map(|b| IoSliceMut::new(b))
            .collect();
        let n = match shared.udp.recv(&mut slices, &mut self.meta, Duration::ZERO) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive failed");
                0
            }
        };
        drop(slices);
        if n == 0 {
            return 0;
        }
        let mut count = 0;
        let mut node = lock_node(&shared.node);
        for (m, buf) in self.meta.iter().zip(&self.storage).take(n) {
            if m.len == 0 {
                node.count_drop(DropReason::Malformed);
                continue;
            }
            for datagram in buf[..m.len].chunks(m.stride.max(1)) {
                count += 1;
                if let Some(other) = &shared.other
                    && !matches!(datagram[0], 1..=4)
                {
                    other(m.addr, datagram);
                    continue;
                }
                let out = self.pipe.rx.tail(datagram.len().max(MIN_BUFFER));
                match node.decapsulate(m.addr, datagram, out, now) {
                    Inbound::Tunnel { packet, .. } => {
                        let len = packet.len();
                        self.pipe.rx.commit(len);
                    }
                    Inbound::Network { to, packet } => {
                        if let Err(e) = shared.udp.send(to, packet, None) {
                            tracing::debug!(%to, error = %e, "UDP reply failed");
                        }
                    }
                    Inbound::Done | Inbound::Dropped(_) => {}
                }
            }
        }
        send_pending(&mut node, &shared.udp, &mut self.reply);
        count
    }

    /// Polls the interface (ingress of the pipe's batch, a chunk at a time, then egress) and
    /// sends what it emitted, again while it has more. Returns when smoltcp next wants to be
    /// polled.
    fn drive(&mut self) -> Duration {
        let mut ingress = self.pipe.next_rx_chunk(RX_CHUNK);
        loop {
            self.pipe.exhausted = false;
            let delay = {
                let mut guard = lock(&self.shared.stack);
                let stack = &mut *guard;
                if ingress {
                    ready_listeners(stack, self.pipe.rx_pending(), &mut self.syns);
                }
                let now = Instant::now();
                let ts = smol(self.epoch, now);
                stack.iface.poll(ts, &mut self.pipe, &mut stack.sockets);
                if stack.has_orphans() && now >= self.next_reap {
                    stack.reap(now);
                    self.next_reap = now + REAP_EVERY;
                }
                stack.iface.poll_delay(ts, &stack.sockets)
            };
            if !self.pipe.tx.is_empty() {
                self.transmit();
            }
            ingress = self.pipe.next_rx_chunk(RX_CHUNK);
            if !ingress && !self.pipe.exhausted {
                return delay.map_or(IDLE, |d| Duration::from_micros(d.total_micros()));
            }
        }
    }

    /// Encrypts every packet the stack emitted back to back and sends them in GSO runs.
    fn transmit(&mut self) {
        let tx = &self.pipe.tx;
        let need: usize = tx.iter().map(|p| p.len() + OVERHEAD).sum::<usize>() + MIN_BUFFER;
        if self.wire.len() < need {
            self.wire.resize(need, 0);
        }
        self.sends.clear();
        let mut offset = 0;
        {
            let mut node = lock_node(&self.shared.node);
            let now = Instant::now();
            for packet in tx.iter() {
                if let Outbound::Send { to, packet, .. } =
                    node.encapsulate(packet, &mut self.wire[offset..], now)
                {
                    self.sends.push((to, offset, packet.len()));
                    offset += packet.len();
                }
            }
        }
        self.pipe.tx.clear();
        send_runs(&self.shared.udp, &self.wire, &self.sends, &self.shared.node);
    }
}

/// Makes sure every listener addressed by a SYN in this batch has a listening socket for it,
/// so that a burst of connections is not refused while the backlog has room.
fn ready_listeners<'a>(
    stack: &mut Stack,
    rx: impl Iterator<Item = &'a [u8]>,
    syns: &mut Vec<(u16, usize)>,
) {
    if stack.listeners.is_empty() {
        return;
    }
    syns.clear();
    for port in rx.filter_map(syn_port) {
        if !stack.listeners.contains_key(&port) {
            continue;
        }
        match syns.iter_mut().find(|(p, _)| *p == port) {
            Some((_, n)) => *n += 1,
            None => syns.push((port, 1)),
        }
    }
    for &(port, n) in syns.iter() {
        if let Err(e) = stack.replenish(port, n) {
            tracing::debug!(port, error = %e, "cannot add listening sockets");
        }
    }
}

/// The destination port of a TCP SYN (without ACK) in an IPv4 or IPv6 packet.
pub(super) fn syn_port(packet: &[u8]) -> Option<u16> {
    let tcp = match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let first_fragment = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x1fff;
            if *packet.get(9)? != 6 || first_fragment != 0 {
                return None;
            }
            packet.get(ihl..)?
        }
        6 if *packet.get(6)? == 6 => packet.get(40..)?,
        _ => return None,
    };
    let flags = *tcp.get(13)?;
    (flags & 0x12 == 0x02).then(|| u16::from_be_bytes([tcp[2], tcp[3]]))
}

/// smoltcp's clock: microseconds since the stack started.
fn smol(epoch: Instant, now: Instant) -> SmolInstant {
    SmolInstant::from_micros(i64::try_from((now - epoch).as_micros()).unwrap_or(i64::MAX))
}

/// Sleeps until the UDP socket is readable, the kick fires, or `timeout` (rounded up to the
/// next millisecond, so that a sub-millisecond deadline never becomes a busy loop).
fn wait(udp: i32, kick: i32, timeout: Duration) -> io::Result<()> {
    let mut fds = [
        libc::pollfd {
            fd: udp,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: kick,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.as_micros().div_ceil(1000);
    let ms = libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX);
    // SAFETY: two valid pollfds on the stack.
    if unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) } < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syns_are_told_apart_from_other_segments() {
        let mut v4 = vec![0u8; 40];
        v4[0] = 0x45;
        v4[9] = 6;
        v4[22..24].copy_from_slice(&8080u16.to_be_bytes());
        v4[33] = 0x02;
        assert_eq!(syn_port(&v4), Some(8080));
        v4[33] = 0x12; // SYN-ACK
        assert_eq!(syn_port(&v4), None);
        v4[33] = 0x02;
        v4[9] = 17; // UDP
        assert_eq!(syn_port(&v4), None);

        let mut v6 = vec![0u8; 60];
        v6[0] = 0x60;
        v6[6] = 6;
        v6[42..44].copy_from_slice(&443u16.to_be_bytes());
        v6[53] = 0x02;
        assert_eq!(syn_port(&v6), Some(443));
        assert_eq!(syn_port(&v6[..50]), None);
        assert_eq!(syn_port(&[]), None);
    }
}
