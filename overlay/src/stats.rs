//! Counters: why packets were dropped, per node and per peer.

use std::fmt;

/// Why a packet was dropped. Every drop on the data path is counted under one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// A datagram that is not a well-formed WireGuard message.
    Malformed,
    /// A handshake message whose MAC1 does not verify (not meant for us, or forged).
    InvalidMac,
    /// A valid handshake initiation from a public key that is not a configured peer.
    UnknownPeer,
    /// A data, response or cookie message whose receiver index belongs to no peer.
    UnknownIndex,
    /// A handshake message rejected by the Noise state machine (replayed timestamp, bad key).
    HandshakeRejected,
    /// A data message that fails authentication or has no matching session.
    Decrypt,
    /// A data message whose counter was already seen or is outside the replay window.
    Replay,
    /// A decrypted packet that is not a valid IPv4 or IPv6 packet.
    InvalidInner,
    /// A decrypted packet whose inner source is outside the sending peer's allowed IPs
    /// (the crypto-RP filter).
    SourceNotAllowed,
    /// A handshake answered with a cookie because the node is under load.
    UnderLoad,
    /// An outbound packet whose destination matches no peer's allowed IPs.
    NoRoute,
    /// An outbound packet for a peer whose endpoint is not yet known.
    NoEndpoint,
    /// An outbound packet that is not IPv4 or IPv6.
    InvalidOutbound,
    /// A packet the host refused to send or deliver (socket or TUN write error).
    Io,
}

impl DropReason {
    /// Every reason, in a stable order.
    pub const ALL: [DropReason; 14] = [
        Self::Malformed,
        Self::InvalidMac,
        Self::UnknownPeer,
        Self::UnknownIndex,
        Self::HandshakeRejected,
        Self::Decrypt,
        Self::Replay,
        Self::InvalidInner,
        Self::SourceNotAllowed,
        Self::UnderLoad,
        Self::NoRoute,
        Self::NoEndpoint,
        Self::InvalidOutbound,
        Self::Io,
    ];

    /// The snake_case name used in status output and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::InvalidMac => "invalid_mac",
            Self::UnknownPeer => "unknown_peer",
            Self::UnknownIndex => "unknown_index",
            Self::HandshakeRejected => "handshake_rejected",
            Self::Decrypt => "decrypt",
            Self::Replay => "replay",
            Self::InvalidInner => "invalid_inner",
            Self::SourceNotAllowed => "source_not_allowed",
            Self::UnderLoad => "under_load",
            Self::NoRoute => "no_route",
            Self::NoEndpoint => "no_endpoint",
            Self::InvalidOutbound => "invalid_outbound",
            Self::Io => "io",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Drop counters, one per [`DropReason`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drops([u64; DropReason::ALL.len()]);

impl Drops {
    /// Counts one drop.
    pub fn add(&mut self, reason: DropReason) {
        self.0[reason as usize] += 1;
    }

    /// Drops counted for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Non-zero counters in stable order.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .into_iter()
            .map(|r| (r, self.get(r)))
            .filter(|(_, n)| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_own_counter() {
        for (i, r) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "{r} out of order");
        }
        let mut d = Drops::default();
        d.add(DropReason::Replay);
        d.add(DropReason::Replay);
        d.add(DropReason::NoRoute);
        assert_eq!(d.get(DropReason::Replay), 2);
        assert_eq!(d.total(), 3);
        assert_eq!(
            d.nonzero().collect::<Vec<_>>(),
            [(DropReason::Replay, 2), (DropReason::NoRoute, 1)]
        );
    }
}
