//! Issuing: the mesh root CA, cluster intermediate CAs and node certificates, written as PEM
//! files with mode 0600. Keys are Ed25519 throughout.

use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use rcgen::{BasicConstraints, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType};

use super::binding::{self, ClusterBinding};
use super::ca::{Ca, Window, base_params, new_key, unix_now};
use super::{NodeIdentity, TrustError, pemfile};

/// The root CA lives ten years, intermediates five (never past their root).
const ROOT_VALIDITY_SECS: i64 = 10 * 365 * 86_400;
const INTERMEDIATE_VALIDITY_SECS: i64 = 5 * 365 * 86_400;
/// notBefore is backdated so that nodes whose clocks lag a little accept a fresh certificate.
const BACKDATE_SECS: i64 = 300;

/// Creates the mesh root CA: writes `out_dir/ca.pem` and `out_dir/ca.key` (PKCS#8, both mode
/// 0600), creating `out_dir` if needed. Refuses to overwrite either file.
pub fn init_ca(out_dir: &Path) -> Result<(), TrustError> {
    let (cert_path, key_path) = (out_dir.join("ca.pem"), out_dir.join("ca.key"));
    pemfile::refuse_existing(&[&key_path, &cert_path])?;
    let now = unix_now();
    let window = Window {
        not_before: now.saturating_sub(BACKDATE_SECS),
        not_after: now.saturating_add(ROOT_VALIDITY_SECS),
    };
    let key = new_key()?;
    let mut params = base_params(window, "peerd mesh CA", "peerd")?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).map_err(TrustError::issue)?;
    pemfile::ensure_dir(out_dir)?;
    pemfile::write_pair(
        (&key_path, key.serialize_pem().as_bytes()),
        (&cert_path, cert.pem().as_bytes()),
    )
}

/// Issues an intermediate CA for `cluster` from the root CA in `ca_dir`. The intermediate may
/// only certify nodes of `cluster` whose pod CIDRs lie inside `pod_cidrs` (empty: any CIDR),
/// and may not certify further CAs (path length 0). Writes `out_dir/ca.pem` (the intermediate,
/// then its issuer chain without the root) and `out_dir/ca.key` (mode 0600).
pub fn issue_intermediate(
    ca_dir: &Path,
    cluster: &str,
    pod_cidrs: &[IpNet],
    out_dir: &Path,
) -> Result<(), TrustError> {
    let (cert_path, key_path) = (out_dir.join("ca.pem"), out_dir.join("ca.key"));
    pemfile::refuse_existing(&[&key_path, &cert_path])?;
    let ca = Ca::load(ca_dir)?;
    if !ca.can_issue_ca() {
        return Err(TrustError::CannotIssueCa { origin: ca.origin });
    }
    let extension = binding::cluster_extension(&ClusterBinding::new(cluster, pod_cidrs))?;
    let now = unix_now();
    let window = Window {
        not_before: now.saturating_sub(BACKDATE_SECS),
        not_after: now.saturating_add(INTERMEDIATE_VALIDITY_SECS),
    };
    let key = new_key()?;
    let mut params = base_params(ca.clamp(window)?, &format!("{cluster} cluster CA"), cluster)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.custom_extensions.push(extension);
    let der = ca.sign(&params, &key)?;
    pemfile::ensure_dir(out_dir)?;
    pemfile::write_pair(
        (&key_path, key.serialize_pem().as_bytes()),
        (
            &cert_path,
            pemfile::certs_to_pem(&ca.chain_under(der)).as_bytes(),
        ),
    )
}

/// Issues a node certificate valid for `validity` (cut short to the issuing CA's own expiry)
/// from the CA in `ca_dir`, which holds `ca.pem` + `ca.key` of the root or of an intermediate.
/// Writes `out_dir/node.pem` (the node certificate, then the intermediate chain if any) and
/// `out_dir/node.key` (PKCS#8, mode 0600). Refuses an identity that breaks the intermediate's
/// bindings (`ClusterMismatch`, `CidrNotAllowed`), and existing output files.
pub fn issue_node(
    ca_dir: &Path,
    identity: &NodeIdentity,
    validity: Duration,
    out_dir: &Path,
) -> Result<(), TrustError> {
    if validity.is_zero() {
        return Err(TrustError::InvalidValidity {
            reason: "validity must be longer than zero".to_owned(),
        });
    }
    let now = unix_now();
    let secs = i64::try_from(validity.as_secs()).unwrap_or(i64::MAX);
    let window = Window {
        not_before: now.saturating_sub(BACKDATE_SECS),
        not_after: now.saturating_add(secs),
    };
    issue_node_window(ca_dir, identity, window, out_dir)
}

/// [`issue_node`] with an explicit window (tests use it for expired and future certificates).
pub(crate) fn issue_node_window(
    ca_dir: &Path,
    identity: &NodeIdentity,
    window: Window,
    out_dir: &Path,
) -> Result<(), TrustError> {
    let (cert_path, key_path) = (out_dir.join("node.pem"), out_dir.join("node.key"));
    pemfile::refuse_existing(&[&key_path, &cert_path])?;
    let extension = binding::node_extension(identity)?;
    let ca = Ca::load(ca_dir)?;
    for bound in &ca.bindings {
        binding::check_delegation(bound, identity)?;
    }
    let key = new_key()?;
    let mut params = base_params(ca.clamp(window)?, &identity.name, &identity.cluster)?;
    let uri = format!("peerd://{}/{}", identity.cluster, identity.name);
    let uri = uri.try_into().map_err(TrustError::issue)?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    params.custom_extensions.push(extension);
    let der = ca.sign(&params, &key)?;
    pemfile::ensure_dir(out_dir)?;
    pemfile::write_pair(
        (&key_path, key.serialize_pem().as_bytes()),
        (
            &cert_path,
            pemfile::certs_to_pem(&ca.chain_under(der)).as_bytes(),
        ),
    )
}
