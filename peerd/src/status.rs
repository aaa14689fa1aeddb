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
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Name (empty for a peer added through `wg set`).
    pub name: String,
    /// Cluster.
    pub cluster: String,
    /// Zone.
    pub zone: String,
    /// WireGuard public key (base64).
    pub public_key: String,
    /// Current endpoint (`ip:port`), if known.
    pub endpoint: Option<String>,
    /// Prefixes routed to the peer.
    pub allowed_ips: Vec<String>,
    /// Membership state: `static` for a peer from the config file.
    pub state: String,
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
        n.interface,
        n.address,
        n.address6
            .as_ref()
            .map(|a| format!(" {a}"))
            .unwrap_or_default(),
    );
    if !n.drops.is_empty() {
        let _ = writeln!(out, "  drops: {}", drops_line(&n.drops));
    }
    let header = [
        "CLUSTER",
        "NAME",
        "ZONE",
        "STATE",
        "ENDPOINT",
        "ALLOWED IPS",
        "HANDSHAKE",
        "RX",
        "TX",
        "DROPS",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    for p in &status.peers {
        rows.push(vec![
            p.cluster.clone(),
            if p.name.is_empty() {
                short_key(&p.public_key)
            } else {
                p.name.clone()
            },
            p.zone.clone(),
            p.state.clone(),
            p.endpoint.clone().unwrap_or_else(|| "-".into()),
            p.allowed_ips.join(","),
            ago(now, p.last_handshake_unix),
            bytes(p.rx_bytes),
            bytes(p.tx_bytes),
            if p.drops.is_empty() {
                "-".into()
            } else {
                drops_line(&p.drops)
            },
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

fn drops_line(drops: &BTreeMap<String, u64>) -> String {
    drops
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
            },
            peers: vec![PeerInfo {
                name: "west-1".into(),
                cluster: "west".into(),
                zone: "us-west-1a".into(),
                public_key: "BBBB".into(),
                endpoint: Some("192.0.2.10:51820".into()),
                allowed_ips: vec!["10.2.1.0/24".into()],
                state: "static".into(),
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
    fn table_shows_peers_and_drops() {
        let text = render(&sample());
        assert!(
            text.starts_with("node east-1 (cluster east, zone us-east-1a, region us-east)"),
            "{text}"
        );
        assert!(text.contains("drops: malformed=3"));
        let row = text.lines().find(|l| l.starts_with("west")).unwrap();
        for cell in [
            "west-1",
            "static",
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
