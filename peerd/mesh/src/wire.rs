//! Control-plane datagrams. They share the WireGuard UDP port: WireGuard messages start with a
//! type byte of 1–4, ours with [`MAGIC`].
//!
//! - `Hello` (clear): a signed record and the sender's membership identity. It needs no prior
//!   trust: the record authenticates itself through its certificate chain. Used to join through
//!   seeds and to introduce nodes that do not know each other yet.
//! - `Sealed`: everything else (SWIM traffic, record pushes, digests, pulls), encrypted and
//!   authenticated with ChaCha20-Poly1305 under a key both ends derive from their WireGuard keys
//!   (X25519 static-static, then HKDF), as Tailscale's disco does. Only nodes whose records we
//!   verified can speak it, so nobody outside the mesh can suspect or kill a member.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use overlay::{PrivateKey, PublicKey};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

use crate::member::Member;
use crate::record::SignedRecord;

/// First byte of every control datagram (WireGuard's are 1–4).
pub const MAGIC: u8 = 0x50;
/// Protocol version (second byte).
pub const VERSION: u8 = 1;
const HELLO: u8 = 1;
const SEALED: u8 = 2;
/// Bytes in front of a sealed payload: magic, version, type, sender key, timestamp, nonce.
const SEALED_HEADER: usize = 3 + 32 + 8 + 12;
/// Sealed messages older or newer than this are refused (replay window).
pub const MAX_SKEW: Duration = Duration::from_secs(60);
/// Largest control datagram we send or accept.
pub const MAX_DATAGRAM: usize = 16 * 1024;

/// An unsealed introduction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's membership identity.
    pub member: Member,
    /// The sender's own signed record.
    pub record: SignedRecord,
    /// Whether the receiver should answer with its own `Hello`.
    pub reply: bool,
}

/// What travels inside a sealed datagram.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Sealed {
    /// A SWIM message for foca.
    Swim(Vec<u8>),
    /// Records, pushed by their origin or sent in answer to a digest or a want list.
    Records(Vec<SignedRecord>),
    /// `(digest key, version)` of every record the sender holds (anti-entropy).
    Digest(Vec<(u64, u64)>),
    /// Digest keys of records the sender wants.
    Want(Vec<u64>),
}

/// A decoded datagram.
#[derive(Debug)]
pub enum Message {
    /// An introduction.
    Hello(Hello),
    /// A sealed message and its authenticated sender.
    Sealed { from: PublicKey, body: Sealed },
}

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not one of ours, or cut short.
    #[error("malformed control datagram")]
    Malformed,
    /// A version we do not speak.
    #[error("unknown control protocol version")]
    Version,
    /// Sealed by a node we have no verified record of.
    #[error("sealed by an unknown node")]
    UnknownSender,
    /// Authentication failed.
    #[error("sealed datagram fails authentication")]
    Auth,
    /// Outside the replay window.
    #[error("sealed datagram too old or from the future")]
    Stale,
}

impl WireError {
    /// A stable snake_case reason for counters.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Version => "version",
            Self::UnknownSender => "unknown_sender",
            Self::Auth => "auth",
            Self::Stale => "stale",
        }
    }
}

/// Whether a datagram is a control datagram rather than a WireGuard message.
pub fn is_control(datagram: &[u8]) -> bool {
    datagram.first() == Some(&MAGIC)
}

/// Encodes a `Hello`.
pub fn encode_hello(hello: &Hello) -> Vec<u8> {
    let mut out = vec![MAGIC, VERSION, HELLO];
    out.extend_from_slice(&postcard::to_allocvec(hello).expect("hello always encodes"));
    out
}

/// Per-peer sealing keys, derived once per peer.
pub struct Sealer {
    private: PrivateKey,
    public: PublicKey,
    keys: std::collections::HashMap<PublicKey, LessSafeKey>,
}

impl Sealer {
    /// A sealer for the node holding `private`.
    pub fn new(private: PrivateKey) -> Self {
        Self {
            public: private.public_key(),
            private,
            keys: Default::default(),
        }
    }

    /// Seals `body` for `to`.
    pub fn seal(&mut self, to: &PublicKey, body: &Sealed, now: SystemTime) -> Vec<u8> {
        let plain = postcard::to_allocvec(body).expect("sealed bodies always encode");
        let mut out = Vec::with_capacity(SEALED_HEADER + plain.len() + 16);
        out.extend_from_slice(&[MAGIC, VERSION, SEALED]);
        out.extend_from_slice(self.public.as_bytes());
        out.extend_from_slice(&unix_millis(now).to_le_bytes());
        let mut nonce = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        out.extend_from_slice(&nonce);
        let mut sealed = plain;
        let key = self.key(to);
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&out[..]),
            &mut sealed,
        )
        .expect("sealing a bounded message cannot fail");
        out.extend_from_slice(&sealed);
        out
    }

    /// Decodes a datagram. `known` says whether a sender key belongs to a verified node.
    pub fn open(
        &mut self,
        datagram: &[u8],
        now: SystemTime,
        known: impl Fn(&PublicKey) -> bool,
    ) -> Result<Message, WireError> {
        if datagram.len() < 3 || datagram[0] != MAGIC || datagram.len() > MAX_DATAGRAM {
            return Err(WireError::Malformed);
        }
        if datagram[1] != VERSION {
            return Err(WireError::Version);
        }
        match datagram[2] {
            HELLO => postcard::from_bytes(&datagram[3..])
                .map(Message::Hello)
                .map_err(|_| WireError::Malformed),
            SEALED if datagram.len() >= SEALED_HEADER + 16 => {
                let (header, ciphertext) = datagram.split_at(SEALED_HEADER);
                let from = PublicKey::from_bytes(
                    header[3..35].try_into().map_err(|_| WireError::Malformed)?,
                );
                if !known(&from) {
                    return Err(WireError::UnknownSender);
                }
                let sent = u64::from_le_bytes(
                    header[35..43]
                        .try_into()
                        .map_err(|_| WireError::Malformed)?,
                );
                if unix_millis(now).abs_diff(sent) > MAX_SKEW.as_millis() as u64 {
                    return Err(WireError::Stale);
                }
                let nonce: [u8; 12] = header[43..55]
                    .try_into()
                    .map_err(|_| WireError::Malformed)?;
                let mut buf = ciphertext.to_vec();
                let plain = self
                    .key(&from)
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(header),
                        &mut buf,
                    )
                    .map_err(|_| WireError::Auth)?;
                let body = postcard::from_bytes(plain).map_err(|_| WireError::Malformed)?;
                Ok(Message::Sealed { from, body })
            }
            _ => Err(WireError::Malformed),
        }
    }

    fn key(&mut self, peer: &PublicKey) -> &LessSafeKey {
        let private = &self.private;
        self.keys.entry(*peer).or_insert_with(|| {
            let shared = private.diffie_hellman(peer);
            let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"peerd-control-v1");
            let prk = salt.extract(&shared);
            let okm = prk
                .expand(&[b"seal"], &CHACHA20_POLY1305)
                .expect("32-byte output is valid");
            LessSafeKey::new(UnboundKey::from(okm))
        })
    }

    /// Forgets a peer's key (after its WireGuard key changed).
    pub fn forget(&mut self, peer: &PublicKey) {
        self.keys.remove(peer);
    }
}

fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
