//! Plain data shared by every peerd crate: localities, services, ports and endpoints. Defined
//! once here so the control plane, the DNS server and the proxy agree on them. No logic beyond
//! parsing and naming, and no dependencies beyond serde: libraries may import this crate without
//! importing anything of the daemon.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a node or endpoint runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Locality {
    /// Cluster name.
    pub cluster: String,
    /// Region (`topology.kubernetes.io/region`).
    pub region: String,
    /// Zone (`topology.kubernetes.io/zone`).
    pub zone: String,
    /// Node name.
    pub node: String,
}

/// A service's identity: `name.namespace`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceKey {
    /// Service name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
}

impl ServiceKey {
    /// A key.
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

/// How the proxy speaks on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 (and h2c upgrades).
    Http,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// gRPC (HTTP/2 with trailers).
    Grpc,
    /// Opaque TCP.
    Tcp,
}

impl Protocol {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Http2 => "http2",
            Self::Grpc => "grpc",
            Self::Tcp => "tcp",
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http" => Ok(Self::Http),
            "http2" => Ok(Self::Http2),
            "grpc" => Ok(Self::Grpc),
            "tcp" => Ok(Self::Tcp),
            other => Err(format!(
                "unknown protocol {other:?} (http, http2, grpc or tcp)"
            )),
        }
    }
}

/// A named service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServicePort {
    /// Port name (`http`, `grpc`, ...), used in SRV names.
    pub name: String,
    /// The port clients connect to on the service's virtual IP.
    pub port: u16,
    /// How the proxy treats it.
    pub protocol: Protocol,
}

/// One backend of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// Where it listens.
    pub address: IpAddr,
    /// Target port per service port name.
    pub ports: Vec<(String, u16)>,
    /// Whether it takes traffic.
    pub ready: bool,
}

impl Endpoint {
    /// The target port for the service port named `name`.
    pub fn port(&self, name: &str) -> Option<u16> {
        self.ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p)
    }
}

/// What one node exports of a service: its ports and the endpoints running on that node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceExport {
    /// Which service.
    pub key: ServiceKey,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// Endpoints on the exporting node.
    pub endpoints: Vec<Endpoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_round_trip_and_unknown_ones_are_named() {
        for p in [
            Protocol::Http,
            Protocol::Http2,
            Protocol::Grpc,
            Protocol::Tcp,
        ] {
            assert_eq!(p.as_str().parse::<Protocol>(), Ok(p));
        }
        assert!("udp".parse::<Protocol>().unwrap_err().contains("udp"));
    }

    #[test]
    fn endpoints_map_port_names() {
        let e = Endpoint {
            address: "10.1.1.10".parse().unwrap(),
            ports: vec![("http".into(), 8080), ("grpc".into(), 9090)],
            ready: true,
        };
        assert_eq!(e.port("grpc"), Some(9090));
        assert_eq!(e.port("metrics"), None);
        assert_eq!(ServiceKey::new("web", "shop").to_string(), "web.shop");
    }
}
