//! Mesh trust: the mesh root CA, per-cluster intermediate CAs, node certificates that bind a
//! node's identity (name, cluster, locality, pod CIDRs), and Ed25519 signatures over the
//! records a node publishes, so that relays cannot change them.
//!
//! This module issues and verifies certificates and signs bytes. It does not decide who may
//! join beyond what the certificates say, keeps no revocation state, and does no network IO;
//! the only IO is reading and writing the PEM files named in the config.
//!
//! Chain building and signature checks are rustls-webpki's; this module adds the peerd
//! binding checks on top (RFC 5280 §6.1 path validation is not reimplemented here).
//!
//! # The peerd binding extension
//!
//! Each node and intermediate certificate carries one non-critical private X.509 extension
//! whose value is a DER `UTF8String` holding compact JSON:
//!
//! | OID | certificate | JSON |
//! |---|---|---|
//! | [`NODE_BINDING_OID`] `1.3.6.1.4.1.32473.7.1` | node | `{"v":1,"name":..,"cluster":..,"region":..,"zone":..,"pod_cidrs":[..]}` |
//! | [`CLUSTER_BINDING_OID`] `1.3.6.1.4.1.32473.7.2` | intermediate CA | `{"v":1,"cluster":..,"pod_cidrs":[..]}` |
//!
//! The arc `1.3.6.1.4.1.32473` is IANA's example enterprise number (RFC 5612); peerd uses
//! `.7.x` under it as a peerd-private arc until it has an enterprise number of its own. Only
//! peerd reads these extensions, and only in certificates under the mesh's own root.
//! Unknown JSON fields and other versions are rejected, so a future restriction can never be
//! silently ignored by an older verifier.

mod anchor;
mod binding;
mod ca;
mod cert;
mod error;
mod issue;
mod pemfile;
mod signer;

#[cfg(test)]
mod tests;

pub use anchor::{TrustAnchor, VerifiedNode};
pub use error::TrustError;
pub use issue::{init_ca, issue_intermediate, issue_node};
pub use signer::{NodeSigner, verify_signature};

/// OID of the node binding extension (peerd-private, see the module docs).
pub const NODE_BINDING_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 32473, 7, 1];

/// OID of the intermediate (cluster CA) binding extension (peerd-private, see the module docs).
pub const CLUSTER_BINDING_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 32473, 7, 2];

/// What a node certificate binds: who the node is, where it runs, and which pod CIDRs it may
/// announce to the mesh.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeIdentity {
    /// Node name, unique in its cluster (`[A-Za-z0-9._-]`, 1–253 characters).
    pub name: String,
    /// Cluster name (`[A-Za-z0-9._-]`, 1–63 characters).
    pub cluster: String,
    /// Locality region (`topology.kubernetes.io/region`); may be empty.
    pub region: String,
    /// Locality zone (`topology.kubernetes.io/zone`); may be empty.
    pub zone: String,
    /// Pod CIDRs this node may announce.
    pub pod_cidrs: Vec<ipnet::IpNet>,
}
