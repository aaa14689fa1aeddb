//! One "cluster" of the suite: a fake Kubernetes API server that serves inside its node's
//! namespace, holding that node's Node object and one exported service backed by the node's pod.

use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use netns_tests::{KubeSpec, MeshNode, in_netns};
use peerd_kube::fake::FakeApiServer;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// The API version of the ServiceExports the suite writes (peerd's default).
const EXPORT_API: &str = "multicluster.x-k8s.io/v1alpha1";

/// A cluster's API server: the fake, bound to `127.0.0.1` of the node's namespace.
pub struct FakeCluster {
    server: FakeApiServer,
    kubeconfig: PathBuf,
    node: String,
}

impl FakeCluster {
    /// Starts a fake API server on `rt`, listening on `127.0.0.1` inside `node`'s namespace
    /// (the socket is bound by a thread that entered it), writes a kubeconfig for it to
    /// `kubeconfig`, and stores `node`'s Node object.
    pub fn start(rt: &Runtime, node: &MeshNode, kubeconfig: PathBuf) -> Result<FakeCluster> {
        let listener = in_netns(node.ns(), || {
            TcpListener::bind("127.0.0.1:0").context("cannot bind the fake API server")
        })
        .join()
        .map_err(|_| anyhow!("the binding thread panicked"))??;
        let server = rt
            .block_on(FakeApiServer::start_on(listener))
            .context("cannot start the fake API server")?;
        server
            .write_kubeconfig(&kubeconfig)
            .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
        let cluster = FakeCluster {
            server,
            kubeconfig,
            node: node.name.clone(),
        };
        cluster.apply(node_object(node))?;
        Ok(cluster)
    }

    /// The `[kubernetes]` table (and environment) that makes the node's peerd watch this server.
    pub fn kube_spec(&self) -> KubeSpec {
        KubeSpec {
            node_name: self.node.clone(),
            kubeconfig: self.kubeconfig.clone(),
            service_export_version: None,
        }
    }

    /// Stores the Service `name.namespace` (port `http` 80, appProtocol http), its
    /// EndpointSlice with one ready endpoint (`node`'s pod, port `target`) and its
    /// ServiceExport, as a real cluster would hold them.
    pub fn export(&self, node: &MeshNode, name: &str, namespace: &str, target: u16) -> Result<()> {
        for object in service_objects(node, name, namespace, target) {
            self.apply(object)?;
        }
        Ok(())
    }

    /// Deletes the ServiceExport `name.namespace` (the Service and its endpoints stay).
    pub fn unexport(&self, name: &str, namespace: &str) -> Result<()> {
        self.server
            .delete(EXPORT_API, "ServiceExport", Some(namespace), name)
            .map(|_| ())
            .with_context(|| format!("no ServiceExport {namespace}/{name}"))
    }

    /// How many requests the server has answered (to tell whether peerd ever called).
    pub fn requests(&self) -> usize {
        self.server.requests().len()
    }

    fn apply(&self, object: Value) -> Result<()> {
        self.server.apply(object).map(|_| ()).map_err(Into::into)
    }
}

/// The Node object of `node`: its pod CIDR (as its certificate has it), its locality labels
/// (as its config and certificate have them) and its underlay address.
fn node_object(node: &MeshNode) -> Value {
    let cfg = node.config();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "topology.kubernetes.io/region": cfg.region,
                "topology.kubernetes.io/zone": cfg.zone,
            },
        },
        "spec": {
            "podCIDR": node.pod_cidr,
            "podCIDRs": [node.pod_cidr],
        },
        "status": {
            "addresses": [
                {"address": node.underlay.to_string(), "type": "InternalIP"},
                {"address": node.name, "type": "Hostname"},
            ],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    })
}

/// Service, EndpointSlice and ServiceExport of `name.namespace`, served by `node`'s pod.
fn service_objects(node: &MeshNode, name: &str, namespace: &str, target: u16) -> [Value; 3] {
    let zone = &node.config().zone;
    [
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
            "spec": {
                "clusterIP": "10.96.0.80",
                "clusterIPs": ["10.96.0.80"],
                "ipFamilies": ["IPv4"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                           "targetPort": target, "appProtocol": "http"}],
                "selector": {"app": name},
                "type": "ClusterIP",
            },
            "status": {"loadBalancer": {}},
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "addressType": "IPv4",
            "metadata": {
                "name": format!("{name}-x7k2p"),
                "generateName": format!("{name}-"),
                "namespace": namespace,
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
            },
            "endpoints": [{
                "addresses": [node.pod_ip.to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": node.name,
                "zone": zone,
            }],
            "ports": [{"name": "http", "port": target, "protocol": "TCP", "appProtocol": "http"}],
        }),
        json!({
            "apiVersion": EXPORT_API,
            "kind": "ServiceExport",
            "metadata": {"name": name, "namespace": namespace, "generation": 1},
        }),
    ]
}
