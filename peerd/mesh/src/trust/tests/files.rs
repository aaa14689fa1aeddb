//! Files on disk: modes, no overwriting, readable errors for bad files.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::trust::{TrustError, issue_node};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn every_written_file_is_0600() {
    let pki = Pki::new();
    let east = pki.intermediate("deep/er/east-ca", "east", &[]);
    let out = pki.path("nodes/east-1");
    issue_node(&east, &identity("east-1", "east", &[]), DAY, &out).unwrap();
    for file in [
        pki.root().join("ca.pem"),
        pki.root().join("ca.key"),
        east.join("ca.pem"),
        east.join("ca.key"),
        out.join("node.pem"),
        out.join("node.key"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(&out), 0o700, "created directories are private");
    let key = std::fs::read_to_string(out.join("node.key")).unwrap();
    let der = pemfile::parse_key(&key, "test").unwrap();
    assert_eq!(der.len(), 48, "PKCS#8 v1 Ed25519, as openssl writes it");
    assert_eq!(der[..5], [0x30, 0x2e, 0x02, 0x01, 0x00]);
}

#[test]
fn init_ca_refuses_to_overwrite() {
    let pki = Pki::new();
    let before = std::fs::read(pki.root().join("ca.key")).unwrap();
    let err = init_ca(&pki.root());
    assert!(
        matches!(&err, Err(TrustError::Exists { path }) if path.ends_with("ca.key")),
        "{err:?}"
    );
    assert_eq!(std::fs::read(pki.root().join("ca.key")).unwrap(), before);

    // Only one of the two files present: still refused, and the other is not created.
    let half = pki.path("half");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("ca.pem"), "x").unwrap();
    let err = init_ca(&half);
    assert!(
        matches!(&err, Err(TrustError::Exists { path }) if path.ends_with("ca.pem")),
        "{err:?}"
    );
    assert!(!half.join("ca.key").exists());
}

#[test]
fn issue_refuses_to_overwrite_a_node() {
    let pki = Pki::new();
    let out = pki.path("n");
    issue_node(&pki.root(), &identity("n", "e", &[]), DAY, &out).unwrap();
    let err = issue_node(&pki.root(), &identity("n", "e", &[]), DAY, &out);
    assert!(matches!(err, Err(TrustError::Exists { .. })), "{err:?}");
}

#[test]
fn bad_files_are_named_errors() {
    let pki = Pki::new();
    let missing = TrustAnchor::load(&pki.path("nope.pem"));
    assert!(
        matches!(&missing, Err(TrustError::Io { path, .. }) if path.ends_with("nope.pem")),
        "{missing:?}"
    );
    for (text, why) in [
        ("", "empty"),
        (
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
            "bad base64",
        ),
    ] {
        let err = TrustAnchor::from_pem(text);
        assert!(matches!(err, Err(TrustError::Pem { .. })), "{why}: {err:?}");
    }
    let key = std::fs::read_to_string(pki.root().join("ca.key")).unwrap();
    assert!(matches!(
        TrustAnchor::from_pem(&key),
        Err(TrustError::Pem { .. })
    ));

    // A node certificate is not a trust anchor.
    let out = pki.path("n");
    issue_node(&pki.root(), &identity("n", "e", &[]), DAY, &out).unwrap();
    let node_pem = std::fs::read_to_string(out.join("node.pem")).unwrap();
    assert!(matches!(
        TrustAnchor::from_pem(&node_pem),
        Err(TrustError::NotACa { .. })
    ));

    // A CA directory whose key belongs to another CA.
    let other = Pki::new();
    let mixed = pki.path("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(pki.root().join("ca.pem"), mixed.join("ca.pem")).unwrap();
    std::fs::copy(other.root().join("ca.key"), mixed.join("ca.key")).unwrap();
    let err = issue_node(&mixed, &identity("n", "e", &[]), DAY, &pki.path("m"));
    assert!(
        matches!(err, Err(TrustError::KeyMismatch { .. })),
        "{err:?}"
    );
}

#[test]
fn write_new_never_replaces_or_follows() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("f");
    pemfile::write_new(&file, b"one").unwrap();
    let err = pemfile::write_new(&file, b"two");
    assert!(matches!(err, Err(TrustError::Exists { .. })), "{err:?}");
    assert_eq!(std::fs::read(&file).unwrap(), b"one");

    let target = dir.path().join("target");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = pemfile::write_new(&link, b"x");
    assert!(matches!(err, Err(TrustError::Exists { .. })), "{err:?}");
    assert!(!target.exists(), "a dangling symlink is not followed");
}
