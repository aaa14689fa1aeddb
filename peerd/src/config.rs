//! The node configuration file (`peerd run --config FILE`): parse, then validate, then hand
//! typed values to the daemon. Every error names the file, the line and the field.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use overlay::PublicKey;
use serde::{Deserialize, Deserializer};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node.
    pub node: NodeSection,
    /// Where the daemon answers `peerd status` and `wg`.
    #[serde(default)]
    pub admin: AdminSection,
    /// Dynamic peers through the mesh control plane (optional).
    pub mesh: Option<MeshSection>,
    /// The DNS server for `.global` names (optional).
    pub dns: Option<DnsSection>,
    /// Services this node exports (static source; Kubernetes adds its own).
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSection>,
    /// Services and locality from the Kubernetes API (optional; the node name comes from
    /// `NODE_NAME`).
    pub kubernetes: Option<KubernetesSection>,
    /// Per-service proxy overrides (any service of the mesh, not only this node's).
    #[serde(default, rename = "policy")]
    pub policies: Vec<PolicySection>,
    /// Static peers.
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerSection>,
}

/// `[dns]`: where the `.global` DNS server listens and where other names go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// UDP and TCP listen address.
    #[serde(default = "default_dns_listen")]
    pub listen: SocketAddr,
    /// Virtual IPs of global names come from here (default: [`default_service_cidr`] in
    /// kernel mode, [`USERSPACE_SERVICE_CIDR`] in userspace mode).
    pub service_cidr: Option<ipnet::Ipv4Net>,
    /// Upstream resolvers for other names (default: /etc/resolv.conf's).
    #[serde(default)]
    pub upstream: Vec<SocketAddr>,
    /// TTL of `.global` answers, in seconds.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
}

/// `[[service]]`: a service with endpoints on this node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Service name (a DNS label).
    pub name: String,
    /// Namespace (a DNS label).
    pub namespace: String,
    /// Named ports.
    pub ports: Vec<PortSection>,
    /// Endpoints on this node.
    #[serde(default)]
    pub endpoints: Vec<EndpointSection>,
}

/// `[kubernetes]`: learn this node's exported services from the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSection {
    /// Which `serviceexports.multicluster.x-k8s.io` version to watch: `v1alpha1` or `v1beta1`.
    #[serde(default = "default_export_version")]
    pub service_export_version: String,
    /// Write the `peerd.io/Exported` condition on ServiceExports.
    #[serde(default)]
    pub write_status: bool,
}

impl KubernetesSection {
    /// The ServiceExport version to watch.
    pub fn export_version(&self) -> peerd_kube::ExportVersion {
        match self.service_export_version.as_str() {
            "v1beta1" => peerd_kube::ExportVersion::V1beta1,
            _ => peerd_kube::ExportVersion::V1alpha1,
        }
    }
}

fn default_export_version() -> String {
    "v1alpha1".into()
}

/// `[[policy]]`: how this node's proxy treats one service. Unset fields keep the defaults
/// (documented in docs/operations.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// `name.namespace` of the service.
    pub service: String,
    /// Only use endpoints of this node's cluster.
    pub local_only: Option<bool>,
    /// Limit for establishing one upstream connection.
    pub connect_timeout_ms: Option<u64>,
    /// Limit for one attempt up to the response headers.
    pub try_timeout_ms: Option<u64>,
    /// Limit for the whole request up to the response headers.
    pub request_timeout_ms: Option<u64>,
    /// Most attempts per request.
    pub max_attempts: Option<u32>,
    /// Retries may add at most this fraction of requests.
    pub retry_budget_ratio: Option<f64>,
}

/// A service port: `{ name = "http", port = 80, protocol = "http" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSection {
    /// Port name (a DNS label; SRV names use it).
    pub name: String,
    /// Port on the service's virtual IP.
    pub port: u16,
    /// `http`, `http2`, `grpc` or `tcp`.
    #[serde(deserialize_with = "from_str")]
    pub protocol: peerd_types::Protocol,
}

/// An endpoint: `{ address = "10.1.1.10", port = 8080 }` (one target port for every service
/// port) or `{ address = "10.1.1.10", ports = { http = 8080, grpc = 9090 } }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSection {
    /// Where it listens.
    pub address: std::net::IpAddr,
    /// Target port for every service port.
    pub port: Option<u16>,
    /// Target port per service port name.
    #[serde(default)]
    pub ports: std::collections::BTreeMap<String, u16>,
    /// Whether it takes traffic.
    #[serde(default = "yes")]
    pub ready: bool,
    /// Userspace mode: the real socket that connections arriving through the tunnel for this
    /// endpoint are copied to (default `127.0.0.1:<port>`; only for a single target port).
    pub local: Option<SocketAddr>,
}

impl EndpointSection {
    /// The target port of each service port this endpoint serves: its `ports` entry, else
    /// `port`.
    pub fn targets<'a>(&'a self, ports: &'a [PortSection]) -> impl Iterator<Item = (&'a str, u16)> {
        ports.iter().filter_map(|p| {
            self.ports
                .get(&p.name)
                .copied()
                .or(self.port)
                .map(|t| (p.name.as_str(), t))
        })
    }
}

/// `[mesh]`: the control plane. Without it, peerd runs static peers only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshSection {
    /// The mesh CA certificate(s) (PEM).
    pub ca_file: PathBuf,
    /// This node's certificate chain (PEM, from `peerd ca issue`).
    pub cert_file: PathBuf,
    /// This node's certificate key (PEM).
    pub key_file: PathBuf,
    /// Other nodes' underlay `host:port` (their WireGuard port) to join through.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Where the last known mesh is kept across restarts.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Tunnel to nodes of this node's own cluster too (false where a CNI routes pods inside a
    /// cluster).
    #[serde(default = "yes")]
    pub tunnel_same_cluster: bool,
    /// Underlay `ip:port` to announce (default: this host's addresses with `listen_port`).
    #[serde(default)]
    pub advertise: Vec<SocketAddr>,
}

/// `[node]`: this node's identity and tunnel settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Node name, unique in its cluster.
    pub name: String,
    /// Cluster name.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// Region (Kubernetes `topology.kubernetes.io/region`).
    #[serde(default)]
    pub region: String,
    /// Zone (Kubernetes `topology.kubernetes.io/zone`).
    #[serde(default)]
    pub zone: String,
    /// File holding the base64 WireGuard private key.
    pub private_key_file: PathBuf,
    /// UDP port for WireGuard.
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    /// TUN device name (kernel mode).
    #[serde(default = "default_interface")]
    pub interface: String,
    /// This node's IPv4 address inside the overlay (a /32 on the TUN device).
    pub address: Ipv4Addr,
    /// Optional IPv6 address inside the overlay (a /128 on the TUN device).
    pub address6: Option<Ipv6Addr>,
    /// Pod CIDRs behind this node.
    #[serde(default)]
    pub pod_cidrs: Vec<IpNet>,
    /// Data plane: kernel TUN or userspace stack.
    #[serde(default)]
    pub mode: Mode,
    /// TUN MTU (default 1420).
    pub mtu: Option<u16>,
}

/// How the node attaches to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A TUN device and kernel routes (needs `CAP_NET_ADMIN`).
    #[default]
    Kernel,
    /// A userspace TCP/IP stack, no privilege.
    Userspace,
}

/// `[admin]`: local control sockets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Admin socket (default `/run/peerd/<interface>.sock`).
    pub socket: Option<PathBuf>,
    /// Folder of the WireGuard userspace API socket `<interface>.sock`.
    pub uapi_dir: Option<PathBuf>,
    /// HTTP listener for Prometheus `/metrics` and the `/healthz` and `/readyz` probes.
    pub metrics: Option<SocketAddr>,
}

/// `[[peer]]`: a static peer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    /// Display name.
    pub name: String,
    /// Cluster the peer belongs to, for display.
    #[serde(default)]
    pub cluster: String,
    /// Zone, for display.
    #[serde(default)]
    pub zone: String,
    /// The peer's WireGuard public key (base64).
    #[serde(deserialize_with = "from_str")]
    pub public_key: PublicKey,
    /// `host:port` to reach it; resolved when the file is loaded.
    pub endpoint: Option<String>,
    /// Prefixes routed to the peer and accepted from it.
    #[serde(default)]
    pub allowed_ips: Vec<IpNet>,
    /// Keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
    /// File holding a base64 pre-shared key.
    pub preshared_key_file: Option<PathBuf>,
}

/// A configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted field path (`node.listen_port`, `peer[1].public_key`), when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Default admin socket folder.
pub const DEFAULT_ADMIN_DIR: &str = "/run/peerd";
/// Default WireGuard userspace API folder (where `wg` looks).
pub const DEFAULT_UAPI_DIR: &str = "/var/run/wireguard";

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            line: None,
            field: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| syntax_error(path, text, &e))?;
        config
            .validate()
            .map_err(|(table, index, key, message)| ConfigError {
                path: path.to_owned(),
                line: locate(text, table, index, key),
                field: Some(match index {
                    Some(i) => format!("{table}[{i}].{key}"),
                    None => format!("{table}.{key}"),
                }),
                message,
            })?;
        Ok(config)
    }

    /// The admin socket path.
    pub fn admin_socket(&self) -> PathBuf {
        self.admin.socket.clone().unwrap_or_else(|| {
            Path::new(DEFAULT_ADMIN_DIR).join(format!("{}.sock", self.node.interface))
        })
    }

    /// The WireGuard userspace API socket path.
    pub fn uapi_socket(&self) -> PathBuf {
        let dir = self
            .admin
            .uapi_dir
            .clone()
            .unwrap_or_else(|| DEFAULT_UAPI_DIR.into());
        dir.join(format!("{}.sock", self.node.interface))
    }

    /// The TUN MTU.
    pub fn mtu(&self) -> u16 {
        self.node.mtu.unwrap_or(overlay::DEFAULT_MTU)
    }

    /// Semantic checks; an error is (table, index in an array of tables, key, message).
    fn validate(&self) -> Result<(), (&'static str, Option<usize>, &'static str, String)> {
        let node = &self.node;
        let bad = |key, message: String| Err(("node", None, key, message));
        if node.name.trim().is_empty() {
            return bad("name", "must not be empty".into());
        }
        if node.interface.is_empty()
            || node.interface.len() > 15
            || node.interface.contains(['/', ' '])
        {
            return bad(
                "interface",
                format!(
                    "{:?} is not a valid interface name (1-15 bytes)",
                    node.interface
                ),
            );
        }
        if let Some(mtu) = node.mtu
            && !(1280..=9000).contains(&mtu)
        {
            return bad("mtu", format!("{mtu} is outside 1280..=9000"));
        }
        if node.mode == Mode::Userspace {
            self.validate_userspace()?;
        }
        if let Some(mesh) = &self.mesh {
            let bad = |key, message: String| Err(("mesh", None, key, message));
            for seed in &mesh.seeds {
                if let Err(message) = resolve_endpoint(seed) {
                    return bad("seeds", message);
                }
            }
            if !node.pod_cidrs.is_empty()
                && !node
                    .pod_cidrs
                    .iter()
                    .any(|n| n.contains(&IpAddr::V4(node.address)))
            {
                return Err((
                    "node",
                    None,
                    "address",
                    format!(
                        "{} is outside pod_cidrs: the mesh certificate binds the overlay address to the node's pod CIDRs",
                        node.address
                    ),
                ));
            }
        }
        self.validate_services()?;
        if let Some(k) = &self.kubernetes
            && !matches!(k.service_export_version.as_str(), "v1alpha1" | "v1beta1")
        {
            return Err((
                "kubernetes",
                None,
                "service_export_version",
                format!(
                    "{:?}: use \"v1alpha1\" or \"v1beta1\"",
                    k.service_export_version
                ),
            ));
        }
        for (i, policy) in self.policies.iter().enumerate() {
            let bad = |key, message: String| Err(("policy", Some(i), key, message));
            let Some((name, namespace)) = policy.service.split_once('.') else {
                return bad(
                    "service",
                    format!("{:?} is not name.namespace", policy.service),
                );
            };
            if !is_dns_label(name) || !is_dns_label(namespace) {
                return bad(
                    "service",
                    format!("{:?} is not name.namespace of DNS labels", policy.service),
                );
            }
            if policy.max_attempts == Some(0) {
                return bad("max_attempts", "use 1 or more".into());
            }
            if policy
                .retry_budget_ratio
                .is_some_and(|r| !(0.0..=1.0).contains(&r))
            {
                return bad(
                    "retry_budget_ratio",
                    "use a fraction between 0 and 1".into(),
                );
            }
        }
        if self.service_cidr().prefix_len() > 28 {
            return Err((
                "dns",
                None,
                "service_cidr",
                format!(
                    "{} is too small for virtual IPs (use /28 or larger)",
                    self.service_cidr()
                ),
            ));
        }
        let mut seen = std::collections::BTreeMap::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let bad = |key, message: String| Err(("peer", Some(i), key, message));
            if peer.name.trim().is_empty() {
                return bad("name", "must not be empty".into());
            }
            if let Some(first) = seen.insert(peer.public_key, i) {
                return bad("public_key", format!("the same key as peer[{first}]"));
            }
            if let Some(endpoint) = &peer.endpoint
                && let Err(message) = resolve_endpoint(endpoint)
            {
                return bad("endpoint", message);
            }
            if peer.persistent_keepalive == Some(0) {
                return bad(
                    "persistent_keepalive",
                    "use a number of seconds above 0, or leave it out".into(),
                );
            }
        }
        Ok(())
    }
}

impl Config {
    fn validate_services(&self) -> Result<(), (&'static str, Option<usize>, &'static str, String)> {
        let mut keys = std::collections::BTreeSet::new();
        for (i, service) in self.services.iter().enumerate() {
            let bad = |key, message: String| Err(("service", Some(i), key, message));
            for (key, label) in [("name", &service.name), ("namespace", &service.namespace)] {
                if !is_dns_label(label) {
                    return bad(
                        key,
                        format!("{label:?} is not a DNS label (a-z, 0-9, '-', at most 63)"),
                    );
                }
            }
            if !keys.insert((&service.name, &service.namespace)) {
                return bad(
                    "name",
                    format!("{}.{} is listed twice", service.name, service.namespace),
                );
            }
            if service.ports.is_empty() {
                return bad("ports", "a service needs at least one port".into());
            }
            let mut names = std::collections::BTreeSet::new();
            for port in &service.ports {
                if !is_dns_label(&port.name) || !names.insert(&port.name) {
                    return bad(
                        "ports",
                        format!("port name {:?} is not a unique DNS label", port.name),
                    );
                }
            }
            for endpoint in &service.endpoints {
                if !self.node_owns(endpoint.address) {
                    return bad(
                        "endpoints",
                        format!(
                            "{} is not on this node (outside node.pod_cidrs and node.address)",
                            endpoint.address
                        ),
                    );
                }
                if endpoint.port.is_none()
                    && service
                        .ports
                        .iter()
                        .any(|p| !endpoint.ports.contains_key(&p.name))
                {
                    return bad(
                        "endpoints",
                        format!(
                            "endpoint {} needs `port` or a port for every service port",
                            endpoint.address
                        ),
                    );
                }
                if let Some(name) = endpoint.ports.keys().find(|n| !names.contains(n)) {
                    return bad(
                        "endpoints",
                        format!("endpoint {} maps unknown port {name:?}", endpoint.address),
                    );
                }
            }
        }
        Ok(())
    }

    /// Whether `addr` belongs to this node: its overlay addresses or its pod CIDRs.
    pub fn node_owns(&self, addr: IpAddr) -> bool {
        addr == IpAddr::V4(self.node.address)
            || self.node.address6.is_some_and(|a| IpAddr::V6(a) == addr)
            || self.node.pod_cidrs.iter().any(|n| n.contains(&addr))
    }

    /// The static service exports of this file.
    pub fn exports(&self) -> Vec<peerd_types::ServiceExport> {
        self.services
            .iter()
            .map(|s| peerd_types::ServiceExport {
                key: peerd_types::ServiceKey::new(&s.name, &s.namespace),
                ports: s
                    .ports
                    .iter()
                    .map(|p| peerd_types::ServicePort {
                        name: p.name.clone(),
                        port: p.port,
                        protocol: p.protocol,
                    })
                    .collect(),
                endpoints: s
                    .endpoints
                    .iter()
                    .map(|e| peerd_types::Endpoint {
                        address: e.address,
                        ports: e
                            .targets(&s.ports)
                            .map(|(name, t)| (name.to_owned(), t))
                            .collect(),
                        ready: e.ready,
                    })
                    .collect(),
            })
            .collect()
    }
}

/// RFC 1123 label, lowercase.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl PeerSection {
    /// The endpoint, resolved (validation guarantees it resolves at load time).
    pub fn endpoint_addr(&self) -> Option<SocketAddr> {
        self.endpoint
            .as_deref()
            .and_then(|e| resolve_endpoint(e).ok())
    }
}

/// Resolves `host:port` (an IP literal or a name) to one address.
pub fn resolve_endpoint(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    match text.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{text:?} resolves to no address")),
        Err(e) => Err(format!("{text:?} is not host:port ({e})")),
    }
}

fn default_dns_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 53))
}

/// The default `[dns] service_cidr`.
/// Userspace mode's default service CIDR: loopback, which Linux delivers locally with no
/// address to configure.
pub const USERSPACE_SERVICE_CIDR: &str = "127.253.0.0/16";

/// Kernel mode's default service CIDR.
pub fn default_service_cidr() -> ipnet::Ipv4Net {
    "10.253.0.0/16".parse().expect("valid literal")
}

fn default_ttl() -> u32 {
    5
}

fn default_state_dir() -> PathBuf {
    "/var/lib/peerd".into()
}

fn yes() -> bool {
    true
}

fn default_cluster() -> String {
    "default".into()
}

fn default_listen_port() -> u16 {
    51820
}

fn default_interface() -> String {
    "pd0".into()
}

/// Deserializes any `FromStr` type from a string, so its error carries the value's position.
fn from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// Turns a TOML/serde error into a located [`ConfigError`].
fn syntax_error(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().to_owned();
    let line = error.span().map(|span| line_of_offset(text, span.start));
    let field = field_in_message(&message).or_else(|| {
        let span = error.span()?;
        field_at(text, span.start)
    });
    ConfigError {
        path: path.to_owned(),
        line,
        field,
        message,
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// "unknown field `x`" / "missing field `x`" name the field themselves.
fn field_in_message(message: &str) -> Option<String> {
    let start = message.find("field `")? + "field `".len();
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

/// The dotted `table.key` whose line contains `offset`.
fn field_at(text: &str, offset: usize) -> Option<String> {
    let line_no = line_of_offset(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(line_no - 1)?;
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())?;
    let table = lines[..line_no - 1]
        .iter()
        .rev()
        .find_map(|l| table_name(l))
        .unwrap_or_default();
    Some(if table.is_empty() {
        key
    } else {
        format!("{table}.{key}")
    })
}

fn table_name(line: &str) -> Option<String> {
    let t = line.trim();
    let inner = t.strip_prefix("[[").and_then(|s| s.strip_suffix("]]"));
    let inner = inner.or_else(|| t.strip_prefix('[').and_then(|s| s.strip_suffix(']')))?;
    Some(inner.trim().to_owned())
}

/// The line of `key` in `[table]` (or the `index`-th `[[table]]`); the header's line when the key
/// is absent.
fn locate(text: &str, table: &str, index: Option<usize>, key: &str) -> Option<usize> {
    let mut seen = 0;
    let mut inside = false;
    let mut header = None;
    for (n, line) in text.lines().enumerate() {
        if let Some(name) = table_name(line) {
            inside = name == table
                && index.is_none_or(|i| {
                    seen += 1;
                    seen == i + 1
                });
            if inside {
                header = Some(n + 1);
            }
            continue;
        }
        if inside && line.split_once('=').is_some_and(|(k, _)| k.trim() == key) {
            return Some(n + 1);
        }
    }
    header
}

mod userspace;

#[cfg(test)]
mod tests;
