//! One node of a [`super::MeshLab`]: its namespaces, addresses, config and daemon.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::status::{kernel_routes, peer_state};
use crate::netns::Netns;
use crate::peerd::{Peerd, PeerdConfig};

/// A mesh node: a namespace on its cluster's bridge running peerd, and a pod namespace behind
/// it. Fields are read-only to tests; [`super::MeshLab`] builds it.
#[derive(Debug)]
pub struct MeshNode {
    // First, so the daemon dies before its namespaces go.
    pub(super) peerd: Option<Peerd>,
    /// Node name, `<cluster>-<k>`.
    pub name: String,
    /// Cluster index in the lab.
    pub cluster: usize,
    /// Cluster name.
    pub cluster_name: String,
    /// Underlay address (on the cluster bridge).
    pub underlay: Ipv4Addr,
    /// Overlay address (on the TUN; also the pod's gateway).
    pub address: Ipv4Addr,
    /// Pod CIDR, `10.<c+1>.<k>.0/24`.
    pub pod_cidr: String,
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
    /// Whether its certificate comes from the mesh CA.
    pub member: bool,
    pub(super) cfg: PeerdConfig,
    pub(super) ns: Netns,
    pub(super) pod: Netns,
}

impl MeshNode {
    /// The node's namespace (where peerd runs).
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// The pod namespace behind the node.
    pub fn pod(&self) -> &Netns {
        &self.pod
    }

    /// The daemon's config.
    pub fn config(&self) -> &PeerdConfig {
        &self.cfg
    }

    /// The config, to change before the daemon starts (a node added with
    /// [`super::NodeOptions::deferred`]) or before a [`MeshNode::reload`].
    pub fn config_mut(&mut self) -> &mut PeerdConfig {
        &mut self.cfg
    }

    /// Rewrites the running daemon's config file from [`MeshNode::config`] and sends it SIGHUP
    /// (see [`Peerd::reload`]).
    pub fn reload(&mut self) -> Result<()> {
        let name = self.name.clone();
        self.peerd
            .as_mut()
            .with_context(|| format!("{name} was never started"))?
            .reload(&self.cfg)
    }

    /// `peerd services --json` of this node.
    pub fn services(&self) -> Result<Value> {
        self.peerd()?.services()
    }

    /// The daemon, once started.
    pub fn peerd(&self) -> Result<&Peerd> {
        self.peerd
            .as_ref()
            .with_context(|| format!("{} was never started", self.name))
    }

    /// Whether peerd was started and not killed or stopped since.
    pub fn is_up(&self) -> bool {
        self.peerd.as_ref().is_some_and(|p| p.started())
    }

    /// Whether the daemon process is still running (it has not crashed).
    pub fn is_running(&mut self) -> bool {
        self.peerd.as_mut().is_some_and(Peerd::is_running)
    }

    /// `peerd status --json` of this node.
    pub fn status(&self) -> Result<Value> {
        self.peerd()?.status()
    }

    /// The membership state this node shows for node `name` (`None` when it is not listed).
    pub fn state_of(&self, name: &str) -> Result<Option<String>> {
        Ok(peer_state(&self.status()?, name).map(str::to_owned))
    }

    /// Destinations of the routes peerd installed in this node's kernel (`proto 112`).
    pub fn routes(&self) -> Result<BTreeSet<String>> {
        kernel_routes(&self.ns)
    }

    /// SIGKILL of the daemon.
    pub fn kill(&mut self) -> Result<()> {
        self.peerd_mut()?.kill()
    }

    /// SIGTERM of the daemon (it announces its leave).
    pub fn terminate(&mut self) -> Result<()> {
        self.peerd_mut()?.terminate()
    }

    /// Starts the daemon again with the same config and state directory; returns once it
    /// answers `status`.
    pub fn restart(&mut self) -> Result<()> {
        self.peerd_mut()?.restart()
    }

    /// The daemon's log tails (empty if it never ran).
    pub fn logs(&self) -> String {
        match &self.peerd {
            Some(p) => format!("=== {} ===\n{}", self.name, p.logs()),
            None => String::new(),
        }
    }

    pub(super) fn start(&mut self, dir: &Path) -> Result<()> {
        self.peerd = Some(Peerd::start(&self.ns, dir, &self.cfg)?);
        Ok(())
    }

    fn peerd_mut(&mut self) -> Result<&mut Peerd> {
        let name = self.name.clone();
        self.peerd
            .as_mut()
            .with_context(|| format!("{name} was never started"))
    }
}
