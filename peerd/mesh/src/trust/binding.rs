//! The peerd binding extension (JSON in a DER `UTF8String`, see the module docs of
//! [`crate::trust`]), the rules for what a binding may contain, and the delegation rule that
//! ties a node to the intermediate CA that issued it.

use ipnet::IpNet;
use rcgen::CustomExtension;
use serde::{Deserialize, Serialize};
use x509_parser::asn1_rs::FromDer;
use x509_parser::certificate::X509Certificate;

use super::cert::{oid_is, subject_of};
use super::{CLUSTER_BINDING_OID, NODE_BINDING_OID, NodeIdentity, TrustError};

/// The only binding format version this code reads and writes.
const VERSION: u32 = 1;

/// What an intermediate CA is bound to: one cluster and, optionally, the CIDRs its nodes may
/// claim (empty = no CIDR constraint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClusterBinding {
    v: u32,
    pub(crate) cluster: String,
    pub(crate) pod_cidrs: Vec<IpNet>,
}

impl ClusterBinding {
    pub(crate) fn new(cluster: &str, pod_cidrs: &[IpNet]) -> Self {
        Self {
            v: VERSION,
            cluster: cluster.to_owned(),
            pod_cidrs: pod_cidrs.to_vec(),
        }
    }
}

/// Wire form of a node binding; field order is the JSON order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeBinding {
    v: u32,
    name: String,
    cluster: String,
    region: String,
    zone: String,
    pod_cidrs: Vec<IpNet>,
}

/// The node binding extension for `identity`, after checking the identity is acceptable.
pub(crate) fn node_extension(identity: &NodeIdentity) -> Result<CustomExtension, TrustError> {
    validate_identity(identity).map_err(|reason| TrustError::InvalidIdentity { reason })?;
    let json = serde_json::to_string(&NodeBinding {
        v: VERSION,
        name: identity.name.clone(),
        cluster: identity.cluster.clone(),
        region: identity.region.clone(),
        zone: identity.zone.clone(),
        pod_cidrs: identity.pod_cidrs.clone(),
    })
    .map_err(|e| TrustError::InvalidIdentity {
        reason: e.to_string(),
    })?;
    Ok(CustomExtension::from_oid_content(
        NODE_BINDING_OID,
        der_utf8_string(&json),
    ))
}

/// The intermediate binding extension, after checking the binding is acceptable.
pub(crate) fn cluster_extension(binding: &ClusterBinding) -> Result<CustomExtension, TrustError> {
    validate_cluster(binding).map_err(|reason| TrustError::InvalidIdentity { reason })?;
    let json = serde_json::to_string(binding).map_err(|e| TrustError::InvalidIdentity {
        reason: e.to_string(),
    })?;
    Ok(CustomExtension::from_oid_content(
        CLUSTER_BINDING_OID,
        der_utf8_string(&json),
    ))
}

/// The node identity a certificate binds; `NoBinding` if it has none.
pub(crate) fn read_node(cert: &X509Certificate<'_>) -> Result<NodeIdentity, TrustError> {
    let subject = subject_of(cert);
    let json = binding_json(cert, NODE_BINDING_OID)?.ok_or_else(|| TrustError::NoBinding {
        subject: subject.clone(),
    })?;
    let bad = |reason: String| TrustError::BadBinding {
        subject: subject.clone(),
        reason,
    };
    let b: NodeBinding = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    if b.v != VERSION {
        return Err(bad(format!("unsupported binding version {}", b.v)));
    }
    let identity = NodeIdentity {
        name: b.name,
        cluster: b.cluster,
        region: b.region,
        zone: b.zone,
        pod_cidrs: b.pod_cidrs,
    };
    validate_identity(&identity).map_err(bad)?;
    Ok(identity)
}

/// The cluster binding of an intermediate CA certificate, if it carries one.
pub(crate) fn read_cluster(
    cert: &X509Certificate<'_>,
) -> Result<Option<ClusterBinding>, TrustError> {
    let Some(json) = binding_json(cert, CLUSTER_BINDING_OID)? else {
        return Ok(None);
    };
    let bad = |reason: String| TrustError::BadBinding {
        subject: subject_of(cert),
        reason,
    };
    let b: ClusterBinding = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    if b.v != VERSION {
        return Err(bad(format!("unsupported binding version {}", b.v)));
    }
    validate_cluster(&b).map_err(bad)?;
    Ok(Some(b))
}

/// A node issued under an intermediate must be in the intermediate's cluster, and each of its
/// pod CIDRs must lie inside one of the intermediate's CIDRs (when it lists any).
pub(crate) fn check_delegation(ca: &ClusterBinding, node: &NodeIdentity) -> Result<(), TrustError> {
    if ca.cluster != node.cluster {
        return Err(TrustError::ClusterMismatch {
            intermediate: ca.cluster.clone(),
            node: node.cluster.clone(),
        });
    }
    if ca.pod_cidrs.is_empty() {
        return Ok(());
    }
    match node
        .pod_cidrs
        .iter()
        .find(|cidr| !ca.pod_cidrs.iter().any(|allowed| allowed.contains(*cidr)))
    {
        Some(cidr) => Err(TrustError::CidrNotAllowed {
            cidr: *cidr,
            allowed: ca.pod_cidrs.clone(),
        }),
        None => Ok(()),
    }
}

/// The JSON text of the extension `oid`, if present exactly once.
fn binding_json<'a>(
    cert: &'a X509Certificate<'_>,
    oid: &[u64],
) -> Result<Option<&'a str>, TrustError> {
    let mut found = cert.extensions().iter().filter(|ext| oid_is(&ext.oid, oid));
    let Some(ext) = found.next() else {
        return Ok(None);
    };
    let bad = |reason: &str| TrustError::BadBinding {
        subject: subject_of(cert),
        reason: reason.to_owned(),
    };
    if found.next().is_some() {
        return Err(bad("extension present more than once"));
    }
    match <&str>::from_der(ext.value) {
        Ok(([], json)) => Ok(Some(json)),
        Ok(_) => Err(bad("trailing bytes after the UTF8String")),
        Err(_) => Err(bad("extension value is not a DER UTF8String")),
    }
}

/// DER `UTF8String` (tag 12) with a definite-length header (X.690 §8.1.3).
fn der_utf8_string(s: &str) -> Vec<u8> {
    let len = s.len();
    let mut out = vec![0x0c];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(s.as_bytes());
    out
}

fn validate_identity(id: &NodeIdentity) -> Result<(), String> {
    check_label("node name", &id.name, 1, 253)?;
    check_label("cluster", &id.cluster, 1, 63)?;
    check_label("region", &id.region, 0, 63)?;
    check_label("zone", &id.zone, 0, 63)?;
    check_cidrs(&id.pod_cidrs)
}

fn validate_cluster(b: &ClusterBinding) -> Result<(), String> {
    check_label("cluster", &b.cluster, 1, 63)?;
    check_cidrs(&b.pod_cidrs)
}

/// Names end up in URIs, DNS names and status tables: keep them to Kubernetes' label
/// alphabet so none of those needs escaping.
fn check_label(what: &str, value: &str, min: usize, max: usize) -> Result<(), String> {
    if value.len() < min || value.len() > max {
        return Err(format!(
            "{what} {value:?} must be {min}-{max} characters long"
        ));
    }
    match value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        Some(c) => Err(format!(
            "{what} {value:?} contains {c:?}; allowed: A-Z a-z 0-9 - . _"
        )),
        None => Ok(()),
    }
}

fn check_cidrs(cidrs: &[IpNet]) -> Result<(), String> {
    match cidrs.iter().find(|c| c.trunc() != **c) {
        Some(c) => Err(format!(
            "pod CIDR {c} has host bits set; did you mean {}?",
            c.trunc()
        )),
        None => Ok(()),
    }
}
