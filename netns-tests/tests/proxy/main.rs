//! End-to-end tests of the L7 proxy on real network namespaces: real `peerd` nodes in two
//! clusters proxy requests on their services' virtual IPs to real HTTP, gRPC, WebSocket and TCP
//! servers running in the nodes' pod namespaces; every client runs in a pod namespace too.
//!
//! Topology ([`netns_tests::MeshLab`]): east-0 (region-east, zone-east-0, pods 10.1.0.0/24) and
//! west-0 (region-west, zone-west-0, pods 10.2.0.0/24). Each node exports its pod's endpoints
//! in `[[service]]` tables; the same service exported by both nodes has endpoints in both
//! clusters. A client in east-0's pod reaches a virtual IP through its default route, so east-0's
//! proxy serves it: east-0's endpoints are its same-node tier, west-0's are remote.
//!
//! What is proven (one module per theme):
//! - `locality`: with healthy local endpoints, ≥ 99 % of 10,000 requests stay on the local node.
//! - `failover`: two of three local endpoints killed: the local tier keeps 1.4 × 1/3 ≈ 46.7 % of
//!   the traffic (Envoy's overprovisioning factor), the rest spills to the remote cluster; all
//!   three killed under continuous load: no client request fails, and from 1 s after the kill
//!   every answer comes from the remote cluster; restarted: traffic comes back.
//! - `ewma`: a slow endpoint gets much less traffic than its fast neighbours (peak EWMA).
//! - `protocols`: gRPC unary and bidirectional streaming, an opaque TCP echo and a WebSocket
//!   echo, each to an endpoint in the other cluster.
//! - `malformed`: garbage and malformed HTTP get 400 / 431 (or a closed connection), never a
//!   crash, and the proxy serves normally afterwards.
//!
//! Build the daemon first (`cargo build -p peerd`) or set `PEERD_BIN`; without it (or root,
//! /dev/net/tun, `ip`) each test says SKIPPED, or fails under `CI=true`.

/// Skips (or fails under `CI=true`) unless the machine has what every test here needs.
macro_rules! require_proxy {
    () => {
        netns_tests::require!(
            netns_tests::Need::Root,
            netns_tests::Need::Tun,
            netns_tests::Need::Ip,
            netns_tests::Need::Peerd
        )
    };
}

mod client;
mod endpoint;
mod grpc;
mod ws;

mod ewma;
mod failover;
mod locality;
mod malformed;
mod protocols;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use netns_tests::{EndpointSpec, MeshLab, NodeOptions, PortSpec, ServiceSpec, wait_until};
use serde_json::Value;

use endpoint::{Endpoint, Kind};

/// Clusters of the tests, by index.
const EAST: usize = 0;
const WEST: usize = 1;
const CLUSTERS: [&str; 2] = ["east", "west"];
/// Node indices in every lab of this suite.
const EAST0: usize = 0;
const WEST0: usize = 1;
/// Deadline for the mesh to converge from scratch.
const CONVERGE: Duration = Duration::from_secs(15);
/// Deadline for the proxy to show a catalog change.
const ROUTES: Duration = Duration::from_secs(10);
/// The HTTP service every balancing test uses, on port 80.
const WEB: &str = "web.shop.global";
/// Target ports of the HTTP endpoints in each pod.
const HTTP_PORTS: [u16; 3] = [8081, 8082, 8083];

/// A two-node mesh and the endpoints in its pods. Endpoints go first, so they stop before the
/// namespaces do.
struct ProxyLab {
    east: Vec<Endpoint>,
    west: Vec<Endpoint>,
    mesh: MeshLab,
}

/// Starts east-0 and west-0 (west-0 joining through east-0) exporting what `services` gives
/// for each node's pod address, and waits for the mesh to converge.
fn mesh_lab(tag: &str, services: impl Fn(usize, Ipv4Addr) -> Vec<ServiceSpec>) -> MeshLab {
    let mut mesh = MeshLab::new(tag, &CLUSTERS).expect("mesh lab");
    let east0 = MeshLab::seed(EAST, 0);
    for (c, seeds) in [(EAST, vec![]), (WEST, vec![east0])] {
        let i = mesh
            .add_node_with(
                c,
                NodeOptions {
                    seeds,
                    deferred: true,
                    ..Default::default()
                },
            )
            .expect("node prepared");
        let node = mesh.node_mut(i).expect("node");
        let pod = node.pod_ip;
        node.config_mut().services = services(c, pod);
        mesh.start(i).expect("node starts");
    }
    mesh.wait_converged(CONVERGE)
        .unwrap_or_else(|e| panic!("{e:#}"));
    mesh
}

/// A lab where both nodes export `web.shop` (port 80, http) with an HTTP endpoint on each of
/// [`HTTP_PORTS`] of their pod, named `<cluster>-<n>`; returns once east-0's proxy has all six.
fn web_lab(tag: &str) -> (ProxyLab, SocketAddr) {
    let mesh = mesh_lab(tag, |_, pod| vec![web(pod, &HTTP_PORTS)]);
    let east = http_endpoints(&mesh, EAST0, &HTTP_PORTS);
    let west = http_endpoints(&mesh, WEST0, &HTTP_PORTS);
    let lab = ProxyLab { east, west, mesh };
    let vip = wait_ready(&lab.mesh, EAST0, WEB, 6);
    (lab, vip)
}

/// `web.shop` with port `http` 80 served on `ports` of `pod`.
fn web(pod: Ipv4Addr, ports: &[u16]) -> ServiceSpec {
    service("web", 80, "http", pod, ports)
}

/// `<name>.shop` with one port `port` of `protocol`, served on `targets` of `pod`.
fn service(name: &str, port: u16, protocol: &str, pod: Ipv4Addr, targets: &[u16]) -> ServiceSpec {
    ServiceSpec {
        name: name.to_owned(),
        namespace: "shop".to_owned(),
        ports: vec![PortSpec {
            name: protocol.to_owned(),
            port,
            protocol: protocol.to_owned(),
        }],
        endpoints: targets
            .iter()
            .map(|&p| EndpointSpec {
                address: pod.into(),
                port: p,
                ready: None,
            })
            .collect(),
    }
}

/// Starts an HTTP endpoint on each of `ports` of node `i`'s pod, named `<cluster>-1`, `-2`, ...
fn http_endpoints(mesh: &MeshLab, i: usize, ports: &[u16]) -> Vec<Endpoint> {
    let node = mesh.node(i);
    ports
        .iter()
        .enumerate()
        .map(|(n, &port)| {
            let addr = SocketAddr::new(node.pod_ip.into(), port);
            let identity = format!("{}-{}", node.cluster_name, n + 1);
            Endpoint::start(node.pod(), Kind::Http, addr, &identity).expect("endpoint starts")
        })
        .collect()
}

/// Node `i`'s `peerd explain NAME --json`, parsed.
fn explain(mesh: &MeshLab, i: usize, name: &str) -> Result<Value> {
    let socket = mesh
        .node(i)
        .peerd()?
        .socket()
        .to_string_lossy()
        .into_owned();
    let out = netns_tests::run(
        Command::new(mesh.bin()).args(["explain", name, "--socket", &socket, "--json"]),
    )?;
    serde_json::from_str(&out).with_context(|| format!("peerd explain printed no JSON: {out:?}"))
}

/// The first port of `name` in an explanation.
fn first_port(explained: &Value) -> Option<&Value> {
    explained["proxy"]["ports"].as_array()?.first()
}

/// Waits until node `i`'s proxy listens for `name` with `ready` ready endpoints; returns the
/// address it listens on (virtual IP and port).
fn wait_ready(mesh: &MeshLab, i: usize, name: &str, ready: usize) -> SocketAddr {
    let mut last = Value::Null;
    let waited = wait_until(ROUTES, "the proxy's routes", || {
        last = explain(mesh, i, name)?;
        let Some(port) = first_port(&last) else {
            return Ok(false);
        };
        let n = port["endpoints"]
            .as_array()
            .map_or(0, |e| e.iter().filter(|e| e["ready"] == true).count());
        Ok(n == ready)
    });
    if let Err(e) = waited {
        panic!("{e:#}\nlast explain: {last:#}\n{}", mesh.logs());
    }
    let listen = first_port(&last).and_then(|p| p["listen"].as_str());
    listen
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no listen address in {last:#}"))
}

/// The tier shares node `i`'s proxy shows for `name`'s first port: `[same-node, same-zone,
/// same-region, remote]`.
fn tier_shares(mesh: &MeshLab, i: usize, name: &str) -> Result<[f64; 4]> {
    let explained = explain(mesh, i, name)?;
    let port = first_port(&explained).context("no port")?;
    let s = &port["tier_shares"];
    let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    Ok([
        f("same_node"),
        f("same_zone"),
        f("same_region"),
        f("remote"),
    ])
}

/// Whether peerd on node `i` still runs.
fn running(mesh: &mut MeshLab, i: usize) -> bool {
    mesh.node_mut(i).is_ok_and(|n| n.is_running())
}
