//! Verification: the mesh root as a trust anchor, and node chains checked against it —
//! path building and signatures by rustls-webpki, then the peerd bindings.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::certificate::X509Certificate;

use super::{NodeIdentity, TrustError, binding, cert, pemfile};

/// Longest chain accepted: the node certificate and up to three intermediates (peerd issues
/// at most one). Bounds the work an untrusted chain can cause before path building.
const MAX_CHAIN: usize = 4;

/// The mesh root CA(s), loaded from the `ca_file` PEM. A file may hold several roots (during
/// a root rotation); a chain is accepted if it leads to any of them.
#[derive(Clone, Debug)]
pub struct TrustAnchor {
    roots: Vec<Root>,
}

/// What a successful verification proves about a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedNode {
    /// The identity the node certificate binds.
    pub identity: NodeIdentity,
    /// The node certificate's Ed25519 public key: verifies the node's record signatures.
    pub public_key: [u8; 32],
    /// The earliest notAfter along the verified path (node and intermediates): when this
    /// verification stops holding.
    pub not_after: SystemTime,
}

#[derive(Clone, Debug)]
struct Root {
    der: CertificateDer<'static>,
    key_id: Option<Vec<u8>>,
    subject: Vec<u8>,
}

impl TrustAnchor {
    /// Loads the root certificate(s) from a PEM file.
    pub fn load(path: &Path) -> Result<Self, TrustError> {
        Self::parse(&pemfile::read(path)?, &path.display().to_string())
    }

    /// Loads the root certificate(s) from PEM text.
    pub fn from_pem(pem: &str) -> Result<Self, TrustError> {
        Self::parse(pem, "inline PEM")
    }

    fn parse(text: &str, origin: &str) -> Result<Self, TrustError> {
        let mut roots = Vec::new();
        for der in pemfile::parse_certs(text, origin)? {
            let c = cert::parse(&der)?;
            if cert::ca_path_len(&c).is_none() {
                return Err(TrustError::NotACa {
                    origin: origin.to_owned(),
                });
            }
            let key_id = cert::subject_key_id(&c).map(<[u8]>::to_vec);
            let subject = c.subject().as_raw().to_vec();
            let der = CertificateDer::from(der);
            webpki::anchor_from_trusted_cert(&der).map_err(TrustError::malformed)?;
            roots.push(Root {
                der,
                key_id,
                subject,
            });
        }
        Ok(Self { roots })
    }

    /// Verifies a DER chain (node certificate first, then intermediates) at time `now`:
    /// the path to a root and every signature on it (rustls-webpki, client-auth usage), then
    /// the node binding and, for each intermediate on the path, its cluster and CIDR bindings.
    pub fn verify_chain(
        &self,
        chain: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<VerifiedNode, TrustError> {
        let (leaf_der, rest) = chain
            .split_first()
            .ok_or_else(|| TrustError::malformed("empty chain"))?;
        if chain.len() > MAX_CHAIN {
            return Err(TrustError::malformed(format!(
                "chain of {} certificates; at most {MAX_CHAIN} allowed",
                chain.len()
            )));
        }
        let leaf = cert::parse(leaf_der)?;
        let parsed = rest
            .iter()
            .map(|der| cert::parse(der))
            .collect::<Result<Vec<_>, _>>()?;

        let anchors = self
            .roots
            .iter()
            .map(|root| webpki::anchor_from_trusted_cert(&root.der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(TrustError::malformed)?;
        let leaf_cd = CertificateDer::from(leaf_der.as_slice());
        let intermediates: Vec<CertificateDer<'_>> = rest
            .iter()
            .map(|der| CertificateDer::from(der.as_slice()))
            .collect();
        let time =
            UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO));
        let path = EndEntityCert::try_from(&leaf_cd)
            .and_then(|ee| {
                ee.verify_for_usage(
                    &[webpki::ring::ED25519],
                    &anchors,
                    &intermediates,
                    time,
                    KeyUsage::client_auth(),
                    None,
                    None,
                )
                .map(|path| {
                    path.intermediate_certificates()
                        .map(|c| c.der().to_vec())
                        .collect::<Vec<_>>()
                })
            })
            .map_err(|e| self.classify(e, std::iter::once(&leaf).chain(&parsed)))?;

        let identity = binding::read_node(&leaf)?;
        let public_key = cert::ed25519_key(&leaf)?;
        let mut not_after = cert::not_after_unix(&leaf);
        for der in &path {
            let c = cert::parse(der)?;
            let bound = binding::read_cluster(&c)?.ok_or_else(|| TrustError::NoBinding {
                subject: cert::subject_of(&c),
            })?;
            binding::check_delegation(&bound, &identity)?;
            not_after = not_after.min(cert::not_after_unix(&c));
        }
        Ok(VerifiedNode {
            identity,
            public_key,
            not_after: cert::unix_to_system(not_after),
        })
    }

    /// Names the reason webpki rejected a chain. A signature failure counts as `OtherCa`
    /// unless some certificate of the chain names one of our roots as its issuer (by
    /// authority key identifier, else by issuer name): then it is a forged or corrupted chain.
    fn classify<'a, 'c: 'a>(
        &self,
        error: webpki::Error,
        chain: impl Iterator<Item = &'a X509Certificate<'c>>,
    ) -> TrustError {
        use webpki::Error as E;
        match error {
            E::UnknownIssuer => TrustError::OtherCa,
            E::CertExpired { time, not_after } => TrustError::Expired {
                not_after: not_after.as_secs(),
                now: time.as_secs(),
            },
            E::CertNotValidYet { time, not_before } => TrustError::NotYetValid {
                not_before: not_before.as_secs(),
                now: time.as_secs(),
            },
            E::InvalidSignatureForPublicKey => {
                let mut chain = chain;
                if chain.any(|c| self.is_issuer_of(c)) {
                    TrustError::BadChainSignature
                } else {
                    TrustError::OtherCa
                }
            }
            E::BadDer | E::BadDerTime | E::TrailingData(_) | E::MalformedExtensions => {
                TrustError::malformed(error)
            }
            other => TrustError::ChainRejected {
                reason: other.to_string(),
            },
        }
    }

    fn is_issuer_of(&self, c: &X509Certificate<'_>) -> bool {
        match cert::authority_key_id(c) {
            Some(aki) => self.roots.iter().any(|r| r.key_id.as_deref() == Some(aki)),
            None => self.roots.iter().any(|r| r.subject == c.issuer().as_raw()),
        }
    }
}
