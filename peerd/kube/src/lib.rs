//! The Kubernetes source of a node's identity and service exports.
//!
//! It watches this node, Services, EndpointSlices and MCS `ServiceExport`s through kube-rs
//! reflectors, and turns their stores into a [`NodeView`] with one pure function
//! ([`node_view`]): locality and pod CIDRs of this node, and the exported services with their
//! endpoints on this node. [`KubeSource`] runs the watchers, debounces changes and publishes the
//! view; the daemon's `ServiceSource` returns [`KubeSource::exports`] (`view().exports`).
//! [`bootstrap`] serves the DaemonSet's init container (node config and certificate inputs).
//!
//! It must not program anything (routes, tunnels, DNS) nor know about the daemon: it only reads
//! the API and, when asked, writes one status condition on `ServiceExport`s.

mod export;
mod source;
mod status;
mod view;

pub mod bootstrap;
#[cfg(feature = "fake-apiserver")]
pub mod fake;

pub use export::{
    EXPORT_CONDITION, EXPORT_LABEL, ExportObject, ExportVersion, SERVICE_EXPORT_GROUP,
    export_resource,
};
pub use source::{KubeSource, Options};
pub use status::FIELD_MANAGER;
pub use view::{NodeView, SERVICE_NAME_LABEL, node_view};

/// The label of a Node that gives its region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The label of a Node that gives its zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// What the crate reads from the API: (API group, resource, verbs). The ClusterRole in
/// `deploy/kubernetes/rbac.yaml` grants exactly this plus [`WRITTEN`] (a test checks it).
pub const WATCHED: &[(&str, &str, &[&str])] = &[
    ("", "nodes", &["get", "list", "watch"]),
    ("", "services", &["get", "list", "watch"]),
    (
        "discovery.k8s.io",
        "endpointslices",
        &["get", "list", "watch"],
    ),
    (
        SERVICE_EXPORT_GROUP,
        "serviceexports",
        &["get", "list", "watch"],
    ),
];

/// What the crate writes, only with [`Options::write_status`]: (API group, resource, verbs).
pub const WRITTEN: &[(&str, &str, &[&str])] = &[(
    SERVICE_EXPORT_GROUP,
    "serviceexports/status",
    &["get", "patch", "update"],
)];

/// Failures of the Kubernetes source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No client could be built (no in-cluster config and no usable `KUBECONFIG`).
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The node name is empty (set `NODE_NAME` from the downward API `spec.nodeName`).
    #[error("the node name is empty (set NODE_NAME from spec.nodeName)")]
    NoNodeName,
    /// A request to the API server failed.
    #[error("{what}: {source}")]
    Api {
        /// What was asked.
        what: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// The Node object does not exist.
    #[error("node {0:?} does not exist in the cluster")]
    NodeNotFound(String),
    /// A node Secret lacks a key.
    #[error("{0}")]
    BadSecret(String),
    /// A config template is malformed or names an unknown variable.
    #[error("config template: {0}")]
    Template(String),
}

/// Builds a client from the in-cluster service account, or else from `KUBECONFIG` /
/// `~/.kube/config` (`kube::Client::try_default`).
pub async fn client() -> Result<kube::Client, Error> {
    kube::Client::try_default().await.map_err(Error::Client)
}
