//! What the admin socket answers: `status` (static and mesh peers, grouped by cluster) and
//! `ping`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use overlay::{PeerStatus, PublicKey};

use super::Daemon;
use crate::config::PeerSection;
use crate::status::{MeshInfo, NodeInfo, PeerInfo, PingReport, Status};

/// A tunnel with a handshake this recent is up (WireGuard rejects sessions after 180 s).
const TUNNEL_UP: Duration = Duration::from_secs(180);

impl Daemon {
    /// The status `peerd status` shows (also the source of `/metrics`).
    pub fn status_snapshot(&self) -> Status {
        self.status()
    }

    /// Whether the node serves traffic (for `/readyz`).
    pub fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// DNS counters, when the DNS server runs.
    pub fn dns_stats(&self) -> Option<dns::DnsStats> {
        self.dns.as_ref().map(dns::DnsServer::stats)
    }

    /// Appends the proxy's metrics.
    pub fn encode_proxy_metrics(&self, out: &mut String) {
        self.proxy.encode_metrics(out);
    }

    /// What a global name maps to from this node (`peerd explain`).
    pub(super) fn explain(&self, name: &str) -> Result<crate::status::ExplainReport> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let catalog = self.catalog();
        let service = catalog.services.values().find(|s| {
            name == crate::catalog::global_name(&s.key, None)
                || s.cluster_vips
                    .keys()
                    .any(|c| name == crate::catalog::global_name(&s.key, Some(c)))
        });
        let Some(service) = service else {
            bail!("{name} is not a global name of the catalog (see `peerd services`)");
        };
        let vip = if name == crate::catalog::global_name(&service.key, None) {
            service.vip
        } else {
            service
                .cluster_vips
                .iter()
                .find(|(c, _)| name == crate::catalog::global_name(&service.key, Some(c)))
                .map(|(_, v)| *v)
        };
        Ok(crate::status::ExplainReport {
            name: name.clone(),
            vip: vip.map(|v| v.to_string()),
            proxy: self.proxy.explain(&name),
        })
    }

    pub(super) fn status(&self) -> Status {
        let config = self.lock_config();
        let statics: BTreeMap<PublicKey, &PeerSection> =
            config.peers.iter().map(|p| (p.public_key, p)).collect();
        let mesh_nodes = self.mesh.as_ref().map(|m| m.nodes()).unwrap_or_default();
        let (wg_peers, node_drops, public_key) = {
            let node = self.lock_node();
            (node.peers(), node.drops().clone(), node.public_key())
        };
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut by_key: BTreeMap<PublicKey, PeerStatus> =
            wg_peers.into_iter().map(|p| (p.public_key, p)).collect();
        let mut peers = Vec::new();
        for view in &mesh_nodes {
            let r = &view.node.record;
            let wg = by_key.remove(&view.key);
            let mut info = peer_info(wg.as_ref(), view.key, now, wall);
            info.name = r.name.clone();
            info.cluster = r.cluster.clone();
            info.region = r.region.clone();
            info.zone = r.zone.clone();
            info.state = view.node.state.as_str().into();
            info.pod_cidrs = r.pod_cidrs.iter().map(ToString::to_string).collect();
            if info.endpoint.is_none() {
                info.endpoint = r.endpoints.first().map(ToString::to_string);
            }
            if wg.is_none() {
                info.tunnel = "down".into();
            }
            peers.push(info);
        }
        for (key, wg) in by_key {
            let mut info = peer_info(Some(&wg), key, now, wall);
            if let Some(s) = statics.get(&key) {
                info.name = s.name.clone();
                info.cluster = s.cluster.clone();
                info.zone = s.zone.clone();
            }
            info.state = "static".into();
            peers.push(info);
        }
        peers.sort_by(|a, b| {
            (&a.cluster, &a.name, &a.public_key).cmp(&(&b.cluster, &b.name, &b.public_key))
        });
        let mesh = self.mesh.as_ref().map(|m| {
            let stats = m.lock().stats().clone();
            let mut nodes = BTreeMap::new();
            for v in &mesh_nodes {
                *nodes.entry(v.node.state.as_str().to_string()).or_default() += 1;
            }
            MeshInfo {
                nodes,
                rejected: stats
                    .rejected
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                dropped: stats
                    .dropped
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                rx_bytes: stats.rx_bytes,
                tx_bytes: stats.tx_bytes,
            }
        });
        let n = &config.node;
        Status {
            node: NodeInfo {
                name: n.name.clone(),
                cluster: n.cluster.clone(),
                region: n.region.clone(),
                zone: n.zone.clone(),
                public_key: public_key.to_string(),
                listen_port: self.listen_port,
                interface: n.interface.clone(),
                address: n.address.to_string(),
                address6: n.address6.map(|a| a.to_string()),
                pod_cidrs: n.pod_cidrs.iter().map(ToString::to_string).collect(),
                mode: self.data.mode().into(),
                offload: self.data.offload(),
                drops: node_drops
                    .nonzero()
                    .map(|(r, n)| (r.to_string(), n))
                    .collect(),
                mesh,
            },
            peers,
        }
    }

    /// Pings `target` (a node name, `cluster/name`, or a static peer's name) through the tunnel.
    pub(super) async fn ping(&self, target: &str, count: u32) -> Result<PingReport> {
        anyhow::ensure!(
            self.lock_config().node.mode == crate::config::Mode::Kernel,
            "peerd ping sends ICMP through the TUN device; a userspace-mode node has none (check the tunnel with peerd status)"
        );
        let (dst, src, name) = self.ping_target(target)?;
        let key = self.lock_node().route(dst);
        let endpoint = key
            .and_then(|id| self.lock_node().peer_status(id))
            .and_then(|p| p.endpoint);
        let count = count.clamp(1, 100);
        let rtts = tokio::task::spawn_blocking(move || {
            crate::icmp::ping(src, dst, count, Duration::from_secs(2))
        })
        .await
        .context("ping task failed")?
        .with_context(|| format!("cannot ping {dst}"))?;
        Ok(PingReport {
            node: name,
            address: dst.to_string(),
            endpoint: endpoint.map(|e| e.to_string()),
            sent: count,
            replies: rtts.iter().flatten().count() as u32,
            rtt_ms: rtts
                .iter()
                .flatten()
                .map(|d| d.as_secs_f64() * 1000.0)
                .collect(),
        })
    }

    fn ping_target(&self, target: &str) -> Result<(IpAddr, IpAddr, String)> {
        let config = self.lock_config();
        let src = IpAddr::V4(config.node.address);
        if let Some(m) = &self.mesh {
            let found = m.nodes().into_iter().find(|v| {
                let r = &v.node.record;
                r.name == target || format!("{}/{}", r.cluster, r.name) == target
            });
            if let Some(v) = found {
                let r = v.node.record;
                return Ok((
                    IpAddr::V4(r.address),
                    src,
                    format!("{}/{}", r.cluster, r.name),
                ));
            }
        }
        if let Some(p) = config.peers.iter().find(|p| p.name == target) {
            let host = p
                .allowed_ips
                .iter()
                .find(|n| n.prefix_len() == n.max_prefix_len() && n.addr().is_ipv4());
            if let Some(net) = host {
                return Ok((net.addr(), src, p.name.clone()));
            }
            bail!("static peer {target} has no IPv4 /32 in allowed_ips to ping");
        }
        bail!("no node named {target}")
    }
}

fn peer_info(wg: Option<&PeerStatus>, key: PublicKey, now: Instant, wall: SystemTime) -> PeerInfo {
    let last = wg.and_then(|p| p.last_handshake);
    let tunnel = match (last, wg.and_then(|p| p.endpoint)) {
        (Some(at), _) if now.duration_since(at) < TUNNEL_UP => "up",
        (_, Some(_)) => "connecting",
        _ => "down",
    };
    PeerInfo {
        name: String::new(),
        cluster: String::new(),
        region: String::new(),
        zone: String::new(),
        public_key: key.to_string(),
        endpoint: wg.and_then(|p| p.endpoint).map(|e| e.to_string()),
        allowed_ips: wg
            .map(|p| p.allowed_ips.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        state: String::new(),
        tunnel: tunnel.into(),
        pod_cidrs: Vec::new(),
        last_handshake_unix: last
            .and_then(|at| wall.checked_sub(now.saturating_duration_since(at)))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
        rx_bytes: wg.map_or(0, |p| p.rx_bytes),
        tx_bytes: wg.map_or(0, |p| p.tx_bytes),
        persistent_keepalive: wg.and_then(|p| p.persistent_keepalive),
        drops: wg
            .map(|p| p.drops.nonzero().map(|(r, n)| (r.to_string(), n)).collect())
            .unwrap_or_default(),
    }
}
