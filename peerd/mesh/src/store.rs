//! Verified records of every known node: each record is checked against the mesh CA, its
//! signature and its certificate's bindings before it can replace what we know.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use ipnet::IpNet;

use crate::record::{NodeId, NodeRecord, SignedRecord};
use crate::trust::{TrustAnchor, TrustError, VerifiedNode, verify_signature};

/// Most certificates accepted in one chain (node, intermediate, and a spare).
const MAX_CHAIN: usize = 3;
/// Largest record body accepted.
const MAX_BODY: usize = 32 * 1024;
/// Cached verdicts kept before the cache starts over.
const MAX_CACHED: usize = 200_000;

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Not decodable, empty chain, oversized.
    #[error("malformed record")]
    Malformed,
    /// The certificate chain does not verify to the mesh CA.
    #[error("certificate refused: {0}")]
    Certificate(String),
    /// The record's signature does not verify with the certificate's key.
    #[error("signature does not verify")]
    Signature,
    /// A field the certificate binds differs in the record.
    #[error("{field} {record:?} differs from the certificate's {certificate:?}")]
    Mismatch {
        /// Which field.
        field: &'static str,
        /// What the record says.
        record: String,
        /// What the certificate says.
        certificate: String,
    },
    /// A pod CIDR the certificate does not allow.
    #[error("pod CIDR {0} is outside the certificate's")]
    CidrOutsideCertificate(IpNet),
    /// An overlay address outside the certificate's pod CIDRs.
    #[error("overlay address {0} is outside the certificate's pod CIDRs")]
    AddressOutsideCertificate(IpAddr),
    /// A service endpoint that is not on the announcing node.
    #[error("service {service} endpoint {address} is outside the node's pod CIDRs and addresses")]
    EndpointOutsideNode {
        /// `name.namespace`.
        service: String,
        /// The endpoint address.
        address: IpAddr,
    },
}

impl Reject {
    /// A stable snake_case reason for counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Certificate(_) => "certificate",
            Self::Signature => "signature",
            Self::Mismatch { .. } => "identity_mismatch",
            Self::CidrOutsideCertificate(_) => "cidr_outside_certificate",
            Self::AddressOutsideCertificate(_) => "address_outside_certificate",
            Self::EndpointOutsideNode { .. } => "endpoint_outside_node",
        }
    }
}

/// Verdicts for records already verified, by a hash of their exact bytes. Shareable between
/// meshes (the simulator shares one so 1,000 nodes do not each redo the same signatures).
#[derive(Clone, Default)]
pub struct VerifyCache(Arc<Mutex<Verdicts>>);

type Verdicts = HashMap<[u8; 32], (NodeRecord, VerifiedNode)>;

/// Checks records against the mesh CA.
pub struct Verifier {
    anchor: TrustAnchor,
    cache: VerifyCache,
}

impl Verifier {
    /// A verifier for the mesh rooted at `anchor`.
    pub fn new(anchor: TrustAnchor, cache: VerifyCache) -> Self {
        Self { anchor, cache }
    }

    /// Verifies `signed` at wall time `now`: chain to the CA, signature, then every field the
    /// certificate binds.
    pub fn verify(
        &self,
        signed: &SignedRecord,
        now: SystemTime,
    ) -> Result<(NodeRecord, VerifiedNode), Reject> {
        if signed.chain.is_empty() || signed.chain.len() > MAX_CHAIN || signed.body.len() > MAX_BODY
        {
            return Err(Reject::Malformed);
        }
        let key = fingerprint(signed);
        if let Some((record, node)) = self.lock().get(&key)
            && node.not_after > now
        {
            return Ok((record.clone(), node.clone()));
        }
        let node = self
            .anchor
            .verify_chain(&signed.chain, now)
            .map_err(certificate)?;
        if !verify_signature(
            &node.public_key,
            &signed.signed_message(),
            &signed.signature,
        ) {
            return Err(Reject::Signature);
        }
        let record = signed.decode_unverified().ok_or(Reject::Malformed)?;
        check_bindings(&record, &node)?;
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, (record.clone(), node.clone()));
        Ok((record, node))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Verdicts> {
        self.cache.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn certificate(e: TrustError) -> Reject {
    Reject::Certificate(e.to_string())
}

fn fingerprint(signed: &SignedRecord) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&(signed.body.len() as u64).to_le_bytes());
    ctx.update(&signed.body);
    ctx.update(&signed.signature);
    for cert in &signed.chain {
        ctx.update(&(cert.len() as u64).to_le_bytes());
        ctx.update(cert);
    }
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

fn check_bindings(record: &NodeRecord, node: &VerifiedNode) -> Result<(), Reject> {
    let id = &node.identity;
    for (field, ours, theirs) in [
        ("name", &record.name, &id.name),
        ("cluster", &record.cluster, &id.cluster),
        ("region", &record.region, &id.region),
        ("zone", &record.zone, &id.zone),
    ] {
        if ours != theirs {
            return Err(Reject::Mismatch {
                field,
                record: ours.clone(),
                certificate: theirs.clone(),
            });
        }
    }
    let inside = |net: &IpNet| id.pod_cidrs.iter().any(|allowed| allowed.contains(net));
    if let Some(bad) = record.pod_cidrs.iter().find(|n| !inside(n)) {
        return Err(Reject::CidrOutsideCertificate(*bad));
    }
    let addresses =
        std::iter::once(IpAddr::V4(record.address)).chain(record.address6.map(IpAddr::V6));
    for addr in addresses {
        if !id.pod_cidrs.iter().any(|allowed| allowed.contains(&addr)) {
            return Err(Reject::AddressOutsideCertificate(addr));
        }
    }
    // Service endpoints must run on the node: in its certified pod CIDRs, or at one of its own
    // underlay addresses (host-network endpoints).
    for service in &record.services {
        for endpoint in &service.endpoints {
            let on_node = id.pod_cidrs.iter().any(|n| n.contains(&endpoint.address))
                || record.endpoints.iter().any(|e| e.ip() == endpoint.address);
            if !on_node {
                return Err(Reject::EndpointOutsideNode {
                    service: service.key.to_string(),
                    address: endpoint.address,
                });
            }
        }
    }
    Ok(())
}

/// What [`Store::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A node we did not know.
    New,
    /// A newer version of a known node.
    Updated,
    /// Not newer than what we have: ignored.
    Stale,
}

/// One known node.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The bytes as received (relayed as they are).
    pub signed: SignedRecord,
    /// The decoded, verified record.
    pub record: NodeRecord,
    /// When its certificate expires.
    pub not_after: SystemTime,
}

/// The newest verified record of every known node.
#[derive(Default)]
pub struct Store {
    entries: BTreeMap<NodeId, Entry>,
    /// Digest key to id and version: anti-entropy compares versions by key for every entry of
    /// every digest it receives, which a walk of `entries` (string comparisons) made costly.
    by_key: HashMap<u64, (NodeId, u64)>,
}

impl Store {
    /// Keeps `record` if it is newer than what we have.
    pub fn insert(
        &mut self,
        signed: SignedRecord,
        record: NodeRecord,
        node: &VerifiedNode,
    ) -> Accepted {
        let id = record.id();
        let outcome = match self.entries.get(&id) {
            None => Accepted::New,
            Some(old) if record.version > old.record.version => Accepted::Updated,
            Some(_) => return Accepted::Stale,
        };
        self.by_key
            .insert(id.digest_key(), (id.clone(), record.version));
        self.entries.insert(
            id,
            Entry {
                signed,
                record,
                not_after: node.not_after,
            },
        );
        outcome
    }

    /// The entry of `id`.
    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Forgets `id`.
    pub fn remove(&mut self, id: &NodeId) -> Option<Entry> {
        self.by_key.remove(&id.digest_key());
        self.entries.remove(id)
    }

    /// Every entry, ordered by node id.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &Entry)> {
        self.entries.iter()
    }

    /// Number of known nodes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no node is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(digest key, version)` of every entry, for anti-entropy.
    pub fn digest(&self) -> Vec<(u64, u64)> {
        self.entries
            .iter()
            .map(|(id, e)| (id.digest_key(), e.record.version))
            .collect()
    }

    /// The entry whose id hashes to `key`.
    pub fn by_digest_key(&self, key: u64) -> Option<&Entry> {
        self.by_key
            .get(&key)
            .and_then(|(id, _)| self.entries.get(id))
    }

    /// The version held of the node whose id hashes to `key`.
    pub fn version_by_digest_key(&self, key: u64) -> Option<u64> {
        self.by_key.get(&key).map(|(_, version)| *version)
    }
}
