//! End-to-end tests of the mesh's service catalog and its `.global` DNS servers on real network
//! namespaces: real `peerd` nodes in two clusters export services from their config files,
//! and the real `dig`, run in a pod namespace, asks the node's DNS server (listening on the
//! pod's gateway address) what the catalog made of them.
//!
//! Topology ([`netns_tests::MeshLab`]): east-0 (192.0.2.1, pods 10.1.0.0/24) and west-0
//! (198.51.100.1, pods 10.2.0.0/24), each with `[dns] listen = "<node's pod gateway>:53"`; the
//! service `web.shop` (port `http` 80, endpoint east-0's pod 10.1.0.10:8080) is exported by
//! east-0.
//!
//! What is proven (one module per theme):
//! - `export`: a service added on east-0 (config rewritten, SIGHUP) resolves on west-0 within
//!   1 s, to the virtual IP both nodes' `peerd services --json` report and east-0's DNS serves
//!   too; `east.web.shop.global` and SRV `_http._tcp.web.shop.global` (port 80) resolve; once
//!   the service is removed (SIGHUP again) west-0 answers NXDOMAIN within 1 s.
//! - `forward`: with a real unbound as west-0's upstream, an ordinary name is answered through
//!   peerd with unbound's data, while unbound never receives a query for anything under
//!   `global.`, whether the name exists in the catalog or not.
//! - `records`: NODATA (AAAA of a service) and NXDOMAIN carry the SOA of `global.` and the AA
//!   flag; every answer over TCP equals the one over UDP.
//! - `liveness`: after a SIGKILL of east-0, west-0's catalog shows east-0's endpoints with
//!   `node_alive: false` within 3 s.
//!
//! Build the daemon first (`cargo build -p peerd`) or set `PEERD_BIN`; without it (or root,
//! /dev/net/tun, `ip`, `dig`, and `unbound` for `forward`) each test says SKIPPED, or fails under
//! `CI=true`.

/// Skips (or fails under `CI=true`) unless the machine has what every test here needs.
macro_rules! require_dns {
    ($($extra:expr),* $(,)?) => {
        netns_tests::require!(
            netns_tests::Need::Root,
            netns_tests::Need::Tun,
            netns_tests::Need::Ip,
            netns_tests::Need::Dig,
            netns_tests::Need::Peerd
            $(, $extra)*
        )
    };
}

mod export;
mod forward;
mod liveness;
mod records;

use std::net::SocketAddr;
use std::time::Duration;

use netns_tests::{Answer, DnsSpec, MeshLab, ServiceSpec, Transport, dig};
use serde_json::Value;

/// Clusters of the tests, by index.
const EAST: usize = 0;
const WEST: usize = 1;
const CLUSTERS: [&str; 2] = ["east", "west"];
/// Node indices in every lab of this suite.
const EAST0: usize = 0;
const WEST0: usize = 1;
/// Deadline for the mesh to converge from scratch (the mesh itself takes about a second).
const CONVERGE: Duration = Duration::from_secs(15);
/// How long one `dig` waits for its answer.
const DIG_WAIT: Duration = Duration::from_secs(1);
/// The exported service's global name.
const WEB: &str = "web.shop.global";

/// How a lab's nodes are set up.
#[derive(Default)]
struct Setup {
    /// east-0 starts with `web.shop` in its config (else it has no service).
    export_at_start: bool,
    /// west-0's `[dns] upstream`. Without one (and on east-0 always) peerd takes the host's
    /// resolv.conf, whose servers no test namespace routes to; no test asks those nodes for a
    /// name outside `global.`.
    west_upstream: Option<SocketAddr>,
}

/// A lab with east-0 and west-0 (joining through east-0), each with a DNS server, started as
/// `setup` says and converged.
fn dns_lab(tag: &str, setup: Setup) -> MeshLab {
    let mut mesh = MeshLab::new(tag, &CLUSTERS).expect("mesh lab");
    start_nodes(&mut mesh, setup);
    mesh
}

/// Starts east-0 and west-0 in `mesh` (see [`dns_lab`]; the caller may add hosts to the lab
/// first, such as an upstream resolver) and waits for convergence.
fn start_nodes(mesh: &mut MeshLab, setup: Setup) {
    let east0 = MeshLab::seed(EAST, 0);
    for (c, seeds) in [(EAST, vec![]), (WEST, vec![east0])] {
        let i = mesh
            .add_node_with(
                c,
                netns_tests::NodeOptions {
                    seeds,
                    deferred: true,
                    ..Default::default()
                },
            )
            .expect("node prepared");
        let web = web(mesh);
        let node = mesh.node_mut(i).expect("node");
        let listen = dns_addr(node.address);
        let cfg = node.config_mut();
        let mut dns = DnsSpec::new(listen);
        if c == WEST {
            dns.upstream.extend(setup.west_upstream);
        }
        cfg.dns = Some(dns);
        if c == EAST && setup.export_at_start {
            cfg.services.push(web);
        }
        mesh.start(i).expect("node starts");
    }
    let took = mesh
        .wait_converged(CONVERGE)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("east-0 and west-0 converged {took:?} after west-0 was ready");
}

/// Where a node's DNS server listens: port 53 of its pod gateway `address`.
fn dns_addr(address: std::net::Ipv4Addr) -> SocketAddr {
    SocketAddr::new(address.into(), 53)
}

/// `web.shop`, port `http` 80, served by east-0's pod on 8080.
fn web(mesh: &MeshLab) -> ServiceSpec {
    let pod = mesh.node(EAST0).pod_ip;
    ServiceSpec::http("web", "shop", 80, SocketAddr::new(pod.into(), 8080))
}

/// Asks node `i`'s DNS server for `name`/`rtype` with dig from the node's pod namespace.
fn ask_via(mesh: &MeshLab, i: usize, name: &str, rtype: &str, transport: Transport) -> Answer {
    try_ask(mesh, i, name, rtype, transport).unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()))
}

/// [`ask_via`] over UDP.
fn ask(mesh: &MeshLab, i: usize, name: &str, rtype: &str) -> Answer {
    ask_via(mesh, i, name, rtype, Transport::Udp)
}

/// [`ask_via`] that returns dig's failure instead of panicking.
fn try_ask(
    mesh: &MeshLab,
    i: usize,
    name: &str,
    rtype: &str,
    transport: Transport,
) -> anyhow::Result<Answer> {
    let node = mesh.node(i);
    dig(
        node.pod(),
        dns_addr(node.address),
        name,
        rtype,
        transport,
        DIG_WAIT,
    )
}

/// The single A record of `answer` (`None` unless NOERROR with exactly one A).
fn single_a(answer: &Answer) -> Option<String> {
    match answer.data("A")[..] {
        [ip] if answer.status == "NOERROR" => Some(ip.to_owned()),
        _ => None,
    }
}

/// Node `i`'s `peerd services --json`.
fn services(mesh: &MeshLab, i: usize) -> Value {
    mesh.node(i)
        .services()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()))
}

/// The service `global_name` in a `peerd services --json` document.
fn service<'a>(services: &'a Value, global_name: &str) -> Option<&'a Value> {
    services["services"]
        .as_array()?
        .iter()
        .find(|s| s["global_name"] == global_name)
}
