//! `peerd run`: builds the node from the config file, opens the TUN device and the UDP port,
//! programs addresses and routes, and serves the admin and WireGuard API sockets until SIGTERM.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use ipnet::IpNet;
use overlay::uapi::{self, InterfaceSettings, Request as UapiRequest};
use overlay::udp::UdpIo;
use overlay::{Node, PeerConfig, PresharedKey, PrivateKey, PublicKey};
use tokio::signal::unix::{SignalKind, signal};

use crate::admin::{self, Request};
use crate::catalog::{Catalog, NodeExports, ServiceSource, StaticSource};
use crate::config::{Config, PeerSection};
use crate::datapath::{Attach, DataPath};
use crate::meshd::{self, MeshRuntime};
use crate::uapi_server;

mod view;

/// A running node.
pub struct Daemon {
    config_path: PathBuf,
    config: Mutex<Config>,
    node: Arc<Mutex<Node>>,
    data: DataPath,
    listen_port: u16,
    mesh: Option<Arc<MeshRuntime>>,
    /// This node's static service exports (the config file).
    source: Mutex<Box<dyn ServiceSource>>,
    /// The Kubernetes source, when `[kubernetes]` is configured.
    kube: Option<Arc<peerd_kube::KubeSource>>,
    /// The mesh-wide catalog, rebuilt whenever the mesh or this node's exports change.
    catalog: Mutex<Arc<Catalog>>,
    /// The `.global` DNS server, when `[dns]` is configured.
    dns: Option<dns::DnsServer>,
    /// The L7 proxy on the virtual IPs.
    proxy: Arc<l7proxy::Proxy>,
    /// Catalog snapshots for the proxy task.
    proxy_routes: tokio::sync::watch::Sender<l7proxy::ProxyConfig>,
    /// Serialises route syncs (admin, UAPI, reload and the mesh may race).
    routes_lock: tokio::sync::Mutex<()>,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config_path: &Path) -> Result<()> {
    ensure!(
        !overlay::MOCK_TIME,
        "this peerd was built with the mock-time test feature and cannot run"
    );
    let config = Config::load(config_path)?;
    let private = read_private_key(&config.node.private_key_file)?;
    let now = Instant::now();
    let mut node = Node::new(private.clone(), now);
    for peer in &config.peers {
        node.upsert_peer(peer_config(peer)?, now)
            .with_context(|| format!("peer {}", peer.name))?;
    }
    let udp = UdpIo::bind(config.node.listen_port).context("node.listen_port")?;
    let listen_port = udp.local_addr()?.port();
    let attach = crate::datapath::attach(&config).await?;

    let (mesh, control) = match &config.mesh {
        Some(section) => {
            let endpoints = advertised(&attach, &config, section, listen_port).await?;
            let runtime = MeshRuntime::build(&config, section, private, endpoints)?;
            let (tx, rx) = tokio::sync::mpsc::channel(meshd::QUEUE);
            (Some(Arc::new(runtime)), Some((meshd::sink(tx), rx)))
        }
        None => (None, None),
    };
    let (sink, control_rx) = control.map_or((None, None), |(s, r)| (Some(s), Some(r)));
    let node = Arc::new(Mutex::new(node));
    let data = attach.start(&config, node.clone(), udp, sink)?;
    data.set_forwards(&config.forwards());
    let admin_socket = config.admin_socket();
    let metrics_addr = config.admin.metrics;
    let uapi_socket = config.uapi_socket();
    let exports = config.exports();
    let kube = match &config.kubernetes {
        Some(k) => Some(Arc::new(start_kube(k).await?)),
        None => None,
    };
    let dns = match &config.dns {
        Some(d) => {
            let dns_config = dns::DnsConfig {
                listen: d.listen,
                upstream: d.upstream.clone(),
                ttl: d.ttl,
            };
            let server = dns::DnsServer::start(dns_config, dns::Zone::default())
                .await
                .context("[dns] listen")?;
            tracing::info!(listen = %server.local_addr(), "dns ready");
            Some(server)
        }
        None => None,
    };
    let seeds: Vec<SocketAddr> = config
        .mesh
        .iter()
        .flat_map(|m| m.seeds.iter())
        .filter_map(|s| crate::config::resolve_endpoint(s).ok())
        .collect();
    let locality = peerd_types::Locality {
        cluster: config.node.cluster.clone(),
        region: config.node.region.clone(),
        zone: config.node.zone.clone(),
        node: config.node.name.clone(),
    };
    let proxy = Arc::new(l7proxy::Proxy::new(locality, data.dialer()));
    let (proxy_routes, routes_rx) = tokio::sync::watch::channel(l7proxy::ProxyConfig::default());
    tokio::spawn(crate::proxyd::run(proxy.clone(), routes_rx));
    let daemon = Arc::new(Daemon {
        config_path: config_path.to_owned(),
        config: Mutex::new(config),
        node,
        data,
        listen_port,
        mesh,
        source: Mutex::new(Box::new(StaticSource(exports))),
        kube,
        catalog: Mutex::new(Arc::new(Catalog::default())),
        dns,
        proxy,
        proxy_routes,
        routes_lock: tokio::sync::Mutex::new(()),
    });
    daemon.rebuild_catalog();
    daemon.sync_routes().await?;

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    if let Some(kube) = daemon.kube.clone() {
        let daemon = daemon.clone();
        let mut changes = kube.changes();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                daemon.exports_changed();
            }
        });
    }
    let mesh_task = match (daemon.mesh.clone(), control_rx) {
        (Some(m), Some(rx)) => {
            // Tunnels to the last known mesh come back before gossip reconverges.
            m.start(seeds);
            daemon.apply_mesh().await;
            Some(tokio::spawn(meshd::run(daemon.clone(), rx, shutdown_rx)))
        }
        _ => None,
    };

    let admin_listener = admin::bind(&admin_socket)?;
    let uapi_listener = uapi_server::bind(&uapi_socket)?;
    let handler = {
        let daemon = daemon.clone();
        move |request| {
            let daemon = daemon.clone();
            async move { daemon.handle(request).await }
        }
    };
    let admin_task = tokio::spawn(admin::serve(admin_listener, handler));
    let metrics_task = match metrics_addr {
        Some(addr) => Some(tokio::spawn(crate::admin_http::serve(
            crate::admin_http::bind(addr).await?,
            daemon.clone(),
        ))),
        None => None,
    };
    let uapi_task = tokio::spawn(uapi_server::serve(uapi_listener, daemon.clone()));
    tracing::info!(
        interface = %daemon.lock_config().node.interface,
        mode = daemon.data.mode(),
        port = listen_port,
        offload = daemon.data.offload(),
        mesh = daemon.mesh.is_some(),
        admin = %admin_socket.display(),
        "peerd ready"
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => daemon.reload().await,
        }
    }
    tracing::info!("shutting down");
    if let Some(task) = mesh_task {
        // Announce the leave so that the others withdraw our routes at once.
        let _ = shutdown_tx.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), task).await;
    }
    admin_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    uapi_task.abort();
    let _ = std::fs::remove_file(&admin_socket);
    let _ = std::fs::remove_file(&uapi_socket);
    Ok(())
}

/// The underlay endpoints to announce: configured ones, or every global address of this host
/// (except the tunnel's and those inside the node's own pod CIDRs) with the listen port.
async fn advertised(
    attach: &Attach,
    config: &Config,
    mesh: &crate::config::MeshSection,
    port: u16,
) -> Result<Vec<SocketAddr>> {
    if !mesh.advertise.is_empty() {
        return Ok(mesh.advertise.clone());
    }
    let own = &config.node.pod_cidrs;
    let found: Vec<SocketAddr> = attach
        .host_addresses()
        .await?
        .into_iter()
        .filter(|ip| !own.iter().any(|n| n.contains(ip)))
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    ensure!(
        !found.is_empty(),
        "no underlay address to announce: set [mesh] advertise = [\"ip:port\"]"
    );
    tracing::info!(endpoints = ?found, "announcing underlay endpoints");
    Ok(found)
}

impl Daemon {
    fn lock_config(&self) -> MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_node(&self) -> MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The control plane, when `[mesh]` is configured.
    pub fn mesh(&self) -> Option<&Arc<MeshRuntime>> {
        self.mesh.as_ref()
    }

    /// Sends a control datagram from the WireGuard port.
    pub fn send_other(&self, to: SocketAddr, datagram: &[u8]) -> std::io::Result<()> {
        self.data.send_other(to, datagram)
    }

    /// Reprograms WireGuard peers and routes from the mesh, and saves the mesh state.
    pub async fn apply_mesh(&self) {
        let Some(mesh) = &self.mesh else { return };
        let changed = mesh.program(&mut self.lock_node());
        if changed {
            if let Err(e) = self.sync_routes().await {
                tracing::warn!(error = %format!("{e:#}"), "route sync after a mesh change failed");
            }
            self.data.flush();
        }
        mesh.save();
        self.rebuild_catalog();
    }

    /// Every service this node exports: the config file's and the cluster's.
    fn own_exports(&self) -> Vec<peerd_types::ServiceExport> {
        let mut all = self
            .source
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .exports();
        if let Some(kube) = &self.kube {
            all.extend(ServiceSource::exports(kube.as_ref()));
        }
        all
    }

    /// This node's exports changed: publish them to the mesh and rebuild the catalog.
    pub fn exports_changed(&self) {
        let exports = self.own_exports();
        if let Some(m) = &self.mesh {
            let mut mesh = m.lock();
            if mesh.own().services != exports {
                mesh.update_own(
                    |r| r.services = exports,
                    Instant::now(),
                    std::time::SystemTime::now(),
                );
            }
        }
        self.rebuild_catalog();
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Merges this node's exports and every mesh node's into a new catalog.
    pub fn rebuild_catalog(&self) {
        let (locality, cidr) = {
            let c = self.lock_config();
            let n = &c.node;
            let locality = peerd_types::Locality {
                cluster: n.cluster.clone(),
                region: n.region.clone(),
                zone: n.zone.clone(),
                node: n.name.clone(),
            };
            (locality, c.service_cidr())
        };
        let own = self.own_exports();
        let nodes = self.mesh.as_ref().map(|m| m.nodes()).unwrap_or_default();
        let mut all = vec![NodeExports {
            locality,
            alive: true,
            exports: &own,
        }];
        for v in &nodes {
            let r = &v.node.record;
            all.push(NodeExports {
                locality: peerd_types::Locality {
                    cluster: r.cluster.clone(),
                    region: r.region.clone(),
                    zone: r.zone.clone(),
                    node: r.name.clone(),
                },
                alive: v.node.state != peerd_mesh::NodeState::Dead,
                exports: &r.services,
            });
        }
        let catalog = Catalog::build(all, cidr);
        let mut current = self.catalog.lock().unwrap_or_else(|e| e.into_inner());
        if **current != catalog {
            tracing::debug!(services = catalog.services.len(), "catalog changed");
            if let Some(dns) = &self.dns {
                dns.update(catalog.zone());
            }
            let policies = self.lock_config().policies.clone();
            let _ = self
                .proxy_routes
                .send(crate::proxyd::routes(&catalog, &policies));
            *current = Arc::new(catalog);
        }
    }

    async fn handle(&self, request: Request) -> Result<serde_json::Value> {
        match request {
            Request::Status => Ok(serde_json::to_value(self.status())?),
            Request::Explain { name } => Ok(serde_json::to_value(self.explain(&name)?)?),
            Request::Services => Ok(serde_json::to_value(crate::status::services(
                &self.catalog(),
            ))?),
            Request::Ping { node, count } => {
                Ok(serde_json::to_value(self.ping(&node, count).await?)?)
            }
        }
    }

    /// Answers one WireGuard userspace API request.
    pub async fn uapi(&self, text: &str) -> String {
        let errno = |e: uapi::UapiError| {
            tracing::info!(error = %e, "wg request refused");
            format!("errno={}\n\n", e.errno)
        };
        let request = match uapi::parse_request(text) {
            Ok(r) => r,
            Err(e) => return errno(e),
        };
        let settings = InterfaceSettings {
            listen_port: self.listen_port,
            fwmark: 0,
        };
        match request {
            UapiRequest::Get => uapi::format_get(&self.lock_node(), settings, Instant::now()),
            UapiRequest::Set(pairs) => {
                let outcome = uapi::apply_set(&mut self.lock_node(), &pairs, Instant::now());
                let outcome = match outcome {
                    Ok(o) => o,
                    Err(e) => return errno(e),
                };
                if outcome.listen_port.is_some_and(|p| p != self.listen_port) {
                    return errno(uapi::UapiError {
                        message: "changing listen_port needs a restart of peerd".into(),
                        errno: -95, // EOPNOTSUPP
                    });
                }
                if outcome.peers_changed {
                    if let Err(e) = self.sync_routes().await {
                        tracing::warn!(error = %format!("{e:#}"), "route sync after wg set failed");
                    }
                    self.data.flush();
                }
                "errno=0\n\n".into()
            }
        }
    }

    /// Re-reads the config file (SIGHUP): static peers are added, changed and removed. A bad
    /// file is reported and the running configuration kept.
    async fn reload(&self) {
        let new = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reload refused; keeping the running configuration");
                return;
            }
        };
        let mut peers = Vec::new();
        for p in &new.peers {
            match peer_config(p) {
                Ok(c) => peers.push(c),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "reload refused; keeping the running configuration");
                    return;
                }
            }
        }
        {
            let old = self.lock_config();
            let mut node = self.lock_node();
            let keep: BTreeSet<PublicKey> = new.peers.iter().map(|p| p.public_key).collect();
            for gone in old.peers.iter().filter(|p| !keep.contains(&p.public_key)) {
                node.remove_peer(&gone.public_key);
            }
            let now = Instant::now();
            for peer in peers {
                if let Err(e) = node.upsert_peer(peer, now) {
                    tracing::error!(error = %e, "peer refused");
                }
            }
            if old.node.address != new.node.address || old.node.interface != new.node.interface {
                tracing::warn!("node address or interface changed: restart peerd to apply");
            }
        }
        let exports = new.exports();
        self.data.set_forwards(&new.forwards());
        *self.lock_config() = new;
        *self.source.lock().unwrap_or_else(|e| e.into_inner()) = Box::new(StaticSource(exports));
        self.exports_changed();
        if let Err(e) = self.sync_routes().await {
            tracing::warn!(error = %format!("{e:#}"), "route sync after reload failed");
        }
        self.data.flush();
        tracing::info!("configuration reloaded");
    }

    /// Routes every peer's allowed IPs into the TUN device, except default routes (which would
    /// swallow the underlay) and this node's own pod CIDRs.
    async fn sync_routes(&self) -> Result<()> {
        let _guard = self.routes_lock.lock().await;
        let (own, src4, src6) = {
            let c = self.lock_config();
            (c.node.pod_cidrs.clone(), c.node.address, c.node.address6)
        };
        let desired: BTreeSet<IpNet> = self
            .lock_node()
            .peers()
            .iter()
            .flat_map(|p| p.allowed_ips.iter().copied())
            .filter(|net| net.prefix_len() > 0 && !own.iter().any(|o| o.contains(net)))
            .collect();
        let changes = self.data.sync_routes(&desired, src4, src6).await?;
        if !changes.added.is_empty() || !changes.removed.is_empty() {
            tracing::info!(added = ?changes.added, removed = ?changes.removed, "routes updated");
        }
        Ok(())
    }
}

/// Reads a base64 private key file, saying plainly what is wrong.
pub fn read_private_key(path: &Path) -> Result<PrivateKey> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the private key file {} (node.private_key_file)",
            path.display()
        )
    })?;
    warn_if_readable_by_others(path);
    PrivateKey::from_base64(&text).with_context(|| {
        format!(
            "{} (node.private_key_file) does not hold a WireGuard key",
            path.display()
        )
    })
}

fn peer_config(peer: &PeerSection) -> Result<PeerConfig> {
    let preshared_key = match &peer.preshared_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "cannot read the pre-shared key file {} (peer {})",
                    path.display(),
                    peer.name
                )
            })?;
            Some(
                PresharedKey::from_base64(&text)
                    .with_context(|| format!("{} is not a key", path.display()))?,
            )
        }
        None => None,
    };
    Ok(PeerConfig {
        public_key: peer.public_key,
        preshared_key,
        endpoint: peer.endpoint_addr(),
        allowed_ips: peer.allowed_ips.iter().map(IpNet::trunc).collect(),
        persistent_keepalive: peer.persistent_keepalive,
    })
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "private key file is readable by group or others; chmod 600 it");
    }
}

/// Starts watching the cluster for this node (`NODE_NAME`).
async fn start_kube(k: &crate::config::KubernetesSection) -> Result<peerd_kube::KubeSource> {
    let node_name = std::env::var("NODE_NAME")
        .context("[kubernetes] needs NODE_NAME (the pod's spec.nodeName)")?;
    let client = peerd_kube::client()
        .await
        .context("cannot reach the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let mut options = peerd_kube::Options::new(node_name);
    options.export_version = k.export_version();
    options.write_status = k.write_status;
    peerd_kube::KubeSource::start_with(client, options)
        .await
        .context("cannot start watching the cluster")
}
