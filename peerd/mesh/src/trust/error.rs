//! The trust module's single error type.

use std::path::PathBuf;

use ipnet::IpNet;

/// Why a trust operation failed: one variant per reason, with the context as fields.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An output file already exists; nothing was overwritten.
    #[error("{} already exists; refusing to overwrite it", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// A PEM input could not be read as the expected blocks.
    #[error("{origin}: bad PEM: {reason}")]
    Pem {
        /// Where the PEM came from (a path, or `inline PEM`).
        origin: String,
        /// What was wrong.
        reason: String,
    },
    /// A certificate or chain is not well-formed DER X.509 (includes an empty chain).
    #[error("malformed certificate chain: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
    /// A private key could not be used (not PKCS#8, not Ed25519).
    #[error("{origin}: unusable private key: {reason}")]
    Key {
        /// Where the key came from.
        origin: String,
        /// What was wrong.
        reason: String,
    },
    /// A private key does not belong to the certificate it was loaded with.
    #[error("{origin}: private key does not match the certificate")]
    KeyMismatch {
        /// Where the key came from.
        origin: String,
    },
    /// A certificate's public key is not Ed25519.
    #[error("certificate key is not Ed25519")]
    UnsupportedKey,
    /// A certificate that must be a CA is not one.
    #[error("{origin}: certificate is not a CA")]
    NotACa {
        /// Where the certificate came from.
        origin: String,
    },
    /// The CA (an intermediate, path length 0) may not issue CA certificates.
    #[error("{origin}: this CA may only issue node certificates, not intermediates")]
    CannotIssueCa {
        /// Where the CA came from.
        origin: String,
    },
    /// A node identity or cluster name is not acceptable for a certificate.
    #[error("invalid identity: {reason}")]
    InvalidIdentity {
        /// What was wrong.
        reason: String,
    },
    /// A requested validity window cannot be issued (empty, before 1970, past year 9999, or
    /// after the issuing CA's own expiry).
    #[error("invalid validity: {reason}")]
    InvalidValidity {
        /// What was wrong.
        reason: String,
    },
    /// rcgen could not build or sign a certificate.
    #[error("certificate generation failed: {reason}")]
    Issue {
        /// rcgen's message.
        reason: String,
    },
    /// The chain does not lead to this trust anchor: it was issued by another CA (or the
    /// intermediate that links it to the root was left out).
    #[error(
        "certificate chain does not lead to the mesh CA (issued by another CA, or an intermediate is missing)"
    )]
    OtherCa,
    /// A certificate in the chain has expired.
    #[error("certificate expired at unix time {not_after} (now {now})")]
    Expired {
        /// The certificate's notAfter, unix seconds.
        not_after: u64,
        /// The verification time, unix seconds.
        now: u64,
    },
    /// A certificate in the chain is not valid yet.
    #[error("certificate not valid before unix time {not_before} (now {now})")]
    NotYetValid {
        /// The certificate's notBefore, unix seconds.
        not_before: u64,
        /// The verification time, unix seconds.
        now: u64,
    },
    /// A certificate claims the mesh CA (or an intermediate) as issuer, but its signature
    /// does not verify: forged or corrupted.
    #[error("certificate chain signature does not verify")]
    BadChainSignature,
    /// The chain was rejected by path validation for another reason (wrong key usage,
    /// CA used as end entity, path length exceeded, unsupported algorithm, ...).
    #[error("certificate chain rejected: {reason}")]
    ChainRejected {
        /// rustls-webpki's reason.
        reason: String,
    },
    /// A certificate lacks the peerd binding extension.
    #[error("certificate {subject:?} has no peerd binding extension")]
    NoBinding {
        /// The certificate's subject, for the operator.
        subject: String,
    },
    /// A certificate carries a peerd binding that cannot be read.
    #[error("certificate {subject:?} has an unreadable peerd binding: {reason}")]
    BadBinding {
        /// The certificate's subject.
        subject: String,
        /// What was wrong.
        reason: String,
    },
    /// A node's cluster differs from the cluster its intermediate CA is bound to.
    #[error(
        "node belongs to cluster {node:?} but its intermediate CA is bound to {intermediate:?}"
    )]
    ClusterMismatch {
        /// The intermediate's cluster.
        intermediate: String,
        /// The node's cluster.
        node: String,
    },
    /// A node pod CIDR lies outside every CIDR its intermediate CA may delegate.
    #[error("pod CIDR {cidr} is outside the intermediate CA's CIDRs {allowed:?}")]
    CidrNotAllowed {
        /// The offending node CIDR.
        cidr: IpNet,
        /// The intermediate's CIDRs.
        allowed: Vec<IpNet>,
    },
}

impl TrustError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(reason: impl ToString) -> Self {
        Self::Malformed {
            reason: reason.to_string(),
        }
    }

    pub(crate) fn issue(error: rcgen::Error) -> Self {
        Self::Issue {
            reason: error.to_string(),
        }
    }
}
