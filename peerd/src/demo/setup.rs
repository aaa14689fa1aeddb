//! The demo mesh's layout and files: three userspace nodes in two clusters on loopback, a mesh
//! CA, a WireGuard key and certificate per node, and each node's config file.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ipnet::{IpNet, Ipv4Net};
use overlay::PrivateKey;
use peerd_mesh::trust;

/// The namespace of the sample services.
pub const NAMESPACE: &str = "demo";
/// The sample HTTP service's port on its virtual IPs.
pub const WEB_PORT: u16 = 8080;
/// The sample gRPC service's port on its virtual IPs.
pub const GRPC_PORT: u16 = 9090;

/// One demo node.
#[derive(Debug, Clone)]
pub struct NodePlan {
    pub name: String,
    pub cluster: String,
    pub region: String,
    pub zone: String,
    /// Overlay address (also where its endpoints are announced).
    pub address: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    /// WireGuard and control-plane UDP port on 127.0.0.1.
    pub wg_port: u16,
    /// DNS server on 127.0.0.1.
    pub dns_port: u16,
    /// Where its virtual IPs come from (distinct per node: they share one loopback).
    pub service_cidr: Ipv4Net,
    /// The sample HTTP endpoint's port (on 127.0.0.1, and on the overlay address).
    pub web_port: u16,
    /// The sample gRPC endpoint's port, on the nodes that run one.
    pub grpc_port: Option<u16>,
    /// Prometheus `/metrics` listener.
    pub metrics: SocketAddr,
}

impl NodePlan {
    /// The admin socket.
    pub fn socket(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.sock", self.name))
    }

    /// The DNS server's address.
    pub fn dns(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.dns_port))
    }
}

/// East (two nodes in two zones) and west (one node), ports counted from `base`.
pub fn plan(base: u16) -> Vec<NodePlan> {
    let nodes = [
        ("east-1", "east", "us-east", "us-east-1a", 101, 1, false),
        ("east-2", "east", "us-east", "us-east-1b", 101, 2, true),
        ("west-1", "west", "us-west", "us-west-1a", 102, 1, true),
    ];
    nodes
        .iter()
        .enumerate()
        .map(|(i, &(name, cluster, region, zone, net, host, grpc))| {
            let i = i as u16;
            NodePlan {
                name: name.into(),
                cluster: cluster.into(),
                region: region.into(),
                zone: zone.into(),
                address: Ipv4Addr::new(10, net, host, 1),
                pod_cidr: Ipv4Net::new(Ipv4Addr::new(10, net, host, 0), 24).expect("valid"),
                wg_port: base + 1 + i,
                dns_port: base + 53 + i,
                service_cidr: Ipv4Net::new(Ipv4Addr::new(127, 101 + i as u8, 0, 0), 16)
                    .expect("valid"),
                web_port: base + 81 + i,
                grpc_port: grpc.then_some(base + 91 + i),
                metrics: SocketAddr::from((Ipv4Addr::LOCALHOST, base + 61 + i)),
            }
        })
        .collect()
}

/// Writes the CA, every node's key, certificate and config; returns the config paths.
pub fn write(dir: &Path, plans: &[NodePlan]) -> Result<Vec<PathBuf>> {
    let ca = dir.join("ca");
    std::fs::create_dir_all(&ca)?;
    trust::init_ca(&ca).context("cannot create the demo CA")?;
    let seed = plans[0].wg_port;
    let mut configs = Vec::new();
    for p in plans {
        let home = dir.join(&p.name);
        std::fs::create_dir_all(&home)?;
        let identity = trust::NodeIdentity {
            name: p.name.clone(),
            cluster: p.cluster.clone(),
            region: p.region.clone(),
            zone: p.zone.clone(),
            pod_cidrs: vec![IpNet::V4(p.pod_cidr)],
        };
        trust::issue_node(
            &ca,
            &identity,
            std::time::Duration::from_secs(86_400),
            &home,
        )
        .with_context(|| format!("cannot certify {}", p.name))?;
        let key = home.join("wg.key");
        write_private(&key, &PrivateKey::generate().to_base64())?;
        // Every node joins through east-1; east-1 through west-1, so restarts find the mesh.
        let seed = if p.wg_port == seed {
            plans[2].wg_port
        } else {
            seed
        };
        let path = home.join("node.toml");
        std::fs::write(&path, config(dir, p, seed))
            .with_context(|| format!("cannot write {}", path.display()))?;
        configs.push(path);
    }
    Ok(configs)
}

fn config(dir: &Path, p: &NodePlan, seed: u16) -> String {
    let home = dir.join(&p.name);
    let h = |f: &str| home.join(f).display().to_string();
    let mut out = format!(
        "# peerd demo node {name} (userspace mode: no TUN, no routes, no privilege)\n\
         [node]\nname = \"{name}\"\ncluster = \"{cluster}\"\nregion = \"{region}\"\nzone = \"{zone}\"\n\
         private_key_file = \"{key}\"\nlisten_port = {port}\naddress = \"{address}\"\n\
         pod_cidrs = [\"{pod}\"]\nmode = \"userspace\"\n\n\
         [admin]\nsocket = \"{socket}\"\nuapi_dir = \"{home}\"\nmetrics = \"{metrics}\"\n\n\
         [mesh]\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{certkey}\"\n\
         seeds = [\"127.0.0.1:{seed}\"]\nstate_dir = \"{state}\"\nadvertise = [\"127.0.0.1:{port}\"]\n\n\
         [dns]\nlisten = \"{dns}\"\nservice_cidr = \"{cidr}\"\n\n",
        name = p.name,
        cluster = p.cluster,
        region = p.region,
        zone = p.zone,
        key = h("wg.key"),
        port = p.wg_port,
        address = p.address,
        pod = p.pod_cidr,
        socket = p.socket(dir).display(),
        home = home.display(),
        metrics = p.metrics,
        ca = dir.join("ca/ca.pem").display(),
        cert = h("node.pem"),
        certkey = h("node.key"),
        state = h("state"),
        dns = p.dns(),
        cidr = p.service_cidr,
    );
    let _ = write!(
        out,
        "[[service]]\nname = \"web\"\nnamespace = \"{NAMESPACE}\"\n\
         ports = [{{ name = \"http\", port = {WEB_PORT}, protocol = \"http\" }}]\n\
         endpoints = [{{ address = \"{}\", port = {} }}]\n\n",
        p.address, p.web_port
    );
    if let Some(grpc) = p.grpc_port {
        let _ = write!(
            out,
            "[[service]]\nname = \"greeter\"\nnamespace = \"{NAMESPACE}\"\n\
             ports = [{{ name = \"grpc\", port = {GRPC_PORT}, protocol = \"grpc\" }}]\n\
             endpoints = [{{ address = \"{}\", port = {grpc} }}]\n",
            p.address
        );
    }
    out
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}
