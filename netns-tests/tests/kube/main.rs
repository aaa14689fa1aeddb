//! End-to-end test of peerd in Kubernetes mode (issue 7): the real `peerd` binary learns its
//! exports from a Kubernetes API server, and other clusters reach them by global name.
//!
//! Topology ([`netns_tests::MeshLab`]): east-0 (192.0.2.1, pods 10.1.0.0/24) and west-0
//! (198.51.100.1, pods 10.2.0.0/24, joining through east-0), each with `[dns] listen =
//! "<pod gateway>:53"`, a `[kubernetes]` table, `NODE_NAME` and a `KUBECONFIG` naming its own
//! cluster's API server, and no `[[service]]` at all. Each cluster's API server is a
//! `peerd_kube::fake::FakeApiServer` run by this process on `127.0.0.1` *inside that node's
//! namespace* (its socket is bound by a thread that entered the namespace). It holds the node's
//! Node object (pod CIDR and locality labels as on the node's certificate), and one Service with
//! an EndpointSlice whose endpoint is the node's pod (port 8080, `nodeName` the node) and a
//! ServiceExport: `web.shop` in east, `api.shop` in west. A plain HTTP server in each pod
//! answers with its service and node name.
//!
//! What is proven:
//! - from west-0's pod, `web.shop.global` and `east.web.shop.global` resolve through west-0's
//!   DNS, and an HTTP GET to each virtual IP on port 80 is answered by east-0's pod (through
//!   west-0's proxy and the tunnel); the same from east-0's pod for `api.shop.global` and
//!   `west.api.shop.global`, answered by west-0's pod. Both nodes' catalogs list the endpoints
//!   with the node and pod address the fake cluster gave;
//! - once east's ServiceExport is deleted from its API server, `web.shop.global` and
//!   `east.web.shop.global` are NXDOMAIN on west-0 (and on east-0) within 5 s, while west's
//!   export still resolves.
//!
//! Build the daemon first (`cargo build -p peerd`) or set `PEERD_BIN`; without it (or root,
//! /dev/net/tun, `ip` and `dig`) the test says SKIPPED, or fails under `CI=true`.

mod cluster;
mod http;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use cluster::FakeCluster;
use http::PodServer;
use netns_tests::{
    Answer, DnsSpec, MeshLab, Need, NodeOptions, Transport, dig, require, wait_until,
};
use serde_json::Value;

/// Clusters by index, and the service each one exports (namespace [`NAMESPACE`]).
const CLUSTERS: [&str; 2] = ["east", "west"];
const SERVICES: [&str; 2] = ["web", "api"];
const EAST: usize = 0;
const WEST: usize = 1;
const NAMESPACE: &str = "shop";
/// The pods' HTTP port (the EndpointSlice's port; the Service's is 80).
const POD_PORT: u16 = 8080;
/// Deadline for the mesh to converge from scratch.
const CONVERGE: Duration = Duration::from_secs(15);
/// Deadline for an export to be listed, resolved and answered from the other cluster.
const SEEN: Duration = Duration::from_secs(15);
/// The bound for a deleted ServiceExport to disappear from the other cluster's DNS.
const WITHDRAWN: Duration = Duration::from_secs(5);
/// How long one `dig` waits for its answer.
const DIG_WAIT: Duration = Duration::from_secs(1);

/// Two one-node clusters in Kubernetes mode. Fields drop in order: the daemons and namespaces
/// first, then the API servers, the pod servers and the runtime that serves the fakes.
struct KubeLab {
    mesh: MeshLab,
    clusters: Vec<FakeCluster>,
    pods: Vec<PodServer>,
    _rt: tokio::runtime::Runtime,
}

#[test]
fn exports_from_the_api_resolve_and_answer_across_clusters_until_unexported() {
    require!(Need::Root, Need::Tun, Need::Ip, Need::Dig, Need::Peerd);
    let lab = kube_lab("kube");
    for c in [EAST, WEST] {
        assert!(
            lab.clusters[c].requests() > 0,
            "{}-0 never called its API server",
            CLUSTERS[c]
        );
    }

    for (asker, owner) in [(WEST, EAST), (EAST, WEST)] {
        let service = SERVICES[owner];
        let plain = format!("{service}.{NAMESPACE}.global");
        let pinned = format!("{}.{plain}", CLUSTERS[owner]);
        let served_before = lab.pods[owner].served();
        for name in [&plain, &pinned] {
            let vip = resolve(&lab, asker, name);
            let body = get_through(&lab, asker, vip, name);
            assert_eq!(
                body,
                pod_body(&lab, owner),
                "GET {name} ({vip}) from {asker}"
            );
            eprintln!(
                "{name} = {vip} from {}: {body:?}",
                lab.mesh.node(asker).name
            );
        }
        assert!(
            lab.pods[owner].served() >= served_before + 2,
            "the owner's pod served {} requests",
            lab.pods[owner].served()
        );
        check_catalog(&lab, asker, owner);
    }

    // Withdraw east's export in its API server: both names leave west-0's DNS.
    lab.clusters[EAST]
        .unexport(SERVICES[EAST], NAMESPACE)
        .expect("ServiceExport deleted");
    let deleted = Instant::now();
    let web = format!("{}.{NAMESPACE}.global", SERVICES[EAST]);
    let mut last = None;
    let gone = wait_until(WITHDRAWN, "NXDOMAIN for the unexported name", || {
        let a = ask(&lab, WEST, &web)?;
        let done = a.status == "NXDOMAIN";
        last = Some(a);
        Ok(done)
    });
    if let Err(e) = gone {
        panic!("{e:#}; last answer {last:?}\n{}", lab.mesh.logs());
    }
    eprintln!(
        "{web} is NXDOMAIN on west-0 {:?} after the ServiceExport was deleted",
        deleted.elapsed()
    );
    for i in [WEST, EAST] {
        for name in [web.clone(), format!("east.{web}")] {
            let a = ask(&lab, i, &name).expect("dig");
            assert_eq!(
                (a.status.as_str(), a.has_flag("aa")),
                ("NXDOMAIN", true),
                "{name} on {}: {a:?}",
                lab.mesh.node(i).name
            );
        }
    }
    let api = format!("{}.{NAMESPACE}.global", SERVICES[WEST]);
    let a = ask(&lab, EAST, &api).expect("dig");
    assert!(single_a(&a).is_some(), "{api} after east's unexport: {a:?}");
}

/// Builds the lab: for each cluster a node prepared with its fake API server, its exported
/// service and its pod's HTTP server, then started; waits until the mesh converged.
fn kube_lab(tag: &str) -> KubeLab {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut mesh = MeshLab::new(tag, &CLUSTERS).expect("mesh lab");
    let (mut clusters, mut pods) = (Vec::new(), Vec::new());
    for (c, seeds) in [(EAST, vec![]), (WEST, vec![MeshLab::seed(EAST, 0)])] {
        let opts = NodeOptions {
            seeds,
            deferred: true,
            ..Default::default()
        };
        let i = mesh.add_node_with(c, opts).expect("node prepared");
        let node = mesh.node(i);
        let kubeconfig = mesh.lab().path(&format!("{}.kubeconfig", node.name));
        let cluster = FakeCluster::start(&rt, node, kubeconfig).expect("fake API server");
        cluster
            .export(node, SERVICES[c], NAMESPACE, POD_PORT)
            .expect("objects stored");
        let bind = SocketAddr::new(node.pod_ip.into(), POD_PORT);
        let body = format!("{} from {}\n", SERVICES[c], node.name);
        pods.push(PodServer::start(node.pod(), bind, &body).expect("pod server"));
        let spec = cluster.kube_spec();
        let node = mesh.node_mut(i).expect("node");
        let dns = DnsSpec::new(dns_addr(node.address.into()));
        let cfg = node.config_mut();
        cfg.dns = Some(dns);
        cfg.kubernetes = Some(spec);
        mesh.start(i).expect("node starts");
        clusters.push(cluster);
    }
    let took = mesh
        .wait_converged(CONVERGE)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("east-0 and west-0 converged {took:?} after west-0 was ready");
    KubeLab {
        mesh,
        clusters,
        pods,
        _rt: rt,
    }
}

/// What cluster `c`'s pod answers.
fn pod_body(lab: &KubeLab, c: usize) -> String {
    format!("{} from {}\n", SERVICES[c], lab.mesh.node(c).name)
}

/// Where a node's DNS server listens: port 53 of its pod gateway.
fn dns_addr(gateway: IpAddr) -> SocketAddr {
    SocketAddr::new(gateway, 53)
}

/// Node `i`'s DNS answer for `name`/A, asked with dig from its pod.
fn ask(lab: &KubeLab, i: usize, name: &str) -> anyhow::Result<Answer> {
    let node = lab.mesh.node(i);
    let server = dns_addr(node.address.into());
    dig(node.pod(), server, name, "A", Transport::Udp, DIG_WAIT)
}

/// The single A record of `answer` (`None` unless NOERROR with exactly one A).
fn single_a(answer: &Answer) -> Option<IpAddr> {
    match answer.data("A")[..] {
        [ip] if answer.status == "NOERROR" => ip.parse().ok(),
        _ => None,
    }
}

/// Waits until node `i`'s DNS answers `name` with one address (the authoritative virtual IP).
fn resolve(lab: &KubeLab, i: usize, name: &str) -> IpAddr {
    let mut found = None;
    let mut last = None;
    let waited = wait_until(SEEN, &format!("an A record for {name}"), || {
        let a = ask(lab, i, name)?;
        found = single_a(&a).filter(|_| a.has_flag("aa"));
        last = Some(a);
        Ok(found.is_some())
    });
    match (waited, found) {
        (Ok(()), Some(vip)) => vip,
        (waited, _) => panic!("{waited:?}; last answer {last:?}\n{}", lab.mesh.logs()),
    }
}

/// GETs `/` on `vip`:80 from node `i`'s pod until a `200` comes back (the proxy may learn the
/// route a moment after DNS does); returns its body.
fn get_through(lab: &KubeLab, i: usize, vip: IpAddr, name: &str) -> String {
    let pod = lab.mesh.node(i).pod();
    let mut body = None;
    let mut last = None;
    let waited = wait_until(SEEN, &format!("a 200 from {name}"), || {
        let r = http::get(pod, SocketAddr::new(vip, 80), name, "/")?;
        if r.status == 200 {
            body = Some(r.body);
            return Ok(true);
        }
        last = Some(r);
        Ok(false)
    });
    match (waited, body) {
        (Ok(()), Some(body)) => body,
        (waited, _) => panic!("{waited:?}; last response {last:?}\n{}", lab.mesh.logs()),
    }
}

/// Node `asker`'s `peerd services --json` lists `owner`'s service with the endpoint the fake
/// cluster gave: the owner's pod on port 8080, on the owner node, alive.
fn check_catalog(lab: &KubeLab, asker: usize, owner: usize) {
    let list = lab
        .mesh
        .node(asker)
        .services()
        .unwrap_or_else(|e| panic!("{e:#}"));
    let name = format!("{}.{NAMESPACE}.global", SERVICES[owner]);
    let entry = list["services"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["global_name"] == name.as_str()))
        .unwrap_or_else(|| panic!("no {name} in {list}"));
    let node = lab.mesh.node(owner);
    let endpoint: &Value = &entry["clusters"][CLUSTERS[owner]]["endpoints"][0];
    assert_eq!(
        endpoint["address"],
        node.pod_ip.to_string(),
        "{name}: {entry}"
    );
    assert_eq!(endpoint["ports"]["http"], POD_PORT, "{name}: {entry}");
    assert_eq!(endpoint["node"], node.name.as_str(), "{name}: {entry}");
    assert_eq!(endpoint["node_alive"], true, "{name}: {entry}");
}
