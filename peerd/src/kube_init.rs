//! `peerd kube init`: what the DaemonSet's init container runs on every node. It renders the
//! node config from the Node object, creates the WireGuard key once, and makes sure the node
//! holds a valid certificate for exactly what the config says (issued from a mounted
//! intermediate CA, or copied from a per-node Secret).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use overlay::PrivateKey;
use peerd_mesh::trust::{self, NodeIdentity, NodeSigner, TrustAnchor};

use crate::config::Config;

/// A certificate valid for less than this is replaced.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// Validity of certificates issued here.
const VALIDITY: Duration = Duration::from_secs(365 * 86_400);

/// Where a node gets its certificate when it has no valid one.
pub enum CertFrom {
    /// Issue it from this CA folder (ca.pem, ca.key).
    Ca(PathBuf),
    /// Copy it from this Secret (keys node.pem, node.key) in the pod's namespace.
    Secret(String),
}

/// Renders `template` into `out` for the node `NODE_NAME`, then ensures its key and certificate.
pub async fn run(template: &Path, out: &Path, cert: Option<CertFrom>) -> Result<()> {
    let node_name = std::env::var("NODE_NAME")
        .context("NODE_NAME is not set (use the downward API: spec.nodeName)")?;
    let client = peerd_kube::client()
        .await
        .context("cannot reach the Kubernetes API")?;
    let node = peerd_kube::bootstrap::fetch_node(&client, &node_name).await?;
    let text = std::fs::read_to_string(template)
        .with_context(|| format!("cannot read {}", template.display()))?;
    let rendered = peerd_kube::bootstrap::render(&text, &node)?;
    let config = Config::parse(out, &rendered)
        .map_err(|e| anyhow::anyhow!("the rendered config is invalid: {e}"))?;
    write_file(out, rendered.as_bytes(), 0o644)?;
    println!("wrote {}", out.display());

    let key = &config.node.private_key_file;
    if !key.exists() {
        write_file(
            key,
            format!("{}\n", PrivateKey::generate().to_base64()).as_bytes(),
            0o600,
        )?;
        println!("created {}", key.display());
    }
    let Some(mesh) = &config.mesh else {
        return Ok(());
    };
    let wanted = NodeIdentity {
        name: config.node.name.clone(),
        cluster: config.node.cluster.clone(),
        region: config.node.region.clone(),
        zone: config.node.zone.clone(),
        pod_cidrs: config.node.pod_cidrs.clone(),
    };
    match current_certificate(&mesh.ca_file, &mesh.cert_file, &mesh.key_file, &wanted) {
        Ok(()) => {
            println!("certificate {} is valid", mesh.cert_file.display());
            return Ok(());
        }
        Err(why) => println!("new certificate needed: {why:#}"),
    }
    match cert {
        Some(CertFrom::Secret(name)) => {
            let creds = peerd_kube::bootstrap::fetch_node_secret(&client, &name)
                .await?
                .with_context(|| format!("secret {name} does not exist"))?;
            write_file(&mesh.cert_file, &creds.cert_pem, 0o600)?;
            write_file(&mesh.key_file, &creds.key_pem, 0o600)?;
        }
        Some(CertFrom::Ca(ca)) => {
            let dir = tempdir_next_to(&mesh.cert_file)?;
            trust::issue_node(&ca, &wanted, VALIDITY, &dir)?;
            std::fs::rename(dir.join("node.key"), &mesh.key_file)?;
            std::fs::rename(dir.join("node.pem"), &mesh.cert_file)?;
            let _ = std::fs::remove_dir(&dir);
        }
        None => bail!(
            "no valid certificate at {} and neither --ca nor --cert-secret given",
            mesh.cert_file.display()
        ),
    }
    current_certificate(&mesh.ca_file, &mesh.cert_file, &mesh.key_file, &wanted)
        .context("the new certificate does not verify")?;
    println!(
        "wrote {} and {}",
        mesh.cert_file.display(),
        mesh.key_file.display()
    );
    Ok(())
}

/// Whether the node's certificate chains to the CA, binds exactly `wanted`, and stays valid for
/// at least [`RENEW_BEFORE`].
fn current_certificate(ca: &Path, cert: &Path, key: &Path, wanted: &NodeIdentity) -> Result<()> {
    let signer = NodeSigner::load(cert, key)?;
    let anchor = TrustAnchor::load(ca)?;
    let verified = anchor.verify_chain(signer.chain(), SystemTime::now() + RENEW_BEFORE)?;
    if &verified.identity != wanted {
        bail!(
            "it binds {:?}, the config wants {:?}",
            verified.identity,
            wanted
        );
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

fn tempdir_next_to(path: &Path) -> Result<PathBuf> {
    let dir = path
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!(".peerd-issue-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(dir)
}
