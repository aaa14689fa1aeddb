//! A multi-cluster peerd mesh on namespaces, for the control-plane tests and the convergence
//! benchmark.
//!
//! Layout: one router namespace holds a bridge per cluster (`east` on 192.0.2.0/24, `west` on
//! 198.51.100.0/24, `north` on 203.0.113.0/24, a fourth on the benchmarking range 198.18.0.0/24)
//! and routes between them. The router reaches each bridge through its own veth pair, so
//! [`MeshLab::cut`] (that link down) separates a cluster from the others while its nodes still
//! reach each other. Every node namespace hangs off its cluster's bridge and has a pod namespace
//! behind it: node `k` of cluster `c` owns pod CIDR `10.<c+1>.<k>.0/24`, is `.1` in it (its
//! overlay address, also the pod's gateway) and its pod is `.10`.
//!
//! Certificates come from the real `peerd ca` commands: a mesh root CA, one intermediate per
//! cluster restricted to `10.<c+1>.0.0/16`, and a node certificate each.

mod converge;
mod monitor;
mod node;
mod probe;
mod status;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub use monitor::{RouteEvent, RouteMonitor};
pub use node::MeshNode;
pub use probe::{UdpProbe, reach_times};
pub use status::{kernel_routes, mesh_count, peer_field, peer_state};

use crate::Keypair;
use crate::lab::Lab;
use crate::link::{End, connect};
use crate::netns::Netns;
use crate::peerd::{MeshSpec, PeerdConfig, peerd_bin};
use crate::proc::run;
use crate::wait::wait_until;

/// The UDP port every mesh node listens on (WireGuard and the control plane).
pub const MESH_PORT: u16 = 51820;
/// Underlay /24 of each cluster, by cluster index.
const UNDERLAYS: [[u8; 3]; 4] = [[192, 0, 2], [198, 51, 100], [203, 0, 113], [198, 18, 0]];
/// The router's host number on every cluster's underlay.
const ROUTER_HOST: u8 = 254;
/// Nodes per cluster (host numbers 1..=200 are nodes, above are extra hosts).
const MAX_NODES: usize = 100;

/// How a node is started by [`MeshLab::add_node_with`].
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Seeds (`[mesh] seeds`).
    pub seeds: Vec<SocketAddr>,
    /// A CA folder (ca.pem, ca.key) other than the cluster's: the node's certificate and its
    /// `ca_file` come from there, and the node does not count as a mesh member.
    pub foreign_ca: Option<PathBuf>,
    /// Prepare the node without starting peerd ([`MeshLab::start`] starts it).
    pub deferred: bool,
}

/// A mesh testbed: the router, its clusters, the nodes and extra hosts, and the [`Lab`].
///
/// Dropping it kills every peerd and deletes every namespace; the lab directory (configs, logs,
/// certificates) is kept when the thread is panicking.
#[derive(Debug)]
pub struct MeshLab {
    // Drop order: daemons and their namespaces first, the router, then the lab directory.
    nodes: Vec<MeshNode>,
    hosts: Vec<Netns>,
    router: Netns,
    clusters: Vec<String>,
    ca: PathBuf,
    bin: PathBuf,
    lab: Lab,
}

impl MeshLab {
    /// A router with one bridge per cluster in `clusters` (at most 4), and a mesh CA with one
    /// intermediate per cluster. `tag` names the test (see [`Lab::new`]).
    pub fn new(tag: &str, clusters: &[&str]) -> Result<MeshLab> {
        if clusters.is_empty() || clusters.len() > UNDERLAYS.len() {
            bail!("a mesh lab has 1 to {} clusters", UNDERLAYS.len());
        }
        let lab = Lab::new(tag)?;
        let bin = peerd_bin()?;
        let router = build_router(&lab, clusters.len())?;
        let ca = build_ca(&bin, &lab, clusters)?;
        Ok(MeshLab {
            nodes: Vec::new(),
            hosts: Vec::new(),
            router,
            clusters: clusters.iter().map(|s| (*s).to_owned()).collect(),
            ca,
            bin,
            lab,
        })
    }

    /// Adds and starts node number `k` (the next free one) of cluster `c`, joining through
    /// `seeds`; returns its index in [`MeshLab::nodes`].
    pub fn add_node(&mut self, c: usize, seeds: &[SocketAddr]) -> Result<usize> {
        self.add_node_with(
            c,
            NodeOptions {
                seeds: seeds.to_vec(),
                ..NodeOptions::default()
            },
        )
    }

    /// Adds a node of cluster `c` as `opts` say; returns its index in [`MeshLab::nodes`].
    pub fn add_node_with(&mut self, c: usize, opts: NodeOptions) -> Result<usize> {
        let cluster = self
            .clusters
            .get(c)
            .with_context(|| format!("no cluster {c}"))?
            .clone();
        let k = self.nodes.iter().filter(|n| n.cluster == c).count();
        if k >= MAX_NODES {
            bail!("cluster {cluster} is full");
        }
        let i = self.nodes.len();
        let (net, third) = (c as u8 + 1, k as u8);
        let name = format!("{cluster}-{k}");
        let mut node = MeshNode {
            peerd: None,
            ns: self.lab.netns(&name)?,
            pod: self.lab.netns(&format!("{name}-pod"))?,
            name,
            cluster: c,
            cluster_name: cluster,
            underlay: host(c, k as u8 + 1),
            address: Ipv4Addr::new(10, net, third, 1),
            pod_cidr: format!("10.{net}.{third}.0/24"),
            pod_ip: Ipv4Addr::new(10, net, third, 10),
            member: opts.foreign_ca.is_none(),
            cfg: PeerdConfig::new("", "", "", Ipv4Addr::UNSPECIFIED),
        };
        self.wire(&node, i)?;
        node.cfg = self.configure(&node, i, k, opts.seeds, opts.foreign_ca.as_deref())?;
        self.nodes.push(node);
        if !opts.deferred {
            self.start(i)?;
        }
        Ok(i)
    }

    /// Starts peerd on node `i` (prepared with [`NodeOptions::deferred`]) and waits until it
    /// answers `status`.
    pub fn start(&mut self, i: usize) -> Result<()> {
        let dir = self.lab.dir().to_owned();
        self.node_mut(i)?.start(&dir)
    }

    /// An extra namespace on cluster `c`'s bridge with host number `host_number` (201–253), for
    /// traffic that is not a node's; returns a handle to it and its address. The lab owns it.
    pub fn add_host(&mut self, c: usize, host_number: u8) -> Result<(Netns, Ipv4Addr)> {
        if !(201..ROUTER_HOST).contains(&host_number) || c >= self.clusters.len() {
            bail!("extra hosts use host numbers 201-253 of an existing cluster");
        }
        let j = self.hosts.len();
        let ns = self.lab.netns(&format!("x{j}"))?;
        let addr = host(c, host_number);
        self.attach(&ns, c, addr, &format!("x{j}"), &format!("y{j}"))?;
        let handle = ns.handle();
        self.hosts.push(ns);
        Ok((handle, addr))
    }

    /// Cuts cluster `c` off the other clusters (the router's link to its bridge goes down); the
    /// cluster's nodes still reach each other.
    pub fn cut(&self, c: usize) -> Result<()> {
        let link = self.lab.ifname(&format!("g{c}"))?;
        self.router.ip(&["link", "set", &link, "down"]).map(|_| ())
    }

    /// Undoes [`MeshLab::cut`].
    pub fn restore(&self, c: usize) -> Result<()> {
        let link = self.lab.ifname(&format!("g{c}"))?;
        self.router.ip(&["link", "set", &link, "up"])?;
        // The connected route comes back with the link; wait for it so callers see a working
        // underlay at once.
        let net = format!("{}/24", host(c, 0));
        wait_until(Duration::from_secs(5), "the router's route back", || {
            Ok(self.router.ip(&["route", "show", &net])?.contains(&link))
        })
    }

    /// Unplugs node `i` from its cluster's bridge (the bridge's end of its link goes down): the
    /// node keeps its addresses and routes but reaches nobody.
    pub fn unplug(&self, i: usize) -> Result<()> {
        let port = self.lab.ifname(&format!("r{i}"))?;
        self.router.ip(&["link", "set", &port, "down"]).map(|_| ())
    }

    /// Undoes [`MeshLab::unplug`].
    pub fn plug(&self, i: usize) -> Result<()> {
        let port = self.lab.ifname(&format!("r{i}"))?;
        self.router.ip(&["link", "set", &port, "up"]).map(|_| ())
    }

    /// Every node, in the order they were added.
    pub fn nodes(&self) -> &[MeshNode] {
        &self.nodes
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &MeshNode {
        &self.nodes[i]
    }

    /// Node `i`, mutably (to kill or restart it).
    pub fn node_mut(&mut self, i: usize) -> Result<&mut MeshNode> {
        self.nodes
            .get_mut(i)
            .with_context(|| format!("no node {i}"))
    }

    /// The index of the node called `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The underlay `ip:port` that node `k` of cluster `c` has (or will have): for seeds.
    pub fn seed(c: usize, k: usize) -> SocketAddr {
        SocketAddr::new(host(c, k as u8 + 1).into(), MESH_PORT)
    }

    /// The lab (directory and names).
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The peerd binary the nodes run.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Creates a root CA that is not the mesh's in the lab folder `name`; returns its folder.
    pub fn foreign_ca(&self, name: &str) -> Result<PathBuf> {
        let dir = self.lab.path(name);
        ca_cmd(&self.bin, &["init", "--out", &path_str(&dir)])?;
        Ok(dir)
    }

    /// Links node `i` to its cluster's bridge and its pod behind it, and makes it a router.
    fn wire(&self, node: &MeshNode, i: usize) -> Result<()> {
        let (ns, pod) = (&node.ns, &node.pod);
        self.attach(
            ns,
            node.cluster,
            node.underlay,
            &format!("u{i}"),
            &format!("r{i}"),
        )?;
        connect(
            End {
                ns,
                ifname: &self.lab.ifname(&format!("p{i}"))?,
                addrs: &[&format!("{}/24", node.address)],
            },
            End {
                ns: pod,
                ifname: &self.lab.ifname(&format!("q{i}"))?,
                addrs: &[&format!("{}/24", node.pod_ip)],
            },
        )?;
        pod.ip(&["route", "add", "default", "via", &node.address.to_string()])?;
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        for key in [
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.default.rp_filter",
        ] {
            ns.sysctl(key, "0")?;
        }
        Ok(())
    }

    /// Certifies node `i` (number `k` of its cluster) with `peerd ca issue`, from its cluster's
    /// intermediate or from `foreign_ca`, and returns its peerd config.
    fn configure(
        &self,
        node: &MeshNode,
        i: usize,
        k: usize,
        seeds: Vec<SocketAddr>,
        foreign_ca: Option<&Path>,
    ) -> Result<PeerdConfig> {
        let (name, cluster) = (&node.name, &node.cluster_name);
        let dir = self.lab.path(name);
        let (ca_dir, ca_file) = match foreign_ca {
            Some(other) => (other.to_owned(), other.join("ca.pem")),
            None => (
                self.lab.path(&format!("ca-{cluster}")),
                self.ca.join("ca.pem"),
            ),
        };
        let (region, zone) = (format!("region-{cluster}"), format!("zone-{cluster}-{k}"));
        let (ca_dir, out) = (path_str(&ca_dir), path_str(&dir));
        ca_cmd(
            &self.bin,
            &[
                "issue",
                "--ca",
                &ca_dir,
                "--node",
                name,
                "--cluster",
                cluster,
                "--region",
                &region,
                "--zone",
                &zone,
                "--pod-cidr",
                &node.pod_cidr,
                "--out",
                &out,
            ],
        )?;
        let keys = Keypair::peerd(&self.bin)?;
        let iface = self.lab.ifname(&format!("t{i}"))?;
        let mut cfg = PeerdConfig::new(name, &iface, &keys.private, node.address);
        cfg.cluster = cluster.clone();
        cfg.region = region;
        cfg.zone = zone;
        cfg.listen_port = MESH_PORT;
        cfg.pod_cidrs = vec![node.pod_cidr.clone()];
        cfg.mesh = Some(MeshSpec {
            ca_file,
            cert_file: dir.join("node.pem"),
            key_file: dir.join("node.key"),
            seeds,
            state_dir: dir.join("state"),
            tunnel_same_cluster: true,
            advertise: Vec::new(),
        });
        Ok(cfg)
    }

    /// Attaches `ns` to cluster `c`'s bridge as `addr`/24 with routes to every other cluster
    /// through the router (`inner`/`outer` name the veth ends).
    fn attach(&self, ns: &Netns, c: usize, addr: Ipv4Addr, inner: &str, outer: &str) -> Result<()> {
        let (inner, outer) = (self.lab.ifname(inner)?, self.lab.ifname(outer)?);
        connect(
            End {
                ns,
                ifname: &inner,
                addrs: &[&format!("{addr}/24")],
            },
            End {
                ns: &self.router,
                ifname: &outer,
                addrs: &[],
            },
        )?;
        let bridge = self.lab.ifname(&format!("b{c}"))?;
        self.router
            .ip(&["link", "set", &outer, "master", &bridge])?;
        let gateway = host(c, ROUTER_HOST).to_string();
        for other in (0..self.clusters.len()).filter(|&o| o != c) {
            let net = format!("{}/24", host(other, 0));
            ns.ip(&["route", "add", &net, "via", &gateway])?;
        }
        Ok(())
    }
}

/// The router namespace: a bridge per cluster, each reached through a veth pair whose router end
/// holds `.254` of the cluster's underlay.
fn build_router(lab: &Lab, clusters: usize) -> Result<Netns> {
    let router = lab.netns("router")?;
    router.sysctl("net.ipv4.ip_forward", "1")?;
    // Each gateway address lives on one veth end while the bridges also see every ARP request:
    // without these, the router answers for `.254` from the bridge too (ARP flux), and a node
    // that learns the bridge's MAC loses its traffic to other clusters for seconds.
    for key in ["all", "default"] {
        router.sysctl(&format!("net.ipv4.conf.{key}.arp_ignore"), "1")?;
        router.sysctl(&format!("net.ipv4.conf.{key}.arp_announce"), "2")?;
    }
    for c in 0..clusters {
        let (bridge, up, port) = (
            lab.ifname(&format!("b{c}"))?,
            lab.ifname(&format!("g{c}"))?,
            lab.ifname(&format!("h{c}"))?,
        );
        router.ip(&["link", "add", &bridge, "type", "bridge"])?;
        router.ip(&["link", "set", &bridge, "up"])?;
        let addr = format!("{}/24", host(c, ROUTER_HOST));
        connect(
            End {
                ns: &router,
                ifname: &up,
                addrs: &[&addr],
            },
            End {
                ns: &router,
                ifname: &port,
                addrs: &[],
            },
        )?;
        router.ip(&["link", "set", &port, "master", &bridge])?;
    }
    Ok(router)
}

/// The mesh root CA in `<lab>/ca` and, per cluster, an intermediate in `<lab>/ca-<cluster>`
/// that may only certify pod CIDRs inside `10.<c+1>.0.0/16`. Returns the root's folder.
fn build_ca(bin: &Path, lab: &Lab, clusters: &[&str]) -> Result<PathBuf> {
    let ca = lab.path("ca");
    ca_cmd(bin, &["init", "--out", &path_str(&ca)])?;
    for (c, name) in clusters.iter().enumerate() {
        let cidr = format!("10.{}.0.0/16", c + 1);
        let (root, out) = (path_str(&ca), path_str(&lab.path(&format!("ca-{name}"))));
        ca_cmd(
            bin,
            &[
                "intermediate",
                "--ca",
                &root,
                "--cluster",
                name,
                "--pod-cidr",
                &cidr,
                "--out",
                &out,
            ],
        )?;
    }
    Ok(ca)
}

/// Host `n` on cluster `c`'s underlay.
fn host(c: usize, n: u8) -> Ipv4Addr {
    let [a, b, d] = UNDERLAYS[c];
    Ipv4Addr::new(a, b, d, n)
}

fn ca_cmd(bin: &Path, args: &[&str]) -> Result<()> {
    run(Command::new(bin).arg("ca").args(args)).map(|_| ())
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
