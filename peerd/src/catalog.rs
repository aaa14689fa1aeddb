//! The mesh-wide service catalog: what every node exports, merged by service, with each
//! endpoint's locality and liveness, plus the global names and their virtual IPs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use peerd_types::{Endpoint, Locality, ServiceExport, ServiceKey, ServicePort};
use serde::{Deserialize, Serialize};

/// Where a node's service exports come from: the config file today, Kubernetes later.
pub trait ServiceSource: Send + Sync {
    /// The services with endpoints on this node, as of now.
    fn exports(&self) -> Vec<ServiceExport>;
}

/// The Kubernetes API: Services exported by a ServiceExport or the `peerd.io/export` label, with
/// their endpoints on this node.
impl ServiceSource for peerd_kube::KubeSource {
    fn exports(&self) -> Vec<ServiceExport> {
        peerd_kube::KubeSource::exports(self)
    }
}

/// `[[service]]` tables of the node's config file.
pub struct StaticSource(pub Vec<ServiceExport>);

impl ServiceSource for StaticSource {
    fn exports(&self) -> Vec<ServiceExport> {
        self.0.clone()
    }
}

/// One endpoint with where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEndpoint {
    /// Address and ports.
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// Cluster, region, zone and node.
    pub locality: Locality,
    /// Whether its node is live (not declared dead by the mesh).
    pub node_alive: bool,
}

/// A service across the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogService {
    /// `name.namespace`.
    pub key: ServiceKey,
    /// Its ports (union over exporting nodes, first definition wins).
    pub ports: Vec<ServicePort>,
    /// Every endpoint in every cluster.
    pub endpoints: Vec<CatalogEndpoint>,
    /// The virtual IP of `name.namespace.global`.
    pub vip: Option<Ipv4Addr>,
    /// The virtual IPs of `cluster.name.namespace.global`, by cluster.
    pub cluster_vips: BTreeMap<String, Ipv4Addr>,
}

/// What one node contributes.
pub struct NodeExports<'a> {
    /// Where the node runs.
    pub locality: Locality,
    /// Whether the mesh considers it live.
    pub alive: bool,
    /// Its exports.
    pub exports: &'a [ServiceExport],
}

/// The catalog: every service, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Services by key.
    pub services: BTreeMap<ServiceKey, CatalogService>,
}

impl Catalog {
    /// Merges the exports of every node and assigns virtual IPs from `service_cidr`.
    pub fn build<'a>(
        nodes: impl IntoIterator<Item = NodeExports<'a>>,
        service_cidr: Ipv4Net,
    ) -> Self {
        let mut services: BTreeMap<ServiceKey, CatalogService> = BTreeMap::new();
        for node in nodes {
            for export in node.exports {
                let entry = services
                    .entry(export.key.clone())
                    .or_insert_with(|| CatalogService {
                        key: export.key.clone(),
                        ports: Vec::new(),
                        endpoints: Vec::new(),
                        vip: None,
                        cluster_vips: BTreeMap::new(),
                    });
                for port in &export.ports {
                    if !entry.ports.iter().any(|p| p.name == port.name) {
                        entry.ports.push(port.clone());
                    }
                }
                for endpoint in &export.endpoints {
                    entry.endpoints.push(CatalogEndpoint {
                        endpoint: endpoint.clone(),
                        locality: node.locality.clone(),
                        node_alive: node.alive,
                    });
                }
            }
        }
        let names: Vec<String> = services.values().flat_map(global_names).collect();
        let vips = crate::vip::assign(names.iter().map(String::as_str), service_cidr);
        for service in services.values_mut() {
            service
                .endpoints
                .sort_by(|a, b| (&a.locality, &a.endpoint).cmp(&(&b.locality, &b.endpoint)));
            service.vip = vips.get(&global_name(&service.key, None)).copied();
            for cluster in clusters(service) {
                if let Some(ip) = vips.get(&global_name(&service.key, Some(&cluster))) {
                    service.cluster_vips.insert(cluster, *ip);
                }
            }
        }
        Self { services }
    }
}

impl Catalog {
    /// The `.global` names the DNS server answers, with their virtual IPs and ports.
    pub fn zone(&self) -> dns::Zone {
        let mut names = Vec::new();
        for s in self.services.values() {
            names.push(dns::GlobalName {
                name: global_name(&s.key, None),
                v4: s.vip,
                v6: None,
                ports: s.ports.clone(),
            });
            for (cluster, vip) in &s.cluster_vips {
                names.push(dns::GlobalName {
                    name: global_name(&s.key, Some(cluster)),
                    v4: Some(*vip),
                    v6: None,
                    ports: s.ports.clone(),
                });
            }
        }
        dns::Zone { names }
    }
}

/// `name.namespace.global` or `cluster.name.namespace.global`.
pub fn global_name(key: &ServiceKey, cluster: Option<&str>) -> String {
    match cluster {
        Some(c) => format!("{c}.{}.{}.global", key.name, key.namespace),
        None => format!("{}.{}.global", key.name, key.namespace),
    }
}

/// Every global name of a service: the plain one and one per cluster with endpoints.
fn global_names(service: &CatalogService) -> Vec<String> {
    std::iter::once(global_name(&service.key, None))
        .chain(
            clusters(service)
                .iter()
                .map(|c| global_name(&service.key, Some(c))),
        )
        .collect()
}

fn clusters(service: &CatalogService) -> Vec<String> {
    let mut c: Vec<String> = service
        .endpoints
        .iter()
        .map(|e| e.locality.cluster.clone())
        .collect();
    c.sort();
    c.dedup();
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerd_types::Protocol;

    fn export(name: &str, addr: &str) -> ServiceExport {
        ServiceExport {
            key: ServiceKey::new(name, "shop"),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                protocol: Protocol::Http,
            }],
            endpoints: vec![Endpoint {
                address: addr.parse().unwrap(),
                ports: vec![("http".into(), 8080)],
                ready: true,
            }],
        }
    }

    fn locality(cluster: &str, node: &str) -> Locality {
        Locality {
            cluster: cluster.into(),
            region: "r".into(),
            zone: "z".into(),
            node: node.into(),
        }
    }

    #[test]
    fn exports_of_all_nodes_merge_with_names_per_cluster() {
        let east = [export("web", "10.1.0.10")];
        let west = [export("web", "10.2.0.10"), export("api", "10.2.0.11")];
        let catalog = Catalog::build(
            [
                NodeExports {
                    locality: locality("east", "e0"),
                    alive: true,
                    exports: &east,
                },
                NodeExports {
                    locality: locality("west", "w0"),
                    alive: false,
                    exports: &west,
                },
            ],
            "10.253.0.0/16".parse().unwrap(),
        );
        assert_eq!(catalog.services.len(), 2);
        let web = &catalog.services[&ServiceKey::new("web", "shop")];
        assert_eq!(web.endpoints.len(), 2);
        assert!(
            web.endpoints
                .iter()
                .any(|e| e.locality.cluster == "west" && !e.node_alive)
        );
        assert_eq!(
            web.cluster_vips.keys().collect::<Vec<_>>(),
            ["east", "west"]
        );
        let vip = web.vip.unwrap();
        assert_ne!(Some(&vip), web.cluster_vips.get("east"));
        let zone = catalog.zone();
        let names: Vec<&str> = zone.names.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "api.shop.global",
                "west.api.shop.global",
                "web.shop.global",
                "east.web.shop.global",
                "west.web.shop.global"
            ]
        );
        assert_eq!(zone.names[2].v4, Some(vip));
    }
}
