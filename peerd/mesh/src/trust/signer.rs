//! A node's own signing identity (its certificate chain and Ed25519 key), and verification
//! of the signatures it makes over published records.

use std::fmt;
use std::path::Path;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use super::{NodeIdentity, TrustError, binding, cert, pemfile};

/// A node's signing identity, loaded from `cert_file` (node certificate, then intermediates)
/// and `key_file` (PKCS#8 Ed25519). It does not verify the chain against the mesh root: peers
/// do that with [`TrustAnchor::verify_chain`](super::TrustAnchor::verify_chain).
pub struct NodeSigner {
    identity: NodeIdentity,
    chain: Vec<Vec<u8>>,
    key: Ed25519KeyPair,
}

impl NodeSigner {
    /// Loads and cross-checks the certificate chain and key: the certificate must carry a
    /// node binding and an Ed25519 key equal to the private key's.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TrustError> {
        let cert_origin = cert_file.display().to_string();
        let chain = pemfile::parse_certs(&pemfile::read(cert_file)?, &cert_origin)?;
        let key_origin = key_file.display().to_string();
        let key_der = pemfile::parse_key(&pemfile::read(key_file)?, &key_origin)?;
        let key =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(&key_der).map_err(|e| TrustError::Key {
                origin: key_origin.clone(),
                reason: format!("not a PKCS#8 Ed25519 key ({e})"),
            })?;
        let leaf_der = chain
            .first()
            .ok_or_else(|| TrustError::malformed("empty chain"))?;
        let leaf = cert::parse(leaf_der)?;
        let identity = binding::read_node(&leaf)?;
        if cert::ed25519_key(&leaf)?.as_slice() != key.public_key().as_ref() {
            return Err(TrustError::KeyMismatch { origin: key_origin });
        }
        Ok(Self {
            identity,
            chain,
            key,
        })
    }

    /// The identity the node certificate binds.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The certificate chain as DER, node certificate first: what peers pass to
    /// [`TrustAnchor::verify_chain`](super::TrustAnchor::verify_chain).
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The node's Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.key.public_key().as_ref());
        out
    }

    /// Signs `message` with the node key (Ed25519, RFC 8032).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.key.sign(message).as_ref());
        out
    }
}

impl fmt::Debug for NodeSigner {
    /// Shows the identity and chain length, never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSigner")
            .field("identity", &self.identity)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Whether `signature` is a valid Ed25519 signature of `message` by `public_key`. Any
/// signature that is not exactly 64 bytes is simply invalid.
pub fn verify_signature(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}
