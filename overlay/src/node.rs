//! The sans-IO core of a WireGuard node: a peer table with cryptokey routing around
//! boringtun's `noise::Tunn`. Callers hand it packets and the current time; it hands back
//! packets to send and the next deadline. It owns no sockets, clocks or threads.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;

use crate::allowed_ips::AllowedIps;
use crate::key::{PrivateKey, PublicKey};
use crate::peer::{Peer, PeerConfig, PeerStatus, REARM_MAX};
use crate::stats::{DropReason, Drops};

/// Smallest buffer that `encapsulate`, `decapsulate` and `poll_transmit` accept: boringtun
/// panics on buffers shorter than a handshake initiation.
pub const MIN_BUFFER: usize = 148;
/// Bytes WireGuard adds to an inner packet (header, counter and tag).
pub const OVERHEAD: usize = 32;

/// How often boringtun's timers are advanced (the WireGuard paper's timers have 1 s or coarser
/// resolution; a steady 100 ms tick keeps retries and keepalives on time).
const TICK: Duration = Duration::from_millis(100);
/// How long the node with the larger key waits before its first handshake with a new peer.
const YIELD_FIRST_HANDSHAKE: Duration = Duration::from_millis(1500);
/// The shared handshake rate limiter's window (boringtun expects `reset_count` every second).
const LIMITER_WINDOW: Duration = Duration::from_secs(1);
/// Handshake messages a node accepts per second before it demands cookies. Each message is
/// counted twice (once by the node, once inside `Tunn`), so this is twice the effective limit.
const HANDSHAKE_RATE_LIMIT: u64 = 200;

/// Identifies a peer inside one [`Node`]: the 24-bit index boringtun puts in its session ids.
pub type PeerId = u32;

/// Where an outbound inner packet goes.
#[derive(Debug)]
pub enum Outbound<'a> {
    /// Send `packet` (a data message or a handshake initiation) to `to`.
    Send {
        peer: PeerId,
        to: SocketAddr,
        packet: &'a [u8],
    },
    /// The packet waits for a handshake already under way.
    Queued { peer: PeerId },
    /// The packet was dropped and counted.
    Dropped(DropReason),
}

/// What became of an inbound datagram.
#[derive(Debug)]
pub enum Inbound<'a> {
    /// Deliver the decrypted inner packet to the host.
    Tunnel { peer: PeerId, packet: &'a [u8] },
    /// Send `packet` (handshake response, cookie, keepalive) back to the network.
    Network { to: SocketAddr, packet: &'a [u8] },
    /// Consumed with nothing to deliver (a keepalive or a cookie reply).
    Done,
    /// Dropped and counted.
    Dropped(DropReason),
}

/// A packet the node wants sent, produced by [`Node::poll_transmit`].
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Peer it belongs to.
    pub peer: PeerId,
    /// Destination endpoint.
    pub to: SocketAddr,
    /// The WireGuard message.
    pub packet: &'a [u8],
}

/// Errors from changing a node's peers.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A peer cannot use the node's own public key.
    #[error("peer {0} has this node's own public key")]
    OwnKey(PublicKey),
    /// All 2^24 peer indices are in use.
    #[error("no free peer index")]
    NoIndex,
}

/// A WireGuard node: its private key and every peer, without any IO.
pub struct Node {
    private: PrivateKey,
    public: PublicKey,
    limiter: Arc<RateLimiter>,
    peers: HashMap<PeerId, Peer>,
    by_key: HashMap<PublicKey, PeerId>,
    routes: AllowedIps<PeerId>,
    next_index: u32,
    drops: Drops,
    next_tick: Instant,
    next_limiter_reset: Instant,
    /// Timer-driven messages (handshake retries, keepalives), rare enough to own their bytes.
    timer_out: VecDeque<(PeerId, SocketAddr, Vec<u8>)>,
    /// Peers whose queued packets may now be sent.
    drain: Vec<PeerId>,
    /// The last outbound destination and inbound source looked up (bulk flows repeat them).
    route_cache: [Option<(IpAddr, PeerId)>; 2],
}

/// Slots of [`Node::route_cache`].
const DST: usize = 0;
const SRC: usize = 1;

impl Node {
    /// A node with no peers.
    pub fn new(private: PrivateKey, now: Instant) -> Self {
        let public = private.public_key();
        Self {
            limiter: new_limiter(&public),
            private,
            public,
            peers: HashMap::new(),
            by_key: HashMap::new(),
            routes: AllowedIps::new(),
            next_index: rand::random::<u32>() & 0x00ff_ffff,
            drops: Drops::default(),
            next_tick: now,
            next_limiter_reset: now + LIMITER_WINDOW,
            timer_out: VecDeque::new(),
            drain: Vec::new(),
            route_cache: [None; 2],
        }
    }

    /// This node's public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// This node's private key.
    pub fn private_key(&self) -> &PrivateKey {
        &self.private
    }

    /// Replaces the node's private key. Every session is dropped; peers re-handshake.
    pub fn set_private_key(&mut self, private: PrivateKey) {
        self.public = private.public_key();
        self.private = private;
        self.limiter = new_limiter(&self.public);
        if let Some(own) = self.by_key.get(&self.public).copied() {
            // WireGuard removes a peer whose key equals the new interface key.
            self.remove_peer_by_id(own);
        }
        for peer in self.peers.values_mut() {
            let public = x25519::PublicKey::from(*self.public.as_bytes());
            peer.tunn.set_static_private(
                self.private.secret().clone(),
                public,
                Some(Arc::clone(&self.limiter)),
            );
            peer.last_handshake = None;
        }
    }

    /// Adds a peer, or updates the one with the same public key. Returns its id.
    ///
    /// A changed pre-shared key or keepalive rebuilds the peer's Noise state; a changed endpoint
    /// or set of allowed IPs takes effect at once. A new peer with an endpoint starts a handshake
    /// on the next [`Node::handle_timeout`].
    pub fn upsert_peer(&mut self, config: PeerConfig, now: Instant) -> Result<PeerId, NodeError> {
        if config.public_key == self.public {
            return Err(NodeError::OwnKey(config.public_key));
        }
        let id = match self.by_key.get(&config.public_key) {
            Some(&id) => {
                let peer = self.peers.get_mut(&id).expect("by_key and peers agree");
                let rebuild = peer.config.preshared_key != config.preshared_key
                    || peer.config.persistent_keepalive != config.persistent_keepalive;
                if config.endpoint.is_some() {
                    peer.endpoint = config.endpoint;
                }
                peer.config = config;
                if rebuild {
                    peer.rebuild(&self.private, &self.limiter);
                }
                id
            }
            None => {
                let id = self.allocate_index()?;
                let mut peer = Peer::new(&self.private, config, id, &self.limiter);
                if peer.endpoint.is_some() {
                    // When two nodes learn of each other at the same moment, both initiating
                    // makes each reset its own handshake on the other's initiation, and neither
                    // completes until the 5 s retry. The smaller key goes first; the other waits.
                    let wait = if self.public < peer.config.public_key {
                        Duration::ZERO
                    } else {
                        YIELD_FIRST_HANDSHAKE
                    };
                    peer.rearm_at = Some(now + wait);
                }
                self.by_key.insert(peer.config.public_key, id);
                self.peers.insert(id, peer);
                id
            }
        };
        self.route_cache = [None; 2];
        self.routes.retain(|_, owner| *owner != id);
        let nets = self.peers[&id].config.allowed_ips.clone();
        for net in nets {
            // WireGuard semantics: a prefix belongs to the last peer that claimed it.
            if let Some(previous) = self.routes.insert(net, id)
                && previous != id
                && let Some(loser) = self.peers.get_mut(&previous)
            {
                loser
                    .config
                    .allowed_ips
                    .retain(|n| n.trunc() != net.trunc());
            }
        }
        Ok(id)
    }

    /// Removes the peer with `key`. Returns whether it existed.
    pub fn remove_peer(&mut self, key: &PublicKey) -> bool {
        match self.by_key.get(key).copied() {
            Some(id) => {
                self.remove_peer_by_id(id);
                true
            }
            None => false,
        }
    }

    /// Removes every peer.
    pub fn clear_peers(&mut self) {
        self.peers.clear();
        self.by_key.clear();
        self.routes = AllowedIps::new();
        self.route_cache = [None; 2];
        self.drain.clear();
        self.timer_out.clear();
    }

    /// The id of the peer with `key`.
    pub fn peer_id(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// A snapshot of one peer.
    pub fn peer_status(&self, id: PeerId) -> Option<PeerStatus> {
        self.peers.get(&id).map(Peer::status)
    }

    /// Snapshots of every peer, ordered by public key.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let mut all: Vec<_> = self.peers.values().map(Peer::status).collect();
        all.sort_by_key(|p| p.public_key);
        all
    }

    /// Drops counted against no particular peer.
    pub fn drops(&self) -> &Drops {
        &self.drops
    }

    /// Counts a drop the IO shell saw (a failed socket or TUN write).
    pub fn count_drop(&mut self, reason: DropReason) {
        self.drops.add(reason);
    }

    /// The peer whose allowed IPs contain `addr`.
    pub fn route(&self, addr: IpAddr) -> Option<PeerId> {
        self.routes.lookup(addr).copied()
    }

    /// Encrypts an inner IP packet for the peer that owns its destination.
    ///
    /// `out` must be at least `packet.len() + OVERHEAD` and at least [`MIN_BUFFER`] bytes.
    pub fn encapsulate<'a>(
        &mut self,
        packet: &[u8],
        out: &'a mut [u8],
        _now: Instant,
    ) -> Outbound<'a> {
        let Some(dst) = Tunn::dst_address(packet) else {
            self.drops.add(DropReason::InvalidOutbound);
            return Outbound::Dropped(DropReason::InvalidOutbound);
        };
        let Some(id) = self.cached_route(DST, dst) else {
            self.drops.add(DropReason::NoRoute);
            return Outbound::Dropped(DropReason::NoRoute);
        };
        let peer = self.peers.get_mut(&id).expect("routes point at live peers");
        let Some(to) = peer.endpoint else {
            peer.drops.add(DropReason::NoEndpoint);
            return Outbound::Dropped(DropReason::NoEndpoint);
        };
        if out.len() < MIN_BUFFER.max(packet.len() + OVERHEAD) {
            peer.drops.add(DropReason::Io);
            return Outbound::Dropped(DropReason::Io);
        }
        match peer.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(wire) => {
                if wire.first() == Some(&HANDSHAKE_INIT) {
                    // No session yet: the packet itself waits in boringtun's queue.
                    peer.maybe_queued = true;
                }
                peer.tx_bytes += wire.len() as u64;
                Outbound::Send {
                    peer: id,
                    to,
                    packet: wire,
                }
            }
            TunnResult::Done => {
                peer.maybe_queued = true;
                Outbound::Queued { peer: id }
            }
            TunnResult::Err(error) => {
                tracing::debug!(peer = %peer.config.public_key, ?error, "encapsulate failed");
                peer.drops.add(DropReason::Io);
                Outbound::Dropped(DropReason::Io)
            }
            TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {
                unreachable!("encapsulate never writes to the tunnel")
            }
        }
    }

    /// Handles one datagram received from `from`.
    ///
    /// `out` must be at least as long as the datagram and at least [`MIN_BUFFER`] bytes. After
    /// a batch, call [`Node::poll_transmit`] until it returns `None`: packets queued during a
    /// handshake leave then.
    pub fn decapsulate<'a>(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        out: &'a mut [u8],
        now: Instant,
    ) -> Inbound<'a> {
        if out.len() < MIN_BUFFER.max(datagram.len()) {
            self.drops.add(DropReason::Io);
            return Inbound::Dropped(DropReason::Io);
        }
        // MACs first (cheap), so that forged handshakes never cost a Diffie-Hellman.
        let mut cookie = [0u8; COOKIE_REPLY_LEN];
        let packet = match self
            .limiter
            .verify_packet(Some(from.ip()), datagram, &mut cookie)
        {
            Ok(packet) => packet,
            Err(TunnResult::WriteToNetwork(reply)) => {
                let len = reply.len();
                self.drops.add(DropReason::UnderLoad);
                out[..len].copy_from_slice(&cookie[..len]);
                return Inbound::Network {
                    to: from,
                    packet: &out[..len],
                };
            }
            Err(TunnResult::Err(error)) => {
                let reason = match error {
                    WireGuardError::InvalidMac => DropReason::InvalidMac,
                    WireGuardError::UnderLoad => DropReason::UnderLoad,
                    _ => DropReason::Malformed,
                };
                self.drops.add(reason);
                return Inbound::Dropped(reason);
            }
            Err(_) => {
                self.drops.add(DropReason::Malformed);
                return Inbound::Dropped(DropReason::Malformed);
            }
        };
        let (id, authenticates) = match &packet {
            Packet::HandshakeInit(init) => {
                let public = x25519::PublicKey::from(*self.public.as_bytes());
                match parse_handshake_anon(self.private.secret(), &public, init) {
                    Ok(half) => match self
                        .by_key
                        .get(&PublicKey::from_bytes(half.peer_static_public))
                    {
                        Some(&id) => (id, true),
                        None => {
                            self.drops.add(DropReason::UnknownPeer);
                            return Inbound::Dropped(DropReason::UnknownPeer);
                        }
                    },
                    Err(_) => {
                        self.drops.add(DropReason::HandshakeRejected);
                        return Inbound::Dropped(DropReason::HandshakeRejected);
                    }
                }
            }
            Packet::HandshakeResponse(p) => (p.receiver_idx >> 8, true),
            Packet::PacketData(p) => (p.receiver_idx >> 8, true),
            Packet::PacketCookieReply(p) => (p.receiver_idx >> 8, false),
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            self.drops.add(DropReason::UnknownIndex);
            return Inbound::Dropped(DropReason::UnknownIndex);
        };
        let result = peer.tunn.decapsulate(Some(from.ip()), datagram, out);
        if !matches!(result, TunnResult::Err(_)) && authenticates {
            // Roaming (WireGuard paper §2.1): only authenticated messages move the endpoint.
            if peer.endpoint != Some(from) {
                tracing::debug!(peer = %peer.config.public_key, %from, "peer roamed");
                peer.endpoint = Some(from);
            }
            peer.rx_bytes += datagram.len() as u64;
        }
        match result {
            TunnResult::WriteToTunnelV4(inner, src) => self.accept_inner(id, src.into(), inner),
            TunnResult::WriteToTunnelV6(inner, src) => self.accept_inner(id, src.into(), inner),
            TunnResult::WriteToNetwork(reply) => {
                // A handshake response we send, or the keepalive that confirms one we received:
                // either way a new session exists. A cookie reply from inside `Tunn` is not one.
                if reply.first() != Some(&COOKIE_REPLY) {
                    peer.handshake_done(now);
                    peer.tx_bytes += reply.len() as u64;
                    self.drain.push(id);
                }
                Inbound::Network {
                    to: from,
                    packet: reply,
                }
            }
            TunnResult::Done => {
                if peer.maybe_queued && authenticates {
                    self.drain.push(id);
                }
                Inbound::Done
            }
            TunnResult::Err(error) => {
                let reason = classify(&error);
                tracing::trace!(peer = %peer.config.public_key, ?error, "datagram dropped");
                peer.drops.add(reason);
                Inbound::Dropped(reason)
            }
        }
    }

    /// The next packet the node wants sent: queued packets released by a handshake, then
    /// handshake retries and keepalives produced by timers. `out` must hold a full packet plus
    /// [`OVERHEAD`] (and at least [`MIN_BUFFER`] bytes).
    pub fn poll_transmit<'a>(&mut self, out: &'a mut [u8]) -> Option<Transmit<'a>> {
        while let Some(&id) = self.drain.last() {
            if let Some(peer) = self.peers.get_mut(&id)
                && let Some(to) = peer.endpoint
            {
                // boringtun hands out one queued packet per call with an empty datagram.
                let len = match peer.tunn.decapsulate(None, &[], out) {
                    TunnResult::WriteToNetwork(wire) => Some(wire.len()),
                    _ => None,
                };
                if let Some(len) = len {
                    peer.tx_bytes += len as u64;
                    return Some(Transmit {
                        peer: id,
                        to,
                        packet: &out[..len],
                    });
                }
                peer.maybe_queued = false;
            }
            self.drain.pop();
        }
        let (peer, to, bytes) = self.timer_out.pop_front()?;
        let len = bytes.len().min(out.len());
        out[..len].copy_from_slice(&bytes[..len]);
        Some(Transmit {
            peer,
            to,
            packet: &out[..len],
        })
    }

    /// Advances timers: handshake retries, rekeys, keepalives, expiry, re-arming always-on
    /// peers, and the rate limiter's window. Resulting packets come out of
    /// [`Node::poll_transmit`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_limiter_reset {
            self.limiter.reset_count();
            self.next_limiter_reset = now + LIMITER_WINDOW;
        }
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        let mut buf = [0u8; MIN_BUFFER];
        for (&id, peer) in &mut self.peers {
            let mut wire = None;
            match peer.tunn.update_timers(&mut buf) {
                TunnResult::WriteToNetwork(packet) => wire = Some(packet.to_vec()),
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    peer.maybe_queued = false;
                    if peer.always_on() && peer.rearm_at.is_none() {
                        peer.rearm_at = Some(now + peer.rearm_backoff);
                    }
                }
                TunnResult::Err(error) => {
                    tracing::debug!(peer = %peer.config.public_key, ?error, "timer error");
                }
                _ => {}
            }
            if wire.is_none()
                && let Some(at) = peer.rearm_at
                && at <= now
            {
                peer.rearm_at = None;
                if let TunnResult::WriteToNetwork(packet) =
                    peer.tunn.format_handshake_initiation(&mut buf, false)
                {
                    wire = Some(packet.to_vec());
                }
                if peer.always_on() {
                    peer.rearm_at = Some(now + peer.rearm_backoff);
                    peer.rearm_backoff = (peer.rearm_backoff * 2).min(REARM_MAX);
                }
            }
            if let Some(wire) = wire {
                match peer.endpoint {
                    Some(to) => {
                        peer.tx_bytes += wire.len() as u64;
                        self.timer_out.push_back((id, to, wire));
                    }
                    None => peer.drops.add(DropReason::NoEndpoint),
                }
            }
        }
    }

    /// When [`Node::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick.min(self.next_limiter_reset)
    }

    fn accept_inner<'a>(&mut self, id: PeerId, src: IpAddr, inner: &'a mut [u8]) -> Inbound<'a> {
        // The crypto-RP filter: boringtun does not check that the inner source belongs to the
        // peer that encrypted the packet (WireGuard paper §2, "Cryptokey Routing").
        if self.cached_route(SRC, src) != Some(id) {
            let peer = self.peers.get_mut(&id).expect("caller checked");
            peer.drops.add(DropReason::SourceNotAllowed);
            tracing::trace!(peer = %peer.config.public_key, %src, "inner source not allowed");
            return Inbound::Dropped(DropReason::SourceNotAllowed);
        }
        let peer = self.peers.get_mut(&id).expect("caller checked");
        if peer.maybe_queued {
            self.drain.push(id);
        }
        Inbound::Tunnel {
            peer: id,
            packet: inner,
        }
    }

    /// Longest-prefix match through a one-entry cache per direction.
    fn cached_route(&mut self, slot: usize, addr: IpAddr) -> Option<PeerId> {
        if let Some((cached, id)) = self.route_cache[slot]
            && cached == addr
        {
            return Some(id);
        }
        let id = self.routes.lookup(addr).copied()?;
        self.route_cache[slot] = Some((addr, id));
        Some(id)
    }

    fn remove_peer_by_id(&mut self, id: PeerId) {
        self.route_cache = [None; 2];
        if let Some(peer) = self.peers.remove(&id) {
            self.by_key.remove(&peer.config.public_key);
        }
        self.routes.retain(|_, owner| *owner != id);
        self.drain.retain(|d| *d != id);
        self.timer_out.retain(|(p, _, _)| *p != id);
    }

    fn allocate_index(&mut self) -> Result<PeerId, NodeError> {
        for _ in 0..=0x00ff_ffffu32 {
            let candidate = self.next_index;
            self.next_index = (self.next_index + 1) & 0x00ff_ffff;
            if !self.peers.contains_key(&candidate) {
                return Ok(candidate);
            }
        }
        Err(NodeError::NoIndex)
    }
}

fn new_limiter(public: &PublicKey) -> Arc<RateLimiter> {
    Arc::new(RateLimiter::new(
        &x25519::PublicKey::from(*public.as_bytes()),
        HANDSHAKE_RATE_LIMIT,
    ))
}

/// Message types (WireGuard paper §5.4): the first byte of every message.
const HANDSHAKE_INIT: u8 = 1;
const COOKIE_REPLY: u8 = 3;
/// Size of a cookie reply message.
const COOKIE_REPLY_LEN: usize = 64;

fn classify(error: &WireGuardError) -> DropReason {
    match error {
        WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter => DropReason::Replay,
        WireGuardError::InvalidPacket => DropReason::InvalidInner,
        WireGuardError::InvalidAeadTag
        | WireGuardError::NoCurrentSession
        | WireGuardError::WrongIndex
        | WireGuardError::WrongKey => DropReason::Decrypt,
        WireGuardError::InvalidTai64nTimestamp
        | WireGuardError::WrongTai64nTimestamp
        | WireGuardError::UnexpectedPacket
        | WireGuardError::WrongPacketType => DropReason::HandshakeRejected,
        WireGuardError::InvalidMac => DropReason::InvalidMac,
        WireGuardError::UnderLoad => DropReason::UnderLoad,
        _ => DropReason::Malformed,
    }
}

#[cfg(test)]
mod tests;
