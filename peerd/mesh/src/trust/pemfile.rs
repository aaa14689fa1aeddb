//! PEM files: reading certificate chains and PKCS#8 keys, and writing new files with mode
//! 0600 that never replace an existing file.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use super::TrustError;

const CERT_TAG: &str = "CERTIFICATE";
const KEY_TAG: &str = "PRIVATE KEY";

/// Reads a whole (small) text file.
pub(crate) fn read(path: &Path) -> Result<String, TrustError> {
    std::fs::read_to_string(path).map_err(|e| TrustError::io(path, e))
}

/// Every `CERTIFICATE` block of `text`, in order, as DER. At least one is required, and any
/// other block (a key pasted into a certificate file) is an error.
pub(crate) fn parse_certs(text: &str, origin: &str) -> Result<Vec<Vec<u8>>, TrustError> {
    let bad = |reason: String| TrustError::Pem {
        origin: origin.to_owned(),
        reason,
    };
    let blocks = pem::parse_many(text).map_err(|e| bad(e.to_string()))?;
    if blocks.is_empty() {
        return Err(bad("no CERTIFICATE block".to_owned()));
    }
    blocks
        .into_iter()
        .map(|block| match block.tag() {
            CERT_TAG => Ok(block.into_contents()),
            other => Err(bad(format!(
                "unexpected {other} block; expected {CERT_TAG}"
            ))),
        })
        .collect()
}

/// The single PKCS#8 `PRIVATE KEY` block of `text`, as DER.
pub(crate) fn parse_key(text: &str, origin: &str) -> Result<Vec<u8>, TrustError> {
    let bad = |reason: String| TrustError::Pem {
        origin: origin.to_owned(),
        reason,
    };
    let mut blocks = pem::parse_many(text).map_err(|e| bad(e.to_string()))?;
    match (blocks.pop(), blocks.is_empty()) {
        (Some(block), true) if block.tag() == KEY_TAG => Ok(block.into_contents()),
        (Some(block), true) => Err(bad(format!(
            "unexpected {} block; expected a PKCS#8 {KEY_TAG}",
            block.tag()
        ))),
        (None, _) => Err(bad(format!("no {KEY_TAG} block"))),
        (Some(_), false) => Err(bad("more than one PEM block in a key file".to_owned())),
    }
}

/// DER certificates as concatenated PEM blocks.
pub(crate) fn certs_to_pem(ders: &[Vec<u8>]) -> String {
    let blocks: Vec<pem::Pem> = ders
        .iter()
        .map(|d| pem::Pem::new(CERT_TAG, d.clone()))
        .collect();
    pem::encode_many(&blocks)
}

/// Creates `dir` and its missing parents (new ones with mode 0700).
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), TrustError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| TrustError::io(dir, e))
}

/// Fails with `Exists` if any of `paths` exists, before anything is generated or written.
pub(crate) fn refuse_existing(paths: &[&Path]) -> Result<(), TrustError> {
    for path in paths {
        match std::fs::symlink_metadata(path) {
            Ok(_) => {
                return Err(TrustError::Exists {
                    path: path.to_path_buf(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(TrustError::io(*path, e)),
        }
    }
    Ok(())
}

/// Writes a new file with mode 0600; never follows or replaces an existing path.
pub(crate) fn write_new(path: &Path, contents: &[u8]) -> Result<(), TrustError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => TrustError::Exists {
                path: path.to_path_buf(),
            },
            _ => TrustError::io(path, e),
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| TrustError::io(path, e))
}

/// Writes a key and its certificate as a pair: key first, and if the certificate cannot be
/// written the key is removed again, so a failed run leaves nothing half-done behind.
pub(crate) fn write_pair(key: (&Path, &[u8]), cert: (&Path, &[u8])) -> Result<(), TrustError> {
    refuse_existing(&[key.0, cert.0])?;
    write_new(key.0, key.1)?;
    if let Err(e) = write_new(cert.0, cert.1) {
        let _ = std::fs::remove_file(key.0);
        return Err(e);
    }
    Ok(())
}
