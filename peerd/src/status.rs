//! `peerd status`: the JSON shape of DESIGN.md and its table rendering.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The whole answer: this node and every peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// This node.
    pub node: NodeInfo,
    /// Every peer, ordered by cluster then name.
    pub peers: Vec<PeerInfo>,
}

/// This node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Cluster.
    pub cluster: String,
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// WireGuard public key (base64).
    pub public_key: String,
    /// UDP port.
    pub listen_port: u16,
    /// TUN device.
    pub interface: String,
    /// Overlay IPv4 address.
    pub address: String,
    /// Overlay IPv6 address, if any.
    pub address6: Option<String>,
    /// Pod CIDRs behind this node.
    pub pod_cidrs: Vec<String>,
    /// `kernel` or `userspace`.
    pub mode: String,
    /// Whether TUN offloads (TSO/GRO) are active.
    pub offload: bool,
    /// Drops not attributable to one peer, by reason (non-zero only).
    pub drops: BTreeMap<String, u64>,
    /// The control plane, when `[mesh]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshInfo>,
}

/// Control-plane counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshInfo {
    /// Nodes known, by state.
    pub nodes: BTreeMap<String, u64>,
    /// Records refused, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Control datagrams dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Control bytes received.
    pub rx_bytes: u64,
    /// Control bytes sent.
    pub tx_bytes: u64,
}

/// What `peerd ping` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingReport {
    /// The node pinged.
    pub node: String,
    /// Its overlay address.
    pub address: String,
    /// The underlay endpoint its tunnel uses.
    pub endpoint: Option<String>,
    /// Requests sent.
    pub sent: u32,
    /// Replies received.
    pub replies: u32,
    /// Round-trip times of the replies, in milliseconds.
    pub rtt_ms: Vec<f64>,
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Name (empty for a peer added through `wg set`).
    pub name: String,
    /// Cluster.
    pub cluster: String,
    /// Region.
    #[serde(default)]
    pub region: String,
    /// Zone.
    pub zone: String,
    /// WireGuard public key (base64).
    pub public_key: String,
    /// Current endpoint (`ip:port`), if known.
    pub endpoint: Option<String>,
    /// Prefixes routed to the peer.
    pub allowed_ips: Vec<String>,
    /// Membership state: `alive`, `suspect`, `dead`, or `static` for a peer from the config file.
    pub state: String,
    /// Tunnel state: `up` (handshake within 3 minutes), `connecting`, or `down`.
    #[serde(default)]
    pub tunnel: String,
    /// Pod CIDRs behind the peer (mesh peers).
    #[serde(default)]
    pub pod_cidrs: Vec<String>,
    /// Unix time of the last completed handshake, 0 before the first.
    pub last_handshake_unix: u64,
    /// WireGuard bytes received.
    pub rx_bytes: u64,
    /// WireGuard bytes sent.
    pub tx_bytes: u64,
    /// Persistent keepalive in seconds.
    pub persistent_keepalive: Option<u16>,
    /// Drops for this peer, by reason (non-zero only).
    pub drops: BTreeMap<String, u64>,
}

/// Renders the human table: a node header, then peers grouped by cluster.
pub fn render(status: &Status) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let n = &status.node;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} (cluster {}{}{})  {}  udp/{}  {} {}{}",
        n.name,
        n.cluster,
        if n.zone.is_empty() {
            String::new()
        } else {
            format!(", zone {}", n.zone)
        },
        if n.region.is_empty() {
            String::new()
        } else {
            format!(", region {}", n.region)
        },
        n.public_key,
        n.listen_port,
        if n.mode == "userspace" {
            "userspace"
        } else {
            &n.interface
        },
        n.address,
        n.address6
            .as_ref()
            .map(|a| format!(" {a}"))
            .unwrap_or_default(),
    );
    if !n.drops.is_empty() {
        let _ = writeln!(out, "  drops: {}", counts_line(&n.drops));
    }
    if let Some(m) = &n.mesh {
        let or_dash = |c: &BTreeMap<String, u64>| {
            if c.is_empty() {
                "-".into()
            } else {
                counts_line(c)
            }
        };
        let _ = writeln!(
            out,
            "  mesh: {}  rejected: {}  dropped: {}",
            or_dash(&m.nodes),
            or_dash(&m.rejected),
            or_dash(&m.dropped)
        );
    }
    let header = [
        "NAME",
        "ZONE",
        "STATE",
        "TUNNEL",
        "ENDPOINT",
        "ALLOWED IPS",
        "HANDSHAKE",
        "RX",
        "TX",
        "DROPS",
    ];
    let rows: Vec<(&str, Vec<String>)> = status
        .peers
        .iter()
        .map(|p| {
            let name = if p.name.is_empty() {
                short_key(&p.public_key)
            } else {
                p.name.clone()
            };
            let drops = if p.drops.is_empty() {
                "-".into()
            } else {
                counts_line(&p.drops)
            };
            let cells = vec![
                name,
                p.zone.clone(),
                p.state.clone(),
                p.tunnel.clone(),
                p.endpoint.clone().unwrap_or_else(|| "-".into()),
                p.allowed_ips.join(","),
                ago(now, p.last_handshake_unix),
                bytes(p.rx_bytes),
                bytes(p.tx_bytes),
                drops,
            ];
            (p.cluster.as_str(), cells)
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|(_, r)| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        format!("  {}", padded.join("  ").trim_end())
    };
    let mut cluster = None;
    for (c, row) in &rows {
        if cluster != Some(*c) {
            cluster = Some(*c);
            let _ = writeln!(out, "\ncluster {}", if c.is_empty() { "-" } else { c });
            let _ = writeln!(out, "{}", line(&header.map(str::to_owned)));
        }
        let _ = writeln!(out, "{}", line(row));
    }
    if rows.is_empty() {
        let _ = writeln!(out, "\nno peers");
    }
    out
}

/// Renders `peerd ping`, like ping's summary.
pub fn render_ping(p: &PingReport) -> String {
    let mut out = String::new();
    let via = p
        .endpoint
        .as_deref()
        .map(|e| format!(" via {e}"))
        .unwrap_or_default();
    for rtt in &p.rtt_ms {
        let _ = writeln!(
            out,
            "pong from {} ({}){via} in {rtt:.3} ms",
            p.node, p.address
        );
    }
    let _ = writeln!(out, "{} sent, {} received", p.sent, p.replies);
    out
}

fn counts_line(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn short_key(key: &str) -> String {
    format!("{}…", key.chars().take(8).collect::<String>())
}

fn ago(now: u64, then: u64) -> String {
    if then == 0 {
        return "never".into();
    }
    let s = now.saturating_sub(then);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m{}s ago", s / 60, s % 60),
        _ => format!("{}h{}m ago", s / 3600, s % 3600 / 60),
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            node: NodeInfo {
                name: "east-1".into(),
                cluster: "east".into(),
                region: "us-east".into(),
                zone: "us-east-1a".into(),
                public_key: "AAAA".into(),
                listen_port: 51820,
                interface: "pd0".into(),
                address: "10.1.1.1".into(),
                address6: None,
                pod_cidrs: vec![],
                mode: "kernel".into(),
                offload: true,
                drops: BTreeMap::from([("malformed".into(), 3)]),
                mesh: None,
            },
            peers: vec![PeerInfo {
                name: "west-1".into(),
                cluster: "west".into(),
                zone: "us-west-1a".into(),
                public_key: "BBBB".into(),
                endpoint: Some("192.0.2.10:51820".into()),
                allowed_ips: vec!["10.2.1.0/24".into()],
                region: String::new(),
                state: "static".into(),
                tunnel: "connecting".into(),
                pod_cidrs: vec![],
                last_handshake_unix: 0,
                rx_bytes: 2048,
                tx_bytes: 10,
                persistent_keepalive: Some(25),
                drops: BTreeMap::new(),
            }],
        }
    }

    #[test]
    fn json_has_the_design_fields() {
        let v = serde_json::to_value(sample()).unwrap();
        for field in [
            "name",
            "cluster",
            "zone",
            "public_key",
            "endpoint",
            "allowed_ips",
            "state",
            "last_handshake_unix",
            "rx_bytes",
            "tx_bytes",
        ] {
            assert!(v["peers"][0].get(field).is_some(), "peer field {field}");
        }
        assert_eq!(v["peers"][0]["state"], "static");
        let back: Status = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn table_shows_peers_grouped_by_cluster() {
        let text = render(&sample());
        assert!(
            text.starts_with("node east-1 (cluster east, zone us-east-1a, region us-east)"),
            "{text}"
        );
        assert!(text.contains("drops: malformed=3"));
        assert!(text.contains("\ncluster west\n"), "{text}");
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with("west-1"))
            .unwrap();
        for cell in [
            "us-west-1a",
            "static",
            "connecting",
            "192.0.2.10:51820",
            "10.2.1.0/24",
            "never",
            "2.0 KiB",
            "10 B",
        ] {
            assert!(row.contains(cell), "{cell} missing in {row}");
        }
    }
}

/// `peerd services --json`: every service with its endpoints grouped by cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceList {
    /// Services ordered by namespace, then name.
    pub services: Vec<ServiceInfo>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Service name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// `name.namespace.global`.
    pub global_name: String,
    /// Its virtual IP.
    pub vip: Option<String>,
    /// Ports.
    pub ports: Vec<peerd_types::ServicePort>,
    /// Endpoints by cluster.
    pub clusters: BTreeMap<String, ClusterEndpoints>,
}

/// A service's endpoints in one cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterEndpoints {
    /// `cluster.name.namespace.global`'s virtual IP.
    pub vip: Option<String>,
    /// The endpoints.
    pub endpoints: Vec<EndpointInfo>,
}

/// One endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// Address.
    pub address: String,
    /// Target port per port name.
    pub ports: BTreeMap<String, u16>,
    /// Ready according to its source.
    pub ready: bool,
    /// Node it runs on.
    pub node: String,
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Whether the mesh considers its node live.
    pub node_alive: bool,
}

/// The catalog as `peerd services` shows it.
pub fn services(catalog: &crate::catalog::Catalog) -> ServiceList {
    let mut services: Vec<ServiceInfo> = catalog
        .services
        .values()
        .map(|s| {
            let mut clusters: BTreeMap<String, ClusterEndpoints> = BTreeMap::new();
            for e in &s.endpoints {
                let c = clusters
                    .entry(e.locality.cluster.clone())
                    .or_insert_with(|| ClusterEndpoints {
                        vip: s
                            .cluster_vips
                            .get(&e.locality.cluster)
                            .map(ToString::to_string),
                        endpoints: Vec::new(),
                    });
                c.endpoints.push(EndpointInfo {
                    address: e.endpoint.address.to_string(),
                    ports: e.endpoint.ports.iter().cloned().collect(),
                    ready: e.endpoint.ready,
                    node: e.locality.node.clone(),
                    region: e.locality.region.clone(),
                    zone: e.locality.zone.clone(),
                    node_alive: e.node_alive,
                });
            }
            ServiceInfo {
                name: s.key.name.clone(),
                namespace: s.key.namespace.clone(),
                global_name: crate::catalog::global_name(&s.key, None),
                vip: s.vip.map(|v| v.to_string()),
                ports: s.ports.clone(),
                clusters,
            }
        })
        .collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    ServiceList { services }
}

/// Renders `peerd services`.
pub fn render_services(list: &ServiceList) -> String {
    let mut out = String::new();
    if list.services.is_empty() {
        out.push_str("no services\n");
    }
    for s in &list.services {
        let ports: Vec<String> = s
            .ports
            .iter()
            .map(|p| format!("{}:{}/{}", p.name, p.port, p.protocol.as_str()))
            .collect();
        let _ = writeln!(
            out,
            "{}  {}  {}",
            s.global_name,
            s.vip.as_deref().unwrap_or("-"),
            ports.join(" ")
        );
        for (cluster, c) in &s.clusters {
            let _ = writeln!(
                out,
                "  cluster {cluster}  {}",
                c.vip.as_deref().unwrap_or("-")
            );
            for e in &c.endpoints {
                let ports: Vec<String> = e.ports.iter().map(|(n, p)| format!("{n}={p}")).collect();
                let health = match (e.ready, e.node_alive) {
                    (true, true) => "ready",
                    (false, _) => "not-ready",
                    (true, false) => "node-dead",
                };
                let _ = writeln!(
                    out,
                    "    {:<16} {:<18} {:<12} {}  {}",
                    e.address,
                    ports.join(","),
                    e.node,
                    e.zone,
                    health
                );
            }
        }
    }
    out
}

/// `peerd explain NAME`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainReport {
    /// The global name.
    pub name: String,
    /// Its virtual IP.
    pub vip: Option<String>,
    /// The proxy's view: per port, tier shares and every endpoint.
    pub proxy: Option<l7proxy::Explanation>,
}

/// Renders `peerd explain`.
pub fn render_explain(r: &ExplainReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} -> {}",
        r.name,
        r.vip.as_deref().unwrap_or("(no virtual IP)")
    );
    let Some(proxy) = &r.proxy else {
        let _ = writeln!(out, "  the proxy has no route for it yet");
        return out;
    };
    for port in &proxy.ports {
        let s = &port.tier_shares;
        let _ = writeln!(
            out,
            "  port {} ({}) on {}: same-node {:.0}%  same-zone {:.0}%  same-region {:.0}%  remote {:.0}%",
            port.port_name,
            port.protocol,
            port.listen,
            s.same_node * 100.0,
            s.same_zone * 100.0,
            s.same_region * 100.0,
            s.remote * 100.0
        );
        for e in &port.endpoints {
            let health = match (e.ready, e.ejected_for_ms) {
                (false, _) => "not-ready".to_owned(),
                (true, Some(ms)) => format!("ejected {ms}ms"),
                (true, None) => "healthy".to_owned(),
            };
            let _ = writeln!(
                out,
                "    {:<22} {:<12} {:<8} {:<12} {:<14} rtt {:>6.1}ms  in-flight {:<3} {}",
                e.addr.to_string(),
                e.tier,
                e.locality.cluster,
                e.locality.node,
                health,
                e.rtt_ewma_ms,
                e.in_flight,
                e.reason
            );
        }
    }
    out
}
