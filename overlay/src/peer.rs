//! One WireGuard peer: its Noise state, endpoint, allowed IPs and counters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::Tunn;
use boringtun::noise::rate_limiter::RateLimiter;
use ipnet::IpNet;

use crate::key::{PresharedKey, PrivateKey, PublicKey};
use crate::stats::Drops;

/// What the owner of a node says about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's static public key: its identity.
    pub public_key: PublicKey,
    /// Optional pre-shared key mixed into the handshake.
    pub preshared_key: Option<PresharedKey>,
    /// Where to send to the peer until it roams.
    pub endpoint: Option<SocketAddr>,
    /// Inner prefixes routed to this peer and accepted from it.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds between keepalives, for peers behind NAT or that must stay always-on.
    pub persistent_keepalive: Option<u16>,
}

impl PeerConfig {
    /// A peer with just a key; fill the other fields as needed.
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            preshared_key: None,
            endpoint: None,
            allowed_ips: Vec::new(),
            persistent_keepalive: None,
        }
    }
}

/// A read-only view of one peer, for status output and the userspace API.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// The endpoint packets go to now (the configured one, or where it roamed).
    pub endpoint: Option<SocketAddr>,
    /// Inner prefixes routed to this peer.
    pub allowed_ips: Vec<IpNet>,
    /// Persistent keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
    /// The pre-shared key, if any.
    pub preshared_key: Option<PresharedKey>,
    /// When the last handshake completed (either direction).
    pub last_handshake: Option<Instant>,
    /// WireGuard bytes received from this peer (authenticated messages).
    pub rx_bytes: u64,
    /// WireGuard bytes sent to this peer.
    pub tx_bytes: u64,
    /// Packets from or to this peer that were dropped, by reason.
    pub drops: Drops,
    /// Round-trip time measured by the last handshake we initiated.
    pub handshake_rtt: Option<Duration>,
}

/// First delay before re-arming a handshake after the previous attempts expired.
pub(crate) const REARM_INITIAL: Duration = Duration::from_secs(1);
/// Longest delay between re-armed handshake attempts.
pub(crate) const REARM_MAX: Duration = Duration::from_secs(30);

pub(crate) struct Peer {
    pub(crate) tunn: Tunn,
    pub(crate) config: PeerConfig,
    pub(crate) index: u32,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) last_handshake: Option<Instant>,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) drops: Drops,
    /// Packets may wait in boringtun's queue for a session.
    pub(crate) maybe_queued: bool,
    /// When to start a new handshake on our own (initial contact, or after expiry).
    pub(crate) rearm_at: Option<Instant>,
    pub(crate) rearm_backoff: Duration,
}

impl Peer {
    pub(crate) fn new(
        private: &PrivateKey,
        config: PeerConfig,
        index: u32,
        limiter: &Arc<RateLimiter>,
    ) -> Self {
        let tunn = new_tunn(private, &config, index, limiter);
        Self {
            tunn,
            endpoint: config.endpoint,
            config,
            index,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            drops: Drops::default(),
            maybe_queued: false,
            rearm_at: None,
            rearm_backoff: REARM_INITIAL,
        }
    }

    /// Rebuilds the Noise state (after a key, pre-shared key or keepalive change). Sessions are
    /// lost; the next packet starts a handshake.
    pub(crate) fn rebuild(&mut self, private: &PrivateKey, limiter: &Arc<RateLimiter>) {
        self.tunn = new_tunn(private, &self.config, self.index, limiter);
        self.last_handshake = None;
        self.maybe_queued = false;
    }

    /// Always-on peers keep a session up without waiting for traffic.
    pub(crate) fn always_on(&self) -> bool {
        self.config.persistent_keepalive.is_some() && self.endpoint.is_some()
    }

    pub(crate) fn handshake_done(&mut self, now: Instant) {
        self.last_handshake = Some(now);
        self.rearm_at = None;
        self.rearm_backoff = REARM_INITIAL;
        self.maybe_queued = true;
    }

    pub(crate) fn status(&self) -> PeerStatus {
        let (_, _, _, _, rtt) = self.tunn.stats();
        PeerStatus {
            public_key: self.config.public_key,
            endpoint: self.endpoint,
            allowed_ips: self.config.allowed_ips.clone(),
            persistent_keepalive: self.config.persistent_keepalive,
            preshared_key: self.config.preshared_key,
            last_handshake: self.last_handshake,
            rx_bytes: self.rx_bytes,
            tx_bytes: self.tx_bytes,
            drops: self.drops.clone(),
            handshake_rtt: rtt.map(|ms| Duration::from_millis(u64::from(ms))),
        }
    }
}

fn new_tunn(
    private: &PrivateKey,
    config: &PeerConfig,
    index: u32,
    limiter: &Arc<RateLimiter>,
) -> Tunn {
    Tunn::new(
        private.secret().clone(),
        config.public_key.to_x25519(),
        config.preshared_key.map(|k| k.0),
        config.persistent_keepalive,
        index,
        Some(Arc::clone(limiter)),
    )
}
