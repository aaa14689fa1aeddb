//! Shared fixtures for the trust tests: a temporary PKI on disk, and hand-built
//! certificates made with rcgen directly, bypassing the issuing code under test.

mod bindings;
mod files;
mod flow;
mod fuzz;
mod reject;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use rcgen::{
    CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tempfile::TempDir;

use super::ca::{Window, unix_now};
use super::{NodeIdentity, TrustAnchor, init_ca, issue_intermediate, pemfile};

pub(super) const DAY: Duration = Duration::from_secs(86_400);

/// A temporary directory with a root CA in `root/`.
pub(super) struct Pki {
    dir: TempDir,
}

impl Pki {
    pub(super) fn new() -> Self {
        let dir = TempDir::new().unwrap();
        init_ca(&dir.path().join("root")).unwrap();
        Self { dir }
    }

    pub(super) fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    pub(super) fn root(&self) -> PathBuf {
        self.path("root")
    }

    pub(super) fn anchor(&self) -> TrustAnchor {
        TrustAnchor::load(&self.root().join("ca.pem")).unwrap()
    }

    /// Issues an intermediate for `cluster` into `sub/`.
    pub(super) fn intermediate(&self, sub: &str, cluster: &str, cidrs: &[&str]) -> PathBuf {
        let out = self.path(sub);
        issue_intermediate(&self.root(), cluster, &nets(cidrs), &out).unwrap();
        out
    }
}

pub(super) fn nets(cidrs: &[&str]) -> Vec<IpNet> {
    cidrs.iter().map(|c| c.parse().unwrap()).collect()
}

pub(super) fn identity(name: &str, cluster: &str, cidrs: &[&str]) -> NodeIdentity {
    NodeIdentity {
        name: name.to_owned(),
        cluster: cluster.to_owned(),
        region: "us-east".to_owned(),
        zone: "us-east-1a".to_owned(),
        pod_cidrs: nets(cidrs),
    }
}

/// The DER chain in `dir/node.pem`.
pub(super) fn chain_in(dir: &Path) -> Vec<Vec<u8>> {
    read_certs(&dir.join("node.pem"))
}

pub(super) fn read_certs(path: &Path) -> Vec<Vec<u8>> {
    pemfile::parse_certs(&std::fs::read_to_string(path).unwrap(), "test").unwrap()
}

pub(super) fn now() -> SystemTime {
    SystemTime::now()
}

pub(super) fn window_from_now(from: i64, to: i64) -> Window {
    let now = unix_now();
    Window {
        not_before: now + from,
        not_after: now + to,
    }
}

/// A DER UTF8String, written here independently of the code under test.
pub(super) fn utf8_ext(oid: &[u64], json: &str) -> CustomExtension {
    assert!(json.len() < 128, "short form length only");
    let mut der = vec![0x0c, json.len() as u8];
    der.extend_from_slice(json.as_bytes());
    CustomExtension::from_oid_content(oid, der)
}

/// Signs a certificate with the CA in `ca_dir` using rcgen directly. Returns the DER chain
/// (certificate, then the CA's own chain unless it is the root) and the new key.
pub(super) fn hand_issue(
    ca_dir: &Path,
    cn: &str,
    is_ca: IsCa,
    extensions: Vec<CustomExtension>,
) -> (Vec<Vec<u8>>, KeyPair) {
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap();
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca.key")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = is_ca;
    if matches!(is_ca, IsCa::NoCa) {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    params.custom_extensions = extensions;
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer).unwrap();
    let mut chain = vec![cert.der().to_vec()];
    let ca_chain = pemfile::parse_certs(&ca_pem, "test").unwrap();
    if ca_dir.ends_with("root") {
        assert_eq!(ca_chain.len(), 1);
    } else {
        chain.extend(ca_chain);
    }
    (chain, key)
}

/// Writes a hand-made CA (certificate chain + key) as a CA directory usable by `hand_issue`.
pub(super) fn write_ca_dir(dir: &Path, chain: &[Vec<u8>], key: &KeyPair) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.pem"), pemfile::certs_to_pem(chain)).unwrap();
    std::fs::write(dir.join("ca.key"), key.serialize_pem()).unwrap();
}
