//! Small read-only views of a parsed X.509 certificate (x509-parser): the fields the trust
//! module needs, with malformed input turned into [`TrustError`]s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::oid::Oid;
use x509_parser::extensions::ParsedExtension;
use x509_parser::oid_registry::OID_SIG_ED25519;
use x509_parser::prelude::FromDer;

use super::TrustError;

/// Parses one DER certificate; trailing bytes are an error.
pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, TrustError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(TrustError::malformed(
            "trailing bytes after the certificate",
        )),
        Err(e) => Err(TrustError::malformed(format!(
            "not a DER X.509 certificate: {e}"
        ))),
    }
}

/// The subject as text (`CN=east-1, O=east`), for error messages.
pub(crate) fn subject_of(cert: &X509Certificate<'_>) -> String {
    cert.subject().to_string()
}

/// Whether `oid` equals the dotted components `want` (components past `u64` never match).
pub(crate) fn oid_is(oid: &Oid<'_>, want: &[u64]) -> bool {
    match oid.iter() {
        Some(mut parts) => want.iter().all(|w| parts.next() == Some(*w)) && parts.next().is_none(),
        None => false,
    }
}

/// The raw Ed25519 public key of the certificate (RFC 8410 §4).
pub(crate) fn ed25519_key(cert: &X509Certificate<'_>) -> Result<[u8; 32], TrustError> {
    let spki = cert.public_key();
    if spki.algorithm.algorithm != OID_SIG_ED25519 {
        return Err(TrustError::UnsupportedKey);
    }
    <[u8; 32]>::try_from(spki.subject_public_key.data.as_ref())
        .map_err(|_| TrustError::malformed("Ed25519 public key is not 32 bytes"))
}

/// The subject key identifier, if present.
pub(crate) fn subject_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0),
            _ => None,
        })
}

/// The key identifier of the authority key identifier extension, if present.
pub(crate) fn authority_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0)
            }
            _ => None,
        })
}

/// `Some(path_len)` for a CA certificate, `None` otherwise.
pub(crate) fn ca_path_len(cert: &X509Certificate<'_>) -> Option<Option<u32>> {
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => Some(bc.value.path_len_constraint),
        _ => None,
    }
}

/// Whether the certificate names itself as its issuer (a root).
pub(crate) fn is_self_issued(cert: &X509Certificate<'_>) -> bool {
    cert.subject().as_raw() == cert.issuer().as_raw()
}

/// notAfter as unix seconds.
pub(crate) fn not_after_unix(cert: &X509Certificate<'_>) -> i64 {
    cert.validity().not_after.timestamp()
}

/// Unix seconds to `SystemTime`, clamped to the epoch for negative values.
pub(crate) fn unix_to_system(secs: i64) -> SystemTime {
    let secs = u64::try_from(secs).unwrap_or(0);
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH)
}

/// `SystemTime` to unix seconds, clamped to 0 before the epoch.
pub(crate) fn system_to_unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
