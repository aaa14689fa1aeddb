//! The happy paths: root → node, root → intermediate → node, signing and verification.

use std::time::UNIX_EPOCH;

use super::*;
use crate::trust::{NodeSigner, TrustError, issue_node, verify_signature};

#[test]
fn root_node_sign_and_verify() {
    let pki = Pki::new();
    let out = pki.path("east-1");
    let id = identity("east-1", "east", &["10.1.1.0/24", "fd00:1:1::/64"]);
    issue_node(&pki.root(), &id, 30 * DAY, &out).unwrap();

    let signer = NodeSigner::load(&out.join("node.pem"), &out.join("node.key")).unwrap();
    assert_eq!(signer.identity(), &id);
    assert_eq!(
        signer.chain().len(),
        1,
        "a root-issued node sends only its own certificate"
    );

    let verified = pki.anchor().verify_chain(signer.chain(), now()).unwrap();
    assert_eq!(verified.identity, id);
    assert_eq!(verified.public_key, signer.public_key());
    let not_after = verified
        .not_after
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expected = now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 30 * 86_400;
    assert!(
        not_after.abs_diff(expected) < 60,
        "{not_after} vs {expected}"
    );

    let record = b"{\"node\":\"east-1\",\"seq\":7}";
    let sig = signer.sign(record);
    assert!(verify_signature(&verified.public_key, record, &sig));

    let mut msg = record.to_vec();
    msg[3] ^= 0x01;
    assert!(!verify_signature(&verified.public_key, &msg, &sig));
    for i in [0, 31, 32, 63] {
        let mut bad = sig;
        bad[i] ^= 0x80;
        assert!(
            !verify_signature(&verified.public_key, record, &bad),
            "byte {i}"
        );
    }
    assert!(!verify_signature(&verified.public_key, record, &sig[..63]));
    assert!(!verify_signature(&verified.public_key, record, &[]));
    let mut other_key = verified.public_key;
    other_key[0] ^= 1;
    assert!(!verify_signature(&other_key, record, &sig));
}

#[test]
fn intermediate_node_round_trips_identity() {
    let pki = Pki::new();
    let east = pki.intermediate("east-ca", "east", &["10.1.0.0/16"]);
    let out = pki.path("east-1");
    let id = NodeIdentity {
        name: "east-1".to_owned(),
        cluster: "east".to_owned(),
        region: "eu-west".to_owned(),
        zone: "eu-west-3b".to_owned(),
        pod_cidrs: nets(&["10.1.1.0/24", "10.1.200.0/25"]),
    };
    issue_node(&east, &id, DAY, &out).unwrap();

    let chain = chain_in(&out);
    assert_eq!(chain.len(), 2, "node certificate, then the intermediate");
    assert_eq!(chain[1], read_certs(&east.join("ca.pem"))[0]);
    let verified = pki.anchor().verify_chain(&chain, now()).unwrap();
    assert_eq!(verified.identity, id);

    let signer = NodeSigner::load(&out.join("node.pem"), &out.join("node.key")).unwrap();
    assert_eq!(signer.identity(), &id);
    assert_eq!(signer.chain(), chain.as_slice());
    let sig = signer.sign(b"record");
    assert!(verify_signature(&verified.public_key, b"record", &sig));
}

#[test]
fn unconstrained_intermediate_allows_any_cidr() {
    let pki = Pki::new();
    let west = pki.intermediate("west-ca", "west", &[]);
    let out = pki.path("west-1");
    let id = identity("west-1", "west", &["192.168.7.0/24", "fd00:2::/48"]);
    issue_node(&west, &id, DAY, &out).unwrap();
    let verified = pki.anchor().verify_chain(&chain_in(&out), now()).unwrap();
    assert_eq!(verified.identity, id);
}

#[test]
fn not_after_is_the_earliest_on_the_path() {
    let pki = Pki::new();
    let east = pki.intermediate("east-ca", "east", &[]);
    let out = pki.path("n");
    // Asking for far more than the intermediate's five years is cut short to its expiry.
    issue_node(&east, &identity("n", "east", &[]), 100 * 365 * DAY, &out).unwrap();
    let chain = chain_in(&out);
    let verified = pki.anchor().verify_chain(&chain, now()).unwrap();
    let node = crate::trust::cert::parse(&chain[0]).unwrap();
    let inter = crate::trust::cert::parse(&chain[1]).unwrap();
    assert_eq!(
        crate::trust::cert::not_after_unix(&node),
        crate::trust::cert::not_after_unix(&inter)
    );
    let years = verified.not_after.duration_since(now()).unwrap().as_secs() / (365 * 86_400);
    assert_eq!(years, 4, "five-year intermediate, minus the moment since");
}

#[test]
fn binding_extension_has_the_documented_encoding() {
    let pki = Pki::new();
    let east = pki.intermediate("east-ca", "east", &["10.1.0.0/16"]);
    let out = pki.path("east-1");
    issue_node(
        &east,
        &identity("east-1", "east", &["10.1.1.0/24"]),
        DAY,
        &out,
    )
    .unwrap();
    let chain = chain_in(&out);

    let node_json = r#"{"v":1,"name":"east-1","cluster":"east","region":"us-east","zone":"us-east-1a","pod_cidrs":["10.1.1.0/24"]}"#;
    let ca_json = r#"{"v":1,"cluster":"east","pod_cidrs":["10.1.0.0/16"]}"#;
    for (der, oid, json) in [
        (&chain[0], "1.3.6.1.4.1.32473.7.1", node_json),
        (&chain[1], "1.3.6.1.4.1.32473.7.2", ca_json),
    ] {
        let cert = crate::trust::cert::parse(der).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == oid)
            .unwrap();
        assert!(!ext.critical);
        assert_eq!(ext.value[0], 0x0c, "UTF8String");
        assert_eq!(&ext.value[2..], json.as_bytes());
    }

    let node = crate::trust::cert::parse(&chain[0]).unwrap();
    assert_eq!(node.subject().to_string(), "CN=east-1, O=east");
    let san = node.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        format!("{:?}", san.value.general_names),
        r#"[URI("peerd://east/east-1")]"#
    );
    assert!(!node.is_ca());
    let eku = node.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth);
    assert!(node.key_usage().unwrap().unwrap().value.digital_signature());
    let inter = crate::trust::cert::parse(&chain[1]).unwrap();
    let bc = inter.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
}

#[test]
fn anchor_accepts_several_roots() {
    let (a, b) = (Pki::new(), Pki::new());
    let both = std::fs::read_to_string(a.root().join("ca.pem")).unwrap()
        + &std::fs::read_to_string(b.root().join("ca.pem")).unwrap();
    let anchor = TrustAnchor::from_pem(&both).unwrap();
    for pki in [&a, &b] {
        let out = pki.path("n");
        issue_node(&pki.root(), &identity("n", "c", &[]), DAY, &out).unwrap();
        anchor.verify_chain(&chain_in(&out), now()).unwrap();
    }
}

/// Prints certificate sizes (run with `--nocapture`), and guards the datagram budget: a
/// root-issued node certificate with a realistic name plus a 400-byte record fits 1400
/// bytes. (A chain through an intermediate is about 1020 bytes and does not.)
#[test]
fn certificate_sizes() {
    let pki = Pki::new();
    let east = pki.intermediate("east-ca", "east", &["10.1.0.0/16"]);
    let id = identity("ip-10-1-1-17.ec2.internal", "east", &["10.1.1.0/24"]);
    issue_node(&east, &id, DAY, &pki.path("via-inter")).unwrap();
    issue_node(&pki.root(), &id, DAY, &pki.path("via-root")).unwrap();

    let size = |p: PathBuf| {
        let pem = std::fs::read_to_string(&p).unwrap().len();
        let der: Vec<usize> = read_certs(&p).iter().map(Vec::len).collect();
        println!(
            "{:<24} PEM {pem:>5} B, DER {der:?}",
            p.strip_prefix(pki.path("")).unwrap().display()
        );
        der.iter().sum::<usize>()
    };
    size(pki.root().join("ca.pem"));
    size(east.join("ca.pem"));
    let direct = size(pki.path("via-root").join("node.pem"));
    let chained = size(pki.path("via-inter").join("node.pem"));
    assert!(direct + 400 <= 1400, "root-issued chain {direct} B");
    println!(
        "node chain via intermediate: {chained} B; + 400 B record = {}",
        chained + 400
    );
}

#[test]
fn verify_error_messages_name_the_reason() {
    let e = TrustError::ClusterMismatch {
        intermediate: "east".into(),
        node: "west".into(),
    };
    assert_eq!(
        e.to_string(),
        r#"node belongs to cluster "west" but its intermediate CA is bound to "east""#
    );
}

/// Writes a PKI to `PEERD_TRUST_DUMP` for checking with other tools (`openssl verify`).
#[test]
fn dump_for_other_tools() {
    let Some(dir) = std::env::var_os("PEERD_TRUST_DUMP") else {
        return;
    };
    let dir = PathBuf::from(dir);
    init_ca(&dir.join("root")).unwrap();
    issue_intermediate(
        &dir.join("root"),
        "east",
        &nets(&["10.1.0.0/16"]),
        &dir.join("east"),
    )
    .unwrap();
    issue_node(
        &dir.join("east"),
        &identity("east-1", "east", &["10.1.1.0/24"]),
        DAY,
        &dir.join("node"),
    )
    .unwrap();
}
