//! What a node says about itself, signed by the node: its WireGuard key, endpoints, pod CIDRs,
//! overlay addresses, locality and a version. Relays pass the exact signed bytes along, so they
//! cannot change a field without breaking the signature.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::trust::NodeSigner;

/// Domain separation for record signatures.
const SIGNING_CONTEXT: &[u8] = b"peerd-record-v1\0";

/// A node's name in the mesh: unique per cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// Cluster name.
    pub cluster: String,
    /// Node name.
    pub name: String,
}

impl NodeId {
    /// A node id.
    pub fn new(cluster: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            name: name.into(),
        }
    }

    /// A short stable hash, used in digests.
    pub fn digest_key(&self) -> u64 {
        // FNV-1a: stable across processes and versions, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.cluster.bytes().chain([0]).chain(self.name.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cluster, self.name)
    }
}

/// The body of a node's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node name (must equal the certificate's).
    pub name: String,
    /// Cluster (must equal the certificate's).
    pub cluster: String,
    /// Region (must equal the certificate's).
    pub region: String,
    /// Zone (must equal the certificate's).
    pub zone: String,
    /// WireGuard public key, authenticated by the signature.
    pub wg_public_key: [u8; 32],
    /// Underlay `ip:port` where the node's WireGuard (and control plane) listens.
    pub endpoints: Vec<SocketAddr>,
    /// Pod CIDRs behind the node (each inside the certificate's).
    pub pod_cidrs: Vec<IpNet>,
    /// Overlay IPv4 address (inside the certificate's pod CIDRs).
    pub address: Ipv4Addr,
    /// Overlay IPv6 address, if any (inside the certificate's pod CIDRs).
    pub address6: Option<Ipv6Addr>,
    /// Services with endpoints on this node (each endpoint inside the certificate's pod CIDRs
    /// or at one of the node's own underlay addresses).
    pub services: Vec<peerd_types::ServiceExport>,
    /// The generation of the node's current membership identity (changes on restart).
    pub member_gen: u64,
    /// Monotonic version: a receiver keeps the highest it has seen.
    pub version: u64,
}

impl NodeRecord {
    /// The record's node id.
    pub fn id(&self) -> NodeId {
        NodeId::new(&self.cluster, &self.name)
    }
}

/// A record as it travels: the exact signed bytes, the signature and the signer's certificate
/// chain (node certificate first).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    /// postcard-encoded [`NodeRecord`].
    pub body: Vec<u8>,
    /// Ed25519 signature over the signing context and `body`.
    pub signature: Vec<u8>,
    /// DER certificates, node first.
    pub chain: Vec<Vec<u8>>,
}

impl fmt::Debug for SignedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SignedRecord({} body bytes, {} certs)",
            self.body.len(),
            self.chain.len()
        )
    }
}

impl SignedRecord {
    /// Encodes and signs `record` with the node's key.
    pub fn sign(record: &NodeRecord, signer: &NodeSigner) -> Self {
        let body = postcard::to_allocvec(record).expect("records always encode");
        let signature = signer.sign(&signed_bytes(&body)).to_vec();
        Self {
            body,
            signature,
            chain: signer.chain().to_vec(),
        }
    }

    /// Decodes the body without checking anything.
    pub fn decode_unverified(&self) -> Option<NodeRecord> {
        postcard::from_bytes(&self.body).ok()
    }

    /// The bytes the signature covers.
    pub fn signed_message(&self) -> Vec<u8> {
        signed_bytes(&self.body)
    }

    /// Wire size, for accounting.
    pub fn size(&self) -> usize {
        self.body.len() + self.signature.len() + self.chain.iter().map(Vec::len).sum::<usize>()
    }
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(body);
    m
}
