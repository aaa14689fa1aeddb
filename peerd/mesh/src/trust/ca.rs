//! An issuing CA loaded from disk, and what every issued certificate shares: validity
//! window, subject, random serial, authority key identifier and a fresh Ed25519 key.

use std::path::Path;
use std::time::SystemTime;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, Issuer, KeyPair, PKCS_ED25519, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use super::binding::{self, ClusterBinding};
use super::{TrustError, cert, pemfile};

/// A validity window in unix seconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

/// An issuing CA loaded from `ca.pem` + `ca.key`.
pub(crate) struct Ca {
    pub(crate) origin: String,
    /// The CA certificate first, then its issuers up to (not including) the root.
    chain: Vec<Vec<u8>>,
    key: KeyPair,
    is_root: bool,
    path_len: Option<u32>,
    not_after: i64,
    /// Cluster bindings of every intermediate in `chain`.
    pub(crate) bindings: Vec<ClusterBinding>,
}

impl Ca {
    pub(crate) fn load(ca_dir: &Path) -> Result<Self, TrustError> {
        let (cert_path, key_path) = (ca_dir.join("ca.pem"), ca_dir.join("ca.key"));
        let origin = cert_path.display().to_string();
        let chain = pemfile::parse_certs(&pemfile::read(&cert_path)?, &origin)?;
        let key_origin = key_path.display().to_string();
        let key_der = pemfile::parse_key(&pemfile::read(&key_path)?, &key_origin)?;
        let key = KeyPair::from_pkcs8_der_and_sign_algo(
            &PrivatePkcs8KeyDer::from(key_der),
            &PKCS_ED25519,
        )
        .map_err(|e| TrustError::Key {
            origin: key_origin.clone(),
            reason: e.to_string(),
        })?;
        let mut bindings = Vec::new();
        for der in &chain {
            let c = cert::parse(der)?;
            if cert::ca_path_len(&c).is_none() {
                return Err(TrustError::NotACa { origin });
            }
            if !cert::is_self_issued(&c) {
                let bound = binding::read_cluster(&c)?;
                bindings.push(bound.ok_or_else(|| TrustError::NoBinding {
                    subject: cert::subject_of(&c),
                })?);
            }
        }
        let first = chain
            .first()
            .ok_or_else(|| TrustError::malformed("empty CA file"))?;
        let c = cert::parse(first)?;
        if cert::ed25519_key(&c)? != key.public_key_raw() {
            return Err(TrustError::KeyMismatch { origin: key_origin });
        }
        let (is_root, path_len) = (cert::is_self_issued(&c), cert::ca_path_len(&c).flatten());
        let not_after = cert::not_after_unix(&c);
        Ok(Self {
            is_root: is_root && chain.len() == 1,
            path_len,
            not_after,
            chain,
            origin,
            key,
            bindings,
        })
    }

    /// Whether this CA may sign CA certificates: only a root without a path length of 0.
    pub(crate) fn can_issue_ca(&self) -> bool {
        self.is_root && self.path_len != Some(0)
    }

    /// Cuts `window` short at this CA's own expiry; an empty result is an error.
    pub(crate) fn clamp(&self, window: Window) -> Result<Window, TrustError> {
        let clamped = Window {
            not_before: window.not_before,
            not_after: window.not_after.min(self.not_after),
        };
        if clamped.not_after <= clamped.not_before {
            return Err(TrustError::InvalidValidity {
                reason: format!(
                    "window {}..{} is empty (issuing CA expires at {})",
                    window.not_before, window.not_after, self.not_after
                ),
            });
        }
        Ok(clamped)
    }

    /// Signs `params` for the subject `key`; returns the certificate DER.
    pub(crate) fn sign(
        &self,
        params: &CertificateParams,
        key: &KeyPair,
    ) -> Result<Vec<u8>, TrustError> {
        let ca_der = CertificateDer::from(self.chain.first().map_or(&[][..], Vec::as_slice));
        let issuer = Issuer::from_ca_cert_der(&ca_der, &self.key).map_err(TrustError::issue)?;
        let cert = params.signed_by(key, &issuer).map_err(TrustError::issue)?;
        Ok(cert.der().to_vec())
    }

    /// `leaf` followed by this CA's chain (the root itself is never included).
    pub(crate) fn chain_under(&self, leaf: Vec<u8>) -> Vec<Vec<u8>> {
        let mut out = vec![leaf];
        if !self.is_root {
            out.extend(self.chain.iter().cloned());
        }
        out
    }
}

/// Common parameters: window, subject CN/O, random serial, AKI pointing at the issuer.
pub(crate) fn base_params(
    window: Window,
    cn: &str,
    org: &str,
) -> Result<CertificateParams, TrustError> {
    let time = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| TrustError::InvalidValidity {
            reason: format!("{secs}: {e}"),
        })
    };
    if window.not_before < 0 {
        return Err(TrustError::InvalidValidity {
            reason: "notBefore is before 1970".to_owned(),
        });
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, org);
    let mut params = CertificateParams::default();
    params.not_before = time(window.not_before)?;
    params.not_after = time(window.not_after)?;
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// PKCS#8 v1 encoding of an Ed25519 private key up to the 32-byte seed (RFC 8410 §7):
/// `SEQUENCE { INTEGER 0, SEQUENCE { id-Ed25519 }, OCTET STRING { OCTET STRING (seed) } }`.
/// The form `openssl genpkey` writes; OpenSSL 3.0 cannot read ring's v2 (RFC 5958) form.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A fresh Ed25519 key pair, serialized (`serialize_pem`) as PKCS#8 v1.
pub(crate) fn new_key() -> Result<KeyPair, TrustError> {
    let mut seed = [0u8; 32];
    fill_random(&mut seed)?;
    let mut der = ED25519_PKCS8_V1_PREFIX.to_vec();
    der.extend_from_slice(&seed);
    KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(der), &PKCS_ED25519)
        .map_err(TrustError::issue)
}

fn fill_random(bytes: &mut [u8]) -> Result<(), TrustError> {
    SystemRandom::new()
        .fill(bytes)
        .map_err(|_| TrustError::Issue {
            reason: "system random number generator failed".to_owned(),
        })
}

/// 16 random bytes, positive (RFC 5280 §4.1.2.2: unique, at most 20 octets).
fn random_serial() -> Result<SerialNumber, TrustError> {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

pub(crate) fn unix_now() -> i64 {
    cert::system_to_unix(SystemTime::now())
}
