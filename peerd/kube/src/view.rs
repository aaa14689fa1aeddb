//! The pure part: from the reflector stores to this node's view. No IO, no clock.
//!
//! Endpoint rules (`docs/operations.md`, "Kubernetes"):
//! - only endpoints whose `nodeName` is this node are exported; each node exports its own;
//! - an endpoint routes when `ready` (nil means true); `terminating` nil means false, `serving`
//!   nil means true;
//! - a service is *draining* when no endpoint of it is ready on **any** node of the cluster (all
//!   its slices are watched); only then do its serving and terminating endpoints route, as
//!   kube-proxy does. Deciding per service and cluster-wide keeps terminating pods on this node
//!   idle while a ready pod of the same service runs on another node of the cluster;
//! - endpoints that do not route are still exported, with `ready = false`, so that the name
//!   stays known and `peerd explain` can say why; a service with no endpoint on this node is
//!   not exported by this node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service, ServicePort as KubeServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointSlice};
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use peerd_types::{Endpoint, Protocol, ServiceExport, ServiceKey, ServicePort};

use crate::export::{ExportObject, is_exported};
use crate::{REGION_LABEL, ZONE_LABEL};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// This node as the mesh sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// `topology.kubernetes.io/region`, empty when missing.
    pub region: String,
    /// `topology.kubernetes.io/zone`, empty when missing.
    pub zone: String,
    /// `spec.podCIDRs` (dual-stack), else `spec.podCIDR`.
    pub pod_cidrs: Vec<IpNet>,
    /// `status.addresses`: InternalIPs, then ExternalIPs.
    pub addresses: Vec<IpAddr>,
    /// Exported services with their endpoints on this node, sorted by key.
    pub exports: Vec<ServiceExport>,
}

/// The view of node `node_name`, or `None` while its Node object is unknown.
pub fn node_view(
    node_name: &str,
    nodes: &Store<Node>,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    exports: &Store<ExportObject>,
) -> Option<NodeView> {
    let node = nodes.find(|n| n.name_any() == node_name)?;
    let mut view = node_facts(&node);
    let exported: BTreeSet<(String, String)> = exports
        .state()
        .iter()
        .map(|e| (e.namespace().unwrap_or_default(), e.name_any()))
        .collect();
    let mut by_service: BTreeMap<(String, String), Vec<std::sync::Arc<EndpointSlice>>> =
        BTreeMap::new();
    for slice in slices.state() {
        let Some(service) = slice.labels().get(SERVICE_NAME_LABEL).cloned() else {
            continue;
        };
        let namespace = slice.namespace().unwrap_or_default();
        by_service
            .entry((namespace, service))
            .or_default()
            .push(slice);
    }
    for service in services.state() {
        let key = (service.namespace().unwrap_or_default(), service.name_any());
        if !is_exported(&service, exported.contains(&key)) {
            continue;
        }
        let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
        if let Some(export) = service_export(&service, slices, node_name) {
            view.exports.push(export);
        }
    }
    view.exports.sort_by(|a, b| a.key.cmp(&b.key));
    Some(view)
}

/// Name, locality, pod CIDRs and addresses of a Node (no exports).
pub(crate) fn node_facts(node: &Node) -> NodeView {
    let labels = node.labels();
    let spec = node.spec.as_ref();
    let cidrs: Vec<&String> = match spec.and_then(|s| s.pod_cidrs.as_ref()) {
        Some(list) if !list.is_empty() => list.iter().collect(),
        _ => spec.and_then(|s| s.pod_cidr.as_ref()).into_iter().collect(),
    };
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|list| {
            ["InternalIP", "ExternalIP"]
                .iter()
                .flat_map(|kind| list.iter().filter(move |a| a.type_ == *kind))
                .filter_map(|a| a.address.parse::<IpAddr>().ok())
                .collect()
        })
        .unwrap_or_default();
    NodeView {
        name: node.name_any(),
        region: labels.get(REGION_LABEL).cloned().unwrap_or_default(),
        zone: labels.get(ZONE_LABEL).cloned().unwrap_or_default(),
        pod_cidrs: cidrs.iter().filter_map(|c| c.parse().ok()).collect(),
        addresses,
        exports: Vec::new(),
    }
}

/// The export of one Service from `node_name`, or `None` when it has no TCP port or no
/// endpoint on that node.
fn service_export(
    service: &Service,
    slices: &[std::sync::Arc<EndpointSlice>],
    node_name: &str,
) -> Option<ServiceExport> {
    let kube_ports: Vec<&KubeServicePort> = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(|p| p.iter().filter(|p| is_tcp(p.protocol.as_deref())).collect())
        .unwrap_or_default();
    if kube_ports.is_empty() {
        return None;
    }
    let ports: Vec<ServicePort> = kube_ports
        .iter()
        .filter_map(|p| {
            Some(ServicePort {
                name: port_name(p.name.as_deref(), p.port),
                port: u16::try_from(p.port).ok()?,
                protocol: protocol(p.app_protocol.as_deref()),
            })
        })
        .collect();
    let draining = !slices
        .iter()
        .flat_map(|s| usable_endpoints(s))
        .any(|e| Conditions::of(e).ready);
    let mut endpoints: BTreeMap<IpAddr, Endpoint> = BTreeMap::new();
    for slice in slices {
        for e in usable_endpoints(slice) {
            if e.node_name.as_deref() != Some(node_name) {
                continue;
            }
            let Some(address) = e.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            let c = Conditions::of(e);
            let routes = c.ready || (draining && c.serving && c.terminating);
            let entry = endpoints.entry(address).or_insert_with(|| Endpoint {
                address,
                ports: Vec::new(),
                ready: false,
            });
            entry.ready |= routes;
            for (name, target) in target_ports(slice, &kube_ports) {
                if entry.port(&name).is_none() {
                    entry.ports.push((name, target));
                }
            }
        }
    }
    if endpoints.is_empty() {
        return None;
    }
    Some(ServiceExport {
        key: ServiceKey::new(service.name_any(), service.namespace().unwrap_or_default()),
        ports,
        endpoints: endpoints.into_values().collect(),
    })
}

/// The endpoints of a slice that carry IP addresses (FQDN slices are skipped).
fn usable_endpoints(slice: &EndpointSlice) -> &[SliceEndpoint] {
    match slice.address_type.as_str() {
        "IPv4" | "IPv6" => slice_endpoints(slice),
        _ => &[],
    }
}

/// `EndpointSlice.endpoints` is a `Vec` up to k8s-openapi's v1_35 and an `Option<Vec>` from
/// v1_36: every read goes through here.
pub(crate) fn slice_endpoints(slice: &EndpointSlice) -> &[SliceEndpoint] {
    &slice.endpoints
}

/// Target ports of a slice, named after the Service's ports (matched by port name, as the
/// EndpointSlice controller names them).
fn target_ports(slice: &EndpointSlice, service_ports: &[&KubeServicePort]) -> Vec<(String, u16)> {
    let Some(slice_ports) = slice.ports.as_ref() else {
        return Vec::new();
    };
    service_ports
        .iter()
        .filter_map(|sp| {
            let wanted = sp.name.as_deref().unwrap_or("");
            let found = slice_ports.iter().find(|p| {
                p.name.as_deref().unwrap_or("") == wanted && is_tcp(p.protocol.as_deref())
            })?;
            let target = u16::try_from(found.port?).ok().filter(|p| *p != 0)?;
            Some((port_name(sp.name.as_deref(), sp.port), target))
        })
        .collect()
}

/// An endpoint's conditions with the API's defaults for nil.
struct Conditions {
    ready: bool,
    serving: bool,
    terminating: bool,
}

impl Conditions {
    fn of(e: &SliceEndpoint) -> Self {
        let c = e.conditions.as_ref();
        Self {
            ready: c.and_then(|c| c.ready).unwrap_or(true),
            serving: c.and_then(|c| c.serving).unwrap_or(true),
            terminating: c.and_then(|c| c.terminating).unwrap_or(false),
        }
    }
}

/// The mesh name of a port: the Service's port name, or `port-<number>` for the single unnamed
/// port a Service may have (SRV names need a label).
fn port_name(name: Option<&str>, port: i32) -> String {
    match name {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => format!("port-{port}"),
    }
}

/// The protocol is TCP unless the port says otherwise (the API defaults it to TCP).
fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p == "TCP")
}

/// How the proxy treats a port, from its `appProtocol`.
pub(crate) fn protocol(app_protocol: Option<&str>) -> Protocol {
    match app_protocol.map(str::to_ascii_lowercase).as_deref() {
        Some("http") => Protocol::Http,
        Some("h2c" | "kubernetes.io/h2c") => Protocol::Http2,
        Some("grpc") => Protocol::Grpc,
        _ => Protocol::Tcp,
    }
}

#[cfg(test)]
mod tests;
