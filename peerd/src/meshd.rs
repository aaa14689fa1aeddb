//! The mesh control plane inside the daemon: builds the [`Mesh`] from the node's certificate,
//! runs it on the WireGuard port (datagrams arrive from the data path through a channel), and
//! keeps the last known mesh in the state directory so tunnels come back before gossip does.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};
use overlay::device::OtherSink;
use overlay::{PeerConfig, PrivateKey, PublicKey};
use peerd_mesh::store::Verifier;
use peerd_mesh::trust::{NodeSigner, TrustAnchor};
use peerd_mesh::{
    Mesh, MeshConfig, MeshNode, NodeId, NodeState, OwnNode, SignedRecord, VerifyCache,
};
use tokio::sync::{mpsc, watch};

use crate::config::{Config, MeshSection};
use crate::daemon::Daemon;

/// Keepalive for mesh peers: keeps NAT bindings open and sessions always on.
const MESH_KEEPALIVE: u16 = 25;
/// Control datagrams queued between the data path and the control plane before drops.
pub const QUEUE: usize = 4096;
/// File in the state directory holding the last known signed records.
const STATE_FILE: &str = "mesh-records.bin";

/// The control plane of a running daemon.
pub struct MeshRuntime {
    mesh: Mutex<Mesh>,
    /// WireGuard peers the mesh installed, with the record version they came from.
    applied: Mutex<BTreeMap<PublicKey, (NodeId, u64)>>,
    state_file: PathBuf,
    same_cluster: bool,
    own_cluster: String,
}

/// What `peerd status` shows of a mesh node.
pub struct NodeView {
    /// The node.
    pub node: MeshNode,
    /// Its WireGuard key.
    pub key: PublicKey,
}

impl MeshRuntime {
    /// Loads the certificate and CA, checks them against the config, and prepares the mesh
    /// with the records remembered from the last run.
    pub fn build(
        config: &Config,
        mesh: &MeshSection,
        wg_private: PrivateKey,
        endpoints: Vec<SocketAddr>,
    ) -> Result<Self> {
        let signer = NodeSigner::load(&mesh.cert_file, &mesh.key_file).with_context(|| {
            format!(
                "cannot load the node certificate ({})",
                mesh.cert_file.display()
            )
        })?;
        let anchor = TrustAnchor::load(&mesh.ca_file)
            .with_context(|| format!("cannot load the mesh CA ({})", mesh.ca_file.display()))?;
        check_identity(config, &signer, &mesh.cert_file)?;
        let node = &config.node;
        let own = OwnNode {
            wg_private,
            endpoints,
            pod_cidrs: node.pod_cidrs.clone(),
            address: node.address,
            address6: node.address6,
            services: config.exports(),
        };
        let verifier = Verifier::new(anchor, VerifyCache::default());
        let now = (Instant::now(), SystemTime::now());
        let m = Mesh::new(MeshConfig::default(), own, signer, verifier, now.0, now.1)
            .context("cannot start the mesh control plane")?;
        Ok(Self {
            mesh: Mutex::new(m),
            applied: Mutex::new(BTreeMap::new()),
            state_file: mesh.state_dir.join(STATE_FILE),
            same_cluster: mesh.tunnel_same_cluster,
            own_cluster: node.cluster.clone(),
        })
    }

    /// Joins through `seeds`, starting from the records of the last run.
    pub fn start(&self, seeds: Vec<SocketAddr>) {
        let cached = load_state(&self.state_file);
        if !cached.is_empty() {
            tracing::info!(records = cached.len(), file = %self.state_file.display(), "restoring the last known mesh");
        }
        self.lock()
            .start(seeds, cached, Instant::now(), SystemTime::now());
    }

    /// The mesh, locked.
    pub fn lock(&self) -> MutexGuard<'_, Mesh> {
        self.mesh.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every known node with its WireGuard key.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.lock()
            .nodes(Instant::now())
            .into_iter()
            .map(|node| NodeView {
                key: PublicKey::from_bytes(node.record.wg_public_key),
                node,
            })
            .collect()
    }

    /// Brings the node's WireGuard peers in line with the mesh: adds and updates live nodes,
    /// removes dead ones. Returns whether anything changed.
    pub fn program(&self, node: &mut overlay::Node) -> bool {
        let nodes = self.lock().nodes(Instant::now());
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let wanted: BTreeMap<PublicKey, &MeshNode> = nodes
            .iter()
            .filter(|n| {
                n.state != NodeState::Dead
                    && (self.same_cluster || n.record.cluster != self.own_cluster)
            })
            .map(|n| (PublicKey::from_bytes(n.record.wg_public_key), n))
            .collect();
        let mut changed = false;
        let gone: Vec<PublicKey> = applied
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            if let Some((id, _)) = applied.remove(&key) {
                tracing::info!(node = %id, "tunnel removed");
            }
            node.remove_peer(&key);
            changed = true;
        }
        let now = Instant::now();
        for (key, n) in wanted {
            if applied
                .get(&key)
                .is_some_and(|(_, v)| *v == n.record.version)
            {
                continue;
            }
            let r = &n.record;
            let mut allowed_ips = r.pod_cidrs.clone();
            let overlay = std::iter::once(IpAddr::V4(r.address)).chain(r.address6.map(IpAddr::V6));
            for addr in overlay {
                if !r.pod_cidrs.iter().any(|n| n.contains(&addr)) {
                    allowed_ips.push(ipnet::IpNet::from(addr));
                }
            }
            let config = PeerConfig {
                public_key: key,
                preshared_key: None,
                endpoint: r.endpoints.first().copied(),
                allowed_ips,
                persistent_keepalive: Some(MESH_KEEPALIVE),
            };
            match node.upsert_peer(config, now) {
                Ok(_) => {
                    tracing::info!(node = %r.id(), endpoint = ?r.endpoints.first(), "tunnel programmed");
                    applied.insert(key, (r.id(), r.version));
                    changed = true;
                }
                Err(e) => tracing::warn!(node = %r.id(), error = %e, "peer refused"),
            }
        }
        changed
    }

    /// Writes the known records to the state directory (atomically).
    pub fn save(&self) {
        let records = self.lock().export();
        if let Err(e) = save_state(&self.state_file, &records) {
            tracing::warn!(file = %self.state_file.display(), error = %format!("{e:#}"), "cannot save the mesh state");
        }
    }
}

/// The data path's hand-off for control datagrams: a bounded queue; a full queue drops.
pub fn sink(tx: mpsc::Sender<(SocketAddr, Vec<u8>)>) -> OtherSink {
    Box::new(move |from, datagram| {
        if !peerd_mesh::wire::is_control(datagram) {
            return;
        }
        if tx.try_send((from, datagram.to_vec())).is_err() {
            tracing::debug!(%from, "control queue full; datagram dropped");
        }
    })
}

/// Runs the control plane until `shutdown` fires, then announces the leave.
pub async fn run(
    daemon: Arc<Daemon>,
    mut rx: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(m) = daemon.mesh().cloned() else {
        return;
    };
    // The seed greetings queued at start leave now, not after the first timer.
    send_all(&daemon, &m);
    let mut last = 0;
    loop {
        let deadline = tokio::time::Instant::from_std(m.lock().poll_timeout());
        tokio::select! {
            message = rx.recv() => {
                let Some((from, datagram)) = message else { break };
                let mut mesh = m.lock();
                mesh.handle_datagram(from, &datagram, Instant::now(), SystemTime::now());
                while let Ok((from, datagram)) = rx.try_recv() {
                    mesh.handle_datagram(from, &datagram, Instant::now(), SystemTime::now());
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                m.lock().handle_timeout(Instant::now(), SystemTime::now());
            }
            _ = shutdown.changed() => {
                m.lock().leave(Instant::now(), SystemTime::now());
                send_all(&daemon, &m);
                return;
            }
        }
        send_all(&daemon, &m);
        let generation = m.lock().generation();
        if generation != last {
            last = generation;
            daemon.apply_mesh().await;
        }
    }
}

fn send_all(daemon: &Daemon, m: &MeshRuntime) {
    let out: Vec<(SocketAddr, Vec<u8>)> = std::iter::from_fn(|| m.lock().poll_transmit()).collect();
    for (to, datagram) in out {
        if let Err(e) = daemon.send_other(to, &datagram) {
            tracing::debug!(%to, error = %e, "control datagram not sent");
        }
    }
}

fn check_identity(config: &Config, signer: &NodeSigner, cert: &Path) -> Result<()> {
    let id = signer.identity();
    let n = &config.node;
    for (field, ours, theirs) in [
        ("name", &n.name, &id.name),
        ("cluster", &n.cluster, &id.cluster),
        ("region", &n.region, &id.region),
        ("zone", &n.zone, &id.zone),
    ] {
        if ours != theirs {
            bail!(
                "node.{field} {ours:?} differs from {theirs:?} in the certificate {}",
                cert.display()
            );
        }
    }
    Ok(())
}

fn load_state(path: &Path) -> Vec<SignedRecord> {
    match std::fs::read(path) {
        Ok(bytes) => postcard::from_bytes(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable mesh state file");
            Vec::new()
        }),
        Err(_) => Vec::new(),
    }
}

fn save_state(path: &Path, records: &[SignedRecord]) -> Result<()> {
    let dir = path.parent().context("state file has no folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bytes = postcard::to_allocvec(records)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}
