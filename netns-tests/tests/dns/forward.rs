//! Forwarding: names outside `global.` go to the upstream resolver (a real unbound on west's
//! bridge), names under it never do.

use std::net::Ipv4Addr;
use std::time::Duration;

use netns_tests::{LoggedQuery, Unbound, wait_until};

use super::*;

/// An ordinary name the upstream answers from its local data.
const WWW: &str = "www.example.test.";
const WWW_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 80);
/// The last name asked: once unbound logged it, it logged every earlier forwarded query.
const LAST: &str = "last.example.test.";
const LAST_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 81);
/// Host number of the upstream on west's bridge.
const UPSTREAM_HOST: u8 = 201;

/// Names under `global.` asked through west-0: services, cluster names, SRV owners, names that
/// do not exist, the apex, an empty non-terminal, mixed case.
const GLOBAL_QUERIES: [(&str, &str); 14] = [
    (WEB, "A"),
    (WEB, "AAAA"),
    (WEB, "TXT"),
    ("east.web.shop.global", "A"),
    ("west.web.shop.global", "A"),
    ("_http._tcp.web.shop.global", "SRV"),
    ("_grpc._tcp.web.shop.global", "SRV"),
    ("nope.shop.global", "A"),
    ("nope.global", "A"),
    ("deep.below.web.shop.global", "A"),
    ("shop.global", "A"),
    ("global", "SOA"),
    ("global", "NS"),
    ("WEB.Shop.GLOBAL", "A"),
];

#[test]
fn other_names_go_upstream_and_global_names_never_do() {
    require_dns!(netns_tests::Need::Unbound);
    let mut mesh = MeshLab::new("dfwd", &CLUSTERS).expect("mesh lab");
    let (host, addr) = mesh
        .add_host(WEST, UPSTREAM_HOST)
        .expect("upstream namespace");
    let unbound = Unbound::start(
        &host,
        &mesh.lab().path("unbound"),
        addr,
        &[(WWW, WWW_IP), (LAST, LAST_IP)],
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    start_nodes(
        &mut mesh,
        Setup {
            export_at_start: true,
            west_upstream: Some(unbound.addr()),
        },
    );
    let west = mesh.node(WEST0).underlay;
    wait_until(Duration::from_secs(5), "west-0 to resolve web", || {
        Ok(single_a(&try_ask(&mesh, WEST0, WEB, "A", Transport::Udp)?).is_some())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));

    // An ordinary name: unbound's answer, through peerd, and unbound saw west-0 ask for it.
    let www = ask(&mesh, WEST0, WWW, "A");
    assert_eq!(
        (www.status.as_str(), www.data("A")),
        ("NOERROR", vec![WWW_IP.to_string().as_str()]),
        "{WWW} through west-0: {www:?}\n{}",
        unbound.logs()
    );
    wait_logged(&unbound, west, WWW);

    let mut summary = Vec::new();
    for (name, rtype) in GLOBAL_QUERIES {
        let a = ask(&mesh, WEST0, name, rtype);
        assert!(
            matches!(a.status.as_str(), "NOERROR" | "NXDOMAIN") && a.has_flag("aa"),
            "{name} {rtype}: not an authoritative answer: {a:?}"
        );
        summary.push(format!("{name}/{rtype}={}", a.status));
    }
    let last = ask(&mesh, WEST0, LAST, "A");
    assert_eq!(last.data("A"), [LAST_IP.to_string()], "{LAST}: {last:?}");
    wait_logged(&unbound, west, LAST);

    let queries = unbound.queries().expect("unbound's log");
    let from_west: Vec<&LoggedQuery> = queries.iter().filter(|q| q.client == west).collect();
    let leaked: Vec<&&LoggedQuery> = from_west
        .iter()
        .filter(|q| q.name == "global." || q.name.ends_with(".global."))
        .collect();
    eprintln!(
        "asked west-0: {summary:?}; unbound received from west-0: {:?}",
        from_west
            .iter()
            .map(|q| format!("{} {}", q.name, q.rtype))
            .collect::<Vec<_>>()
    );
    assert!(
        leaked.is_empty(),
        "west-0 forwarded names under global. upstream: {leaked:?}\n{}",
        unbound.logs()
    );
}

/// Waits until unbound has logged a query for `name` from `client`.
fn wait_logged(unbound: &Unbound, client: Ipv4Addr, name: &str) {
    wait_until(Duration::from_secs(3), "unbound to log the query", || {
        Ok(unbound
            .queries()?
            .iter()
            .any(|q| q.client == client && q.name == name))
    })
    .unwrap_or_else(|e| panic!("{name} from {client}: {e:#}\n{}", unbound.logs()));
}
