//! WireGuard keys in the forms users and tools exchange them: standard base64 (as `wg genkey`
//! and `wg pubkey` print them) and lowercase hex (the userspace API).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use boringtun::x25519;

/// Why a key string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 44 characters of standard base64 decoding to 32 bytes.
    #[error("key is not 32 bytes of base64 (as `wg genkey` prints)")]
    Base64,
    /// Not 64 hex digits.
    #[error("key is not 64 hex digits")]
    Hex,
}

/// A Curve25519 private key. Its `Debug` form never shows the secret.
#[derive(Clone)]
pub struct PrivateKey(x25519::StaticSecret);

/// A Curve25519 public key: the identity of a WireGuard peer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

/// A 32-byte pre-shared symmetric key (WireGuard's optional post-quantum layer).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PresharedKey(pub [u8; 32]);

impl PrivateKey {
    /// A new random key, clamped as `wg genkey` clamps it.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        Self::from_bytes(clamp(bytes))
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(x25519::StaticSecret::from(bytes))
    }

    /// Parses standard base64, trimming surrounding whitespace (key files end with a newline).
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_base64(text).map(Self::from_bytes)
    }

    /// Parses 64 hex digits (the userspace API form).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        decode_hex(text).map(Self::from_bytes)
    }

    /// The raw key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Standard base64, as `wg genkey` prints it.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0.to_bytes())
    }

    /// Lowercase hex, as the userspace API prints it.
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0.to_bytes())
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(*x25519::PublicKey::from(&self.0).as_bytes())
    }

    /// The X25519 shared secret with `peer` (the same on both sides). Control planes derive
    /// per-pair keys from it; WireGuard sessions never use it directly.
    pub fn diffie_hellman(&self, peer: &PublicKey) -> [u8; 32] {
        self.0.diffie_hellman(&peer.to_x25519()).to_bytes()
    }

    pub(crate) fn secret(&self) -> &x25519::StaticSecret {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public={})", self.public_key())
    }
}

impl PublicKey {
    /// Wraps raw key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits (the userspace API form).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        decode_hex(text).map(Self)
    }

    /// Lowercase hex, as the userspace API prints it.
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }

    pub(crate) fn to_x25519(self) -> x25519::PublicKey {
        x25519::PublicKey::from(self.0)
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(text: &str) -> Result<Self, KeyError> {
        decode_base64(text).map(Self)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl PresharedKey {
    /// Parses standard base64.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_base64(text).map(Self)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        decode_hex(text).map(Self)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(..)")
    }
}

/// Curve25519 clamping (RFC 7748 §5), applied by `wg genkey` before printing.
fn clamp(mut bytes: [u8; 32]) -> [u8; 32] {
    bytes[0] &= 248;
    bytes[31] &= 127;
    bytes[31] |= 64;
    bytes
}

fn decode_base64(text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    if text.len() != 44 {
        return Err(KeyError::Base64);
    }
    let mut out = [0u8; 33];
    match BASE64.decode_slice(text, &mut out) {
        Ok(32) => Ok(out[..32].try_into().expect("length checked")),
        _ => Err(KeyError::Base64),
    }
}

fn decode_hex(text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return Err(KeyError::Hex);
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16).ok_or(KeyError::Hex)?;
        let lo = (pair[1] as char).to_digit(16).ok_or(KeyError::Hex)?;
        *byte = (hi << 4 | lo) as u8;
    }
    Ok(out)
}

fn encode_hex(bytes: &[u8; 32]) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(64);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vector from RFC 7748 §6.1 (Alice's key pair).
    const ALICE_PRIVATE_HEX: &str =
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const ALICE_PUBLIC_HEX: &str =
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    #[test]
    fn public_key_matches_rfc7748_vector() {
        let private = PrivateKey::from_hex(ALICE_PRIVATE_HEX).unwrap();
        assert_eq!(private.public_key().to_hex(), ALICE_PUBLIC_HEX);
    }

    #[test]
    fn base64_and_hex_round_trip() {
        let private = PrivateKey::generate();
        let again = PrivateKey::from_base64(&format!("{}\n", private.to_base64())).unwrap();
        assert_eq!(again.to_bytes(), private.to_bytes());
        assert_eq!(
            PrivateKey::from_hex(&private.to_hex()).unwrap().to_bytes(),
            private.to_bytes()
        );
        let public = private.public_key();
        assert_eq!(public.to_string().parse::<PublicKey>().unwrap(), public);
        assert_eq!(PublicKey::from_hex(&public.to_hex()).unwrap(), public);
    }

    #[test]
    fn both_sides_derive_the_same_shared_secret() {
        let (a, b) = (PrivateKey::generate(), PrivateKey::generate());
        assert_eq!(
            a.diffie_hellman(&b.public_key()),
            b.diffie_hellman(&a.public_key())
        );
        let c = PrivateKey::generate();
        assert_ne!(
            a.diffie_hellman(&b.public_key()),
            a.diffie_hellman(&c.public_key())
        );
    }

    #[test]
    fn generated_keys_are_clamped() {
        let bytes = PrivateKey::generate().to_bytes();
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 128, 0);
        assert_eq!(bytes[31] & 64, 64);
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!("".parse::<PublicKey>(), Err(KeyError::Base64));
        assert_eq!("not a key".parse::<PublicKey>(), Err(KeyError::Base64));
        // 33 bytes of base64 with the right length but a bad final character.
        assert!(
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==x"
                .parse::<PublicKey>()
                .is_err()
        );
        assert_eq!(PublicKey::from_hex("zz"), Err(KeyError::Hex));
        assert_eq!(PublicKey::from_hex(&"g".repeat(64)), Err(KeyError::Hex));
    }
}
