//! Chains that must be refused for reasons other than the bindings: another CA, a forged
//! signature, time, malformed input, wrong certificate kinds, mismatched keys.

use rcgen::{BasicConstraints, IsCa};

use super::*;
use crate::trust::issue::issue_node_window;
use crate::trust::{NodeSigner, TrustError, issue_node};

#[test]
fn other_ca_is_named() {
    let (ours, theirs) = (Pki::new(), Pki::new());
    // Same subject name as our root, different key: webpki finds a name match and the
    // signature fails; the authority key identifier tells us it is another CA.
    let out = theirs.path("n");
    issue_node(&theirs.root(), &identity("n", "east", &[]), DAY, &out).unwrap();
    let err = ours.anchor().verify_chain(&chain_in(&out), now());
    assert!(matches!(err, Err(TrustError::OtherCa)), "{err:?}");

    // Through the other mesh's intermediate.
    let inter = theirs.intermediate("east-ca", "east", &[]);
    let out = theirs.path("m");
    issue_node(&inter, &identity("m", "east", &[]), DAY, &out).unwrap();
    let err = ours.anchor().verify_chain(&chain_in(&out), now());
    assert!(matches!(err, Err(TrustError::OtherCa)), "{err:?}");

    // A CA with a different name entirely.
    let (chain, _) = hand_issue(&theirs.root(), "x", IsCa::NoCa, vec![]);
    let mut foreign = rcgen::CertificateParams::default();
    foreign.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let foreign_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let foreign_root = foreign.self_signed(&foreign_key).unwrap();
    let anchor = TrustAnchor::from_pem(&foreign_root.pem()).unwrap();
    let err = anchor.verify_chain(&chain, now());
    assert!(matches!(err, Err(TrustError::OtherCa)), "{err:?}");
}

#[test]
fn forged_signature_is_not_other_ca() {
    let pki = Pki::new();
    let out = pki.path("n");
    issue_node(&pki.root(), &identity("n", "east", &[]), DAY, &out).unwrap();
    let mut chain = chain_in(&out);
    let last = chain[0].len() - 1;
    chain[0][last] ^= 0x01; // inside the Ed25519 signature value
    let err = pki.anchor().verify_chain(&chain, now());
    assert!(matches!(err, Err(TrustError::BadChainSignature)), "{err:?}");
}

#[test]
fn expired_and_future_certificates() {
    let pki = Pki::new();
    let id = identity("n", "east", &[]);
    let out = pki.path("old");
    issue_node_window(
        &pki.root(),
        &id,
        window_from_now(-2 * 86_400, -86_400),
        &out,
    )
    .unwrap();
    let err = pki.anchor().verify_chain(&chain_in(&out), now());
    assert!(
        matches!(err, Err(TrustError::Expired { not_after, now }) if now > not_after),
        "{err:?}"
    );

    let out = pki.path("future");
    issue_node_window(&pki.root(), &id, window_from_now(86_400, 2 * 86_400), &out).unwrap();
    let chain = chain_in(&out);
    let err = pki.anchor().verify_chain(&chain, now());
    assert!(
        matches!(err, Err(TrustError::NotYetValid { .. })),
        "{err:?}"
    );
    // The same chain verifies once its time has come: the clock is the caller's.
    pki.anchor()
        .verify_chain(&chain, now() + 3 * DAY / 2)
        .unwrap();
}

#[test]
fn garbage_and_empty_chains_are_malformed() {
    let pki = Pki::new();
    let anchor = pki.anchor();
    let out = pki.path("n");
    issue_node(&pki.root(), &identity("n", "east", &[]), DAY, &out).unwrap();
    let good = chain_in(&out);

    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("empty chain", vec![]),
        ("empty certificate", vec![vec![]]),
        ("garbage", vec![b"hello, world".to_vec()]),
        ("truncated", vec![good[0][..good[0].len() / 2].to_vec()]),
        ("trailing bytes", vec![[good[0].clone(), vec![0]].concat()]),
        (
            "garbage intermediate",
            vec![good[0].clone(), vec![0x30, 0x03, 1, 2, 3]],
        ),
        ("too long", vec![good[0].clone(); 5]),
    ];
    for (what, chain) in cases {
        let err = anchor.verify_chain(&chain, now());
        assert!(
            matches!(err, Err(TrustError::Malformed { .. })),
            "{what}: {err:?}"
        );
    }
}

#[test]
fn ca_certificate_as_node_is_refused() {
    let pki = Pki::new();
    let inter = pki.intermediate("east-ca", "east", &[]);
    let err = pki
        .anchor()
        .verify_chain(&read_certs(&inter.join("ca.pem")), now());
    assert!(
        matches!(err, Err(TrustError::ChainRejected { .. })),
        "{err:?}"
    );
}

#[test]
fn signer_refuses_a_key_of_another_node() {
    let pki = Pki::new();
    for n in ["a", "b"] {
        issue_node(&pki.root(), &identity(n, "east", &[]), DAY, &pki.path(n)).unwrap();
    }
    let err = NodeSigner::load(
        &pki.path("a").join("node.pem"),
        &pki.path("b").join("node.key"),
    );
    assert!(
        matches!(err, Err(TrustError::KeyMismatch { .. })),
        "{err:?}"
    );
    let err = NodeSigner::load(
        &pki.path("a").join("node.key"),
        &pki.path("a").join("node.key"),
    );
    assert!(
        matches!(err, Err(TrustError::Pem { .. })),
        "key file as certificate: {err:?}"
    );
    let err = NodeSigner::load(
        &pki.path("a").join("node.pem"),
        &pki.path("a").join("node.pem"),
    );
    assert!(
        matches!(err, Err(TrustError::Pem { .. })),
        "certificate as key file: {err:?}"
    );
}
