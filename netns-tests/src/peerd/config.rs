//! The TOML file a [`crate::Peerd`] is started with (the `[node]`, `[admin]`, `[mesh]`, `[dns]`,
//! `[kubernetes]`, `[[service]]` and `[[peer]]` tables of DESIGN.md's config contract).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::service::{DnsSpec, ServiceSpec};
use crate::PeerSpec;

/// What a peerd node is started with. [`PeerdConfig::new`] fills in the rest.
#[derive(Debug, Clone)]
pub struct PeerdConfig {
    /// Node name (`[node] name`).
    pub name: String,
    /// Cluster name (`[node] cluster`, default `test`).
    pub cluster: String,
    /// Region (`[node] region`, default empty); must equal the certificate's with `[mesh]`.
    pub region: String,
    /// Zone (`[node] zone`, default empty); must equal the certificate's with `[mesh]`.
    pub zone: String,
    /// Base64 private key, written to `<dir>/<name>.key` for `private_key_file`.
    pub private_key: String,
    /// UDP listen port (default 51820).
    pub listen_port: u16,
    /// The TUN device name; unique machine-wide, its UAPI socket name derives from it.
    pub interface: String,
    /// IPv4 overlay address (a /32 on the TUN).
    pub address: Ipv4Addr,
    /// Optional IPv6 overlay address (a /128 on the TUN).
    pub address6: Option<Ipv6Addr>,
    /// Pod CIDRs of this node.
    pub pod_cidrs: Vec<String>,
    /// `mode = "userspace"` (smoltcp inside peerd, no TUN) instead of `"kernel"`.
    pub userspace: bool,
    /// Leave `uapi_dir` out, so the UAPI socket is `/var/run/wireguard/<iface>.sock` and `wg show`
    /// finds it. When false (the default) it goes to `<dir>/wg`, out of every other test's way.
    pub default_uapi_dir: bool,
    /// Static peers.
    pub peers: Vec<PeerSpec>,
    /// The `[mesh]` table (dynamic peers through the control plane), if any.
    pub mesh: Option<MeshSpec>,
    /// The `[dns]` table (the `.global` DNS server), if any.
    pub dns: Option<DnsSpec>,
    /// The `[[service]]` tables: services this node exports.
    pub services: Vec<ServiceSpec>,
    /// The `[kubernetes]` table (services from a Kubernetes API server), if any.
    pub kubernetes: Option<KubeSpec>,
}

/// The `[kubernetes]` table, and the environment the daemon needs with it (peerd takes the node
/// name from `NODE_NAME` and the API server from `KUBECONFIG`).
#[derive(Debug, Clone)]
pub struct KubeSpec {
    /// `NODE_NAME`: the name of this node's Node object.
    pub node_name: String,
    /// `KUBECONFIG`: a kubeconfig file naming the API server.
    pub kubeconfig: PathBuf,
    /// `service_export_version`; `None` leaves it out (peerd's default, `v1alpha1`).
    pub service_export_version: Option<String>,
}

/// The `[mesh]` table: certificate files, seeds and the state directory.
#[derive(Debug, Clone)]
pub struct MeshSpec {
    /// The mesh CA certificate (`ca_file`).
    pub ca_file: PathBuf,
    /// This node's certificate chain (`cert_file`).
    pub cert_file: PathBuf,
    /// This node's certificate key (`key_file`).
    pub key_file: PathBuf,
    /// Underlay `ip:port` of other nodes to join through.
    pub seeds: Vec<SocketAddr>,
    /// Where the last known mesh is kept across restarts.
    pub state_dir: PathBuf,
    /// Tunnel to nodes of the node's own cluster too.
    pub tunnel_same_cluster: bool,
    /// Underlay `ip:port` to announce; empty leaves the field out (peerd's default).
    pub advertise: Vec<SocketAddr>,
}

impl PeerdConfig {
    /// A kernel-mode node in cluster `test` on port 51820, without IPv6 or peers.
    pub fn new(name: &str, interface: &str, private_key: &str, address: Ipv4Addr) -> Self {
        PeerdConfig {
            name: name.to_owned(),
            cluster: "test".to_owned(),
            region: String::new(),
            zone: String::new(),
            private_key: private_key.to_owned(),
            listen_port: 51820,
            interface: interface.to_owned(),
            address,
            address6: None,
            pod_cidrs: Vec::new(),
            userspace: false,
            default_uapi_dir: false,
            peers: Vec::new(),
            mesh: None,
            dns: None,
            services: Vec::new(),
            kubernetes: None,
        }
    }

    /// Renders the TOML file; `key_file`, `socket` and `uapi_dir` are paths in the lab dir.
    pub(crate) fn render(&self, key_file: &Path, socket: &Path, uapi_dir: &Path) -> Result<String> {
        let file = File {
            node: Node {
                name: &self.name,
                cluster: &self.cluster,
                region: &self.region,
                zone: &self.zone,
                private_key_file: key_file.to_string_lossy().into_owned(),
                listen_port: self.listen_port,
                interface: &self.interface,
                address: self.address.to_string(),
                address6: self.address6.map(|a| a.to_string()),
                pod_cidrs: &self.pod_cidrs,
                mode: if self.userspace {
                    "userspace"
                } else {
                    "kernel"
                },
            },
            admin: Admin {
                socket: socket.to_string_lossy().into_owned(),
                uapi_dir: (!self.default_uapi_dir).then(|| uapi_dir.to_string_lossy().into_owned()),
            },
            mesh: self.mesh.as_ref().map(|m| Mesh {
                ca_file: m.ca_file.to_string_lossy().into_owned(),
                cert_file: m.cert_file.to_string_lossy().into_owned(),
                key_file: m.key_file.to_string_lossy().into_owned(),
                seeds: m.seeds.iter().map(ToString::to_string).collect(),
                state_dir: m.state_dir.to_string_lossy().into_owned(),
                tunnel_same_cluster: m.tunnel_same_cluster,
                advertise: m.advertise.iter().map(ToString::to_string).collect(),
            }),
            dns: self.dns.as_ref(),
            kubernetes: self.kubernetes.as_ref().map(|k| Kubernetes {
                service_export_version: k.service_export_version.as_deref(),
            }),
            service: &self.services,
            peer: self
                .peers
                .iter()
                .map(|p| Peer {
                    name: &p.name,
                    public_key: &p.public_key,
                    endpoint: p.endpoint.map(|e| e.to_string()),
                    allowed_ips: &p.allowed_ips,
                    persistent_keepalive: p.persistent_keepalive,
                })
                .collect(),
        };
        toml::to_string(&file).context("cannot render peerd config")
    }
}

#[derive(Serialize)]
struct File<'a> {
    node: Node<'a>,
    admin: Admin,
    #[serde(skip_serializing_if = "Option::is_none")]
    mesh: Option<Mesh>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<&'a DnsSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kubernetes: Option<Kubernetes<'a>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    service: &'a [ServiceSpec],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    peer: Vec<Peer<'a>>,
}

#[derive(Serialize)]
struct Node<'a> {
    name: &'a str,
    cluster: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    region: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    zone: &'a str,
    private_key_file: String,
    listen_port: u16,
    interface: &'a str,
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    address6: Option<String>,
    pod_cidrs: &'a [String],
    mode: &'static str,
}

#[derive(Serialize)]
struct Admin {
    socket: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    uapi_dir: Option<String>,
}

#[derive(Serialize)]
struct Mesh {
    ca_file: String,
    cert_file: String,
    key_file: String,
    seeds: Vec<String>,
    state_dir: String,
    tunnel_same_cluster: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    advertise: Vec<String>,
}

#[derive(Serialize)]
struct Kubernetes<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    service_export_version: Option<&'a str>,
}

#[derive(Serialize)]
struct Peer<'a> {
    name: &'a str,
    public_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    allowed_ips: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    persistent_keepalive: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file `cfg` renders to, as text and parsed.
    fn rendered(cfg: &PeerdConfig) -> (String, toml::Value) {
        let text = cfg
            .render(
                Path::new("/t/a.key"),
                Path::new("/t/a.sock"),
                Path::new("/t/wg"),
            )
            .unwrap();
        let v = toml::from_str(&text).unwrap();
        (text, v)
    }

    #[test]
    fn renders_the_contract_tables() {
        let mut cfg = PeerdConfig::new("a", "pd0", "KEY", Ipv4Addr::new(10, 0, 0, 1));
        cfg.address6 = Some("fd00::1".parse().unwrap());
        let mut peer = PeerSpec::new("b", "PUB", &["10.0.0.2/32", "fd00::2/128"]);
        peer.endpoint = Some("192.0.2.2:51820".parse().unwrap());
        cfg.peers.push(peer);
        let (text, v) = rendered(&cfg);
        assert_eq!(v["node"]["address6"].as_str(), Some("fd00::1"));
        assert_eq!(v["node"]["mode"].as_str(), Some("kernel"));
        assert_eq!(v["admin"]["uapi_dir"].as_str(), Some("/t/wg"));
        let peer = &v["peer"][0];
        assert_eq!(peer["endpoint"].as_str(), Some("192.0.2.2:51820"));
        assert_eq!(peer["allowed_ips"][1].as_str(), Some("fd00::2/128"));
        assert!(peer.get("persistent_keepalive").is_none(), "{text}");
        assert!(v.get("mesh").is_none(), "{text}");
        assert!(
            v.get("dns").is_none() && v.get("service").is_none(),
            "{text}"
        );
        assert!(v["node"].get("region").is_none(), "{text}");
    }

    #[test]
    fn renders_the_mesh_table() {
        let mut cfg = PeerdConfig::new("east-0", "pd0", "KEY", Ipv4Addr::new(10, 1, 0, 1));
        cfg.region = "us-east".to_owned();
        cfg.zone = "us-east-1a".to_owned();
        cfg.mesh = Some(MeshSpec {
            ca_file: "/t/ca/ca.pem".into(),
            cert_file: "/t/e/node.pem".into(),
            key_file: "/t/e/node.key".into(),
            seeds: vec!["192.0.2.2:51820".parse().unwrap()],
            state_dir: "/t/e/state".into(),
            tunnel_same_cluster: true,
            advertise: Vec::new(),
        });
        let (text, v) = rendered(&cfg);
        assert_eq!(v["node"]["zone"].as_str(), Some("us-east-1a"));
        assert_eq!(v["mesh"]["seeds"][0].as_str(), Some("192.0.2.2:51820"));
        assert_eq!(v["mesh"]["tunnel_same_cluster"].as_bool(), Some(true));
        assert!(v["mesh"].get("advertise").is_none(), "{text}");
    }

    #[test]
    fn renders_dns_and_services() {
        let mut cfg = PeerdConfig::new("east-0", "pd0", "KEY", Ipv4Addr::new(10, 1, 0, 1));
        let mut dns = DnsSpec::new("10.1.0.1:53".parse().unwrap());
        dns.upstream = vec!["198.51.100.201:53".parse().unwrap()];
        cfg.dns = Some(dns);
        let mut web = ServiceSpec::http("web", "shop", 80, "10.1.0.10:8080".parse().unwrap());
        web.endpoints[0].ready = Some(false);
        cfg.services.push(web);
        let (text, v) = rendered(&cfg);
        assert_eq!(v["dns"]["listen"].as_str(), Some("10.1.0.1:53"), "{text}");
        assert_eq!(v["dns"]["upstream"][0].as_str(), Some("198.51.100.201:53"));
        assert!(v["dns"].get("ttl").is_none(), "{text}");
        let service = &v["service"][0];
        assert_eq!(service["name"].as_str(), Some("web"));
        assert_eq!(service["ports"][0]["protocol"].as_str(), Some("http"));
        assert_eq!(service["ports"][0]["port"].as_integer(), Some(80));
        assert_eq!(
            service["endpoints"][0]["address"].as_str(),
            Some("10.1.0.10")
        );
        assert_eq!(service["endpoints"][0]["port"].as_integer(), Some(8080));
        assert_eq!(service["endpoints"][0]["ready"].as_bool(), Some(false));
        assert!(v.get("kubernetes").is_none(), "{text}");
    }

    #[test]
    fn renders_the_kubernetes_table_without_the_environment() {
        let mut cfg = PeerdConfig::new("east-0", "pd0", "KEY", Ipv4Addr::new(10, 1, 0, 1));
        let mut kube = KubeSpec {
            node_name: "east-0".to_owned(),
            kubeconfig: "/t/east.kubeconfig".into(),
            service_export_version: None,
        };
        cfg.kubernetes = Some(kube.clone());
        let (text, v) = rendered(&cfg);
        let table = v["kubernetes"].as_table().expect("a [kubernetes] table");
        assert!(table.is_empty(), "{text}");
        kube.service_export_version = Some("v1beta1".to_owned());
        cfg.kubernetes = Some(kube);
        let (text, v) = rendered(&cfg);
        assert_eq!(
            v["kubernetes"]["service_export_version"].as_str(),
            Some("v1beta1"),
            "{text}"
        );
    }
}
