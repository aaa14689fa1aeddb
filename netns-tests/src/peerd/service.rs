//! The `[dns]` and `[[service]]` tables of a peerd config (DESIGN.md, "Keys and files"): what a
//! node serves names from and what it exports to the mesh.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

/// The `[dns]` table: where the `.global` server listens and where other names go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsSpec {
    /// UDP and TCP listen address.
    pub listen: SocketAddr,
    /// `service_cidr`; `None` leaves peerd's default (`10.253.0.0/16`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_cidr: Option<String>,
    /// Upstream resolvers; empty leaves the field out (peerd then reads resolv.conf).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<SocketAddr>,
    /// TTL of `.global` answers; `None` leaves peerd's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

impl DnsSpec {
    /// A server on `listen` with every other field at peerd's default.
    pub fn new(listen: SocketAddr) -> Self {
        DnsSpec {
            listen,
            service_cidr: None,
            upstream: Vec::new(),
            ttl: None,
        }
    }
}

/// One `[[service]]`: a service with endpoints on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSpec {
    /// Service name (a DNS label).
    pub name: String,
    /// Namespace (a DNS label).
    pub namespace: String,
    /// Named ports on the virtual IP.
    pub ports: Vec<PortSpec>,
    /// Endpoints on this node.
    pub endpoints: Vec<EndpointSpec>,
}

/// A service port: `{ name, port, protocol }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortSpec {
    /// Port name (SRV owners use it).
    pub name: String,
    /// Port on the virtual IP.
    pub port: u16,
    /// `http`, `http2`, `grpc` or `tcp`.
    pub protocol: String,
}

/// An endpoint: `{ address, port }`, optionally `ready = false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointSpec {
    /// Where it listens (inside the node's pod CIDRs).
    pub address: IpAddr,
    /// Target port for every service port.
    pub port: u16,
    /// `Some(false)` marks it not ready; `None` leaves peerd's default (ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
}

impl ServiceSpec {
    /// `name.namespace` with one HTTP port `port` (named `http`) served by `endpoint`.
    pub fn http(name: &str, namespace: &str, port: u16, endpoint: SocketAddr) -> Self {
        ServiceSpec {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            ports: vec![PortSpec {
                name: "http".to_owned(),
                port,
                protocol: "http".to_owned(),
            }],
            endpoints: vec![EndpointSpec {
                address: endpoint.ip(),
                port: endpoint.port(),
                ready: None,
            }],
        }
    }

    /// `<name>.<namespace>.global`, the name the mesh's DNS servers give it.
    pub fn global_name(&self) -> String {
        format!("{}.{}.global", self.name, self.namespace)
    }
}
