//! Record types through the real server in the namespace: negative answers carry the SOA of
//! `global.`, and TCP answers what UDP answers. (EDNS and truncation are covered by the dns
//! crate's loopback tests.)

use std::time::Duration;

use netns_tests::wait_until;

use super::*;

/// Queries compared over UDP and TCP: an address, an SRV, NODATA, NXDOMAIN.
const BOTH_WAYS: [(&str, &str); 5] = [
    (WEB, "A"),
    ("east.web.shop.global", "A"),
    ("_http._tcp.web.shop.global", "SRV"),
    (WEB, "AAAA"),
    ("nope.shop.global", "A"),
];

#[test]
fn negative_answers_carry_the_soa_and_tcp_answers_like_udp() {
    require_dns!();
    let mesh = dns_lab(
        "drec",
        Setup {
            export_at_start: true,
            ..Setup::default()
        },
    );
    wait_until(Duration::from_secs(5), "west-0 to resolve web", || {
        Ok(single_a(&try_ask(&mesh, WEST0, WEB, "A", Transport::Udp)?).is_some())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));

    // NODATA: the name exists, the type does not.
    let nodata = ask(&mesh, WEST0, WEB, "AAAA");
    assert_eq!(nodata.status, "NOERROR", "AAAA {WEB}: {nodata:?}");
    assert!(nodata.answer.is_empty(), "AAAA {WEB}: {nodata:?}");
    assert_negative(&nodata, "AAAA of a service");

    // NXDOMAIN: an unknown name under a known namespace.
    let nx = ask(&mesh, WEST0, "nope.shop.global", "A");
    assert_eq!(nx.status, "NXDOMAIN", "nope.shop.global: {nx:?}");
    assert_negative(&nx, "an unknown service");

    for (name, rtype) in BOTH_WAYS {
        let udp = ask_via(&mesh, WEST0, name, rtype, Transport::Udp);
        let tcp = ask_via(&mesh, WEST0, name, rtype, Transport::Tcp);
        assert_eq!(tcp, udp, "{name} {rtype}: TCP and UDP differ");
        assert!(!udp.has_flag("tc"), "{name} {rtype}: truncated: {udp:?}");
    }
    eprintln!("NODATA {nodata:?}\nNXDOMAIN {nx:?}");
}

/// A negative answer from the authority: AA, nothing in the answer section, and exactly the
/// SOA of `global.` in the authority section (RFC 2308 §2, §3).
fn assert_negative(a: &Answer, what: &str) {
    assert!(a.has_flag("aa"), "{what}: not authoritative: {a:?}");
    assert!(a.answer.is_empty(), "{what}: answer records: {a:?}");
    assert_eq!(
        a.authority_owners("SOA"),
        ["global."],
        "{what}: no SOA of global. in the authority section: {a:?}"
    );
    assert_eq!(a.authority.len(), 1, "{what}: {a:?}");
}
