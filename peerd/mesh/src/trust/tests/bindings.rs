//! Bindings: what an intermediate may delegate and what a node certificate must carry,
//! refused at issue time and, for hand-built certificates, at verify time.

use rcgen::{BasicConstraints, IsCa};

use super::*;
use crate::trust::issue::issue_node_window;
use crate::trust::{CLUSTER_BINDING_OID, NODE_BINDING_OID, TrustError, issue_node};

#[test]
fn intermediate_refuses_other_cluster_or_cidr_at_issue() {
    let pki = Pki::new();
    let east = pki.intermediate("east-ca", "east", &["10.1.0.0/16"]);

    let err = issue_node(
        &east,
        &identity("w", "west", &["10.1.1.0/24"]),
        DAY,
        &pki.path("w"),
    );
    assert!(
        matches!(&err, Err(TrustError::ClusterMismatch { intermediate, node }) if intermediate == "east" && node == "west"),
        "{err:?}"
    );
    let err = issue_node(
        &east,
        &identity("e", "east", &["10.1.1.0/24", "10.9.0.0/24"]),
        DAY,
        &pki.path("e"),
    );
    assert!(
        matches!(&err, Err(TrustError::CidrNotAllowed { cidr, .. }) if cidr.to_string() == "10.9.0.0/24"),
        "{err:?}"
    );
    // A wider CIDR that merely overlaps is not inside, even when its address is.
    let east0 = pki.intermediate("east0-ca", "east", &["10.0.0.0/16"]);
    let err = issue_node(
        &east0,
        &identity("e", "east", &["10.0.0.0/15"]),
        DAY,
        &pki.path("e"),
    );
    assert!(
        matches!(err, Err(TrustError::CidrNotAllowed { .. })),
        "{err:?}"
    );
    let err = issue_node(
        &east,
        &identity("e", "east", &["10.0.0.0/15"]),
        DAY,
        &pki.path("e"),
    );
    assert!(
        matches!(err, Err(TrustError::CidrNotAllowed { .. })),
        "{err:?}"
    );
    assert!(
        !pki.path("w").exists() && !pki.path("e").exists(),
        "nothing written"
    );
}

#[test]
fn hand_built_chain_breaking_the_binding_is_refused_at_verify() {
    let pki = Pki::new();
    let east = pki.intermediate("east-ca", "east", &["10.1.0.0/16"]);
    let anchor = pki.anchor();
    let node = |json: &str| {
        hand_issue(
            &east,
            "x",
            IsCa::NoCa,
            vec![utf8_ext(NODE_BINDING_OID, json)],
        )
        .0
    };

    let ok = node(
        r#"{"v":1,"name":"x","cluster":"east","region":"","zone":"","pod_cidrs":["10.1.2.0/24"]}"#,
    );
    assert_eq!(
        anchor.verify_chain(&ok, now()).unwrap().identity.name,
        "x",
        "the fixture itself is valid"
    );

    let west = node(
        r#"{"v":1,"name":"x","cluster":"west","region":"","zone":"","pod_cidrs":["10.1.2.0/24"]}"#,
    );
    let err = anchor.verify_chain(&west, now());
    assert!(
        matches!(&err, Err(TrustError::ClusterMismatch { node, .. }) if node == "west"),
        "{err:?}"
    );

    let wide = node(
        r#"{"v":1,"name":"x","cluster":"east","region":"","zone":"","pod_cidrs":["10.9.0.0/24"]}"#,
    );
    let err = anchor.verify_chain(&wide, now());
    assert!(
        matches!(&err, Err(TrustError::CidrNotAllowed { cidr, .. }) if cidr.to_string() == "10.9.0.0/24"),
        "{err:?}"
    );

    for (json, why) in [
        (
            r#"{"v":2,"name":"x","cluster":"east","region":"","zone":"","pod_cidrs":[]}"#,
            "version",
        ),
        (
            r#"{"v":1,"name":"x","cluster":"east","region":"","zone":"","pod_cidrs":[],"admin":true}"#,
            "unknown field",
        ),
        (
            r#"{"v":1,"name":"x/y","cluster":"east","region":"","zone":"","pod_cidrs":[]}"#,
            "slash",
        ),
        (
            r#"{"v":1,"name":"x","cluster":"east","region":"","zone":"","pod_cidrs":["10.1.2.1/24"]}"#,
            "host bits",
        ),
        (r#"{"v":1,"name":"x","cluster":"east"}"#, "missing fields"),
        ("not json", "not json"),
    ] {
        let err = anchor.verify_chain(&node(json), now());
        assert!(
            matches!(err, Err(TrustError::BadBinding { .. })),
            "{why}: {err:?}"
        );
    }
}

#[test]
fn intermediate_without_binding_is_refused() {
    let pki = Pki::new();
    let (chain, key) = hand_issue(
        &pki.root(),
        "rogue CA",
        IsCa::Ca(BasicConstraints::Constrained(0)),
        vec![],
    );
    let rogue = pki.path("rogue");
    write_ca_dir(&rogue, &chain, &key);
    let json = r#"{"v":1,"name":"x","cluster":"east","region":"","zone":"","pod_cidrs":[]}"#;
    let (node, _) = hand_issue(
        &rogue,
        "x",
        IsCa::NoCa,
        vec![utf8_ext(NODE_BINDING_OID, json)],
    );
    let err = pki.anchor().verify_chain(&node, now());
    assert!(
        matches!(&err, Err(TrustError::NoBinding { subject }) if subject.contains("rogue CA")),
        "{err:?}"
    );
    // And the issuing code refuses to use such a CA at all.
    let err = issue_node(&rogue, &identity("x", "east", &[]), DAY, &pki.path("x"));
    assert!(matches!(err, Err(TrustError::NoBinding { .. })), "{err:?}");
}

#[test]
fn certificate_without_binding_is_refused() {
    let pki = Pki::new();
    let (chain, _) = hand_issue(&pki.root(), "plain", IsCa::NoCa, vec![]);
    let err = pki.anchor().verify_chain(&chain, now());
    assert!(
        matches!(&err, Err(TrustError::NoBinding { subject }) if subject == "CN=plain"),
        "{err:?}"
    );
    // A cluster binding on a leaf is not a node binding.
    let ca_json = r#"{"v":1,"cluster":"east","pod_cidrs":[]}"#;
    let (chain, _) = hand_issue(
        &pki.root(),
        "leaf",
        IsCa::NoCa,
        vec![utf8_ext(CLUSTER_BINDING_OID, ca_json)],
    );
    let err = pki.anchor().verify_chain(&chain, now());
    assert!(matches!(err, Err(TrustError::NoBinding { .. })), "{err:?}");
}

#[test]
fn bad_identities_and_windows_are_refused_at_issue() {
    let pki = Pki::new();
    for (id, why) in [
        (identity("", "east", &[]), "empty name"),
        (identity("a b", "east", &[]), "space"),
        (identity("a", "east/x", &[]), "slash in cluster"),
        (identity("a", "east", &["10.1.1.7/24"]), "host bits"),
    ] {
        let err = issue_node(&pki.root(), &id, DAY, &pki.path("x"));
        assert!(
            matches!(err, Err(TrustError::InvalidIdentity { .. })),
            "{why}: {err:?}"
        );
    }
    let err = issue_node(
        &pki.root(),
        &identity("a", "e", &[]),
        std::time::Duration::ZERO,
        &pki.path("x"),
    );
    assert!(
        matches!(err, Err(TrustError::InvalidValidity { .. })),
        "{err:?}"
    );
    // An absurd validity is cut short to the CA's expiry rather than overflowing.
    let huge = std::time::Duration::MAX;
    issue_node(&pki.root(), &identity("a", "e", &[]), huge, &pki.path("x")).unwrap();
    let err = issue_node_window(
        &pki.root(),
        &identity("b", "e", &[]),
        window_from_now(10, 5),
        &pki.path("y"),
    );
    assert!(
        matches!(err, Err(TrustError::InvalidValidity { .. })),
        "{err:?}"
    );
    let err = crate::trust::issue_intermediate(&pki.root(), "bad cluster", &[], &pki.path("z"));
    assert!(
        matches!(err, Err(TrustError::InvalidIdentity { .. })),
        "{err:?}"
    );
}

#[test]
fn intermediate_cannot_issue_intermediates() {
    let pki = Pki::new();
    let east = pki.intermediate("east-ca", "east", &[]);
    let err = crate::trust::issue_intermediate(&east, "east", &[], &pki.path("sub"));
    assert!(
        matches!(err, Err(TrustError::CannotIssueCa { .. })),
        "{err:?}"
    );
}
