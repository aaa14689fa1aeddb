//! Property tests: arbitrary input never panics, and no single-byte change to a valid chain
//! is accepted.

use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;
use crate::trust::issue_node;

/// A root PEM and a valid chain through an intermediate, made once.
fn fixture() -> &'static (String, Vec<Vec<u8>>) {
    static FIXTURE: OnceLock<(String, Vec<Vec<u8>>)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let pki = Pki::new();
        let east = pki.intermediate("east-ca", "east", &["10.1.0.0/16"]);
        let out = pki.path("n");
        issue_node(&east, &identity("n", "east", &["10.1.1.0/24"]), DAY, &out).unwrap();
        let root = std::fs::read_to_string(pki.root().join("ca.pem")).unwrap();
        (root, chain_in(&out))
    })
}

proptest! {
    #[test]
    fn random_chains_never_panic(chain in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1200), 0..4)) {
        let anchor = TrustAnchor::from_pem(&fixture().0).unwrap();
        prop_assert!(anchor.verify_chain(&chain, now()).is_err());
    }

    #[test]
    fn random_bytes_after_a_valid_prefix_never_panic(cut in 0usize..2000, tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let (root, chain) = fixture();
        let anchor = TrustAnchor::from_pem(root).unwrap();
        let leaf = &chain[0];
        let mut bytes = leaf[..cut.min(leaf.len())].to_vec();
        bytes.extend(tail);
        let _ = anchor.verify_chain(&[bytes, chain[1].clone()], now());
    }

    #[test]
    fn any_single_byte_change_is_rejected(which in 0usize..2, at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let (root, chain) = fixture();
        let anchor = TrustAnchor::from_pem(root).unwrap();
        prop_assert!(anchor.verify_chain(chain, now()).is_ok());
        let mut chain = chain.clone();
        let i = at.index(chain[which].len());
        chain[which][i] ^= flip;
        prop_assert!(anchor.verify_chain(&chain, now()).is_err(), "byte {} of cert {} changed", i, which);
    }

    #[test]
    fn random_pem_never_panics(text in "\\PC{0,400}") {
        let _ = TrustAnchor::from_pem(&text);
        let wrapped = format!("-----BEGIN CERTIFICATE-----\n{text}\n-----END CERTIFICATE-----\n");
        let _ = TrustAnchor::from_pem(&wrapped);
    }
}
