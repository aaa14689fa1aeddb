//! The configuration snapshot the caller pushes: services, their listeners, endpoints and policy.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use l7proxy_balance::{BalancerConfig, EndpointInfo};
use peerd_types::{Locality, ServicePort};

/// A full snapshot of what the proxy serves. [`crate::Proxy::update`] diffs it against the
/// running state: listeners that stay keep their connections and balancer state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyConfig {
    /// Every service the proxy listens for.
    pub services: Vec<ServiceRoute>,
}

/// One global name (`web.shop.global`, `east.web.shop.global`) and where it listens.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRoute {
    /// The global name; labels metrics, the access log and [`crate::Proxy::explain`].
    pub name: String,
    /// The virtual IP the proxy listens on for this name.
    pub vip: IpAddr,
    /// One listener per port on `vip`; the protocol decides how the port is served.
    pub ports: Vec<ServicePort>,
    /// The endpoints behind the name, every cluster's.
    pub endpoints: Vec<Backend>,
    /// Per-service overrides.
    pub policy: Policy,
}

/// One endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Where the endpoint listens.
    pub address: IpAddr,
    /// Target port per service port name. A backend without an entry for a port name is not
    /// used for that port, except when this list is empty: then the service port number is.
    pub ports: Vec<(String, u16)>,
    /// Where it runs; compared with the proxy's own locality to rank it.
    pub locality: Locality,
    /// Whether it should take traffic.
    pub ready: bool,
}

impl Backend {
    /// The address this backend serves `port` on, if it serves it.
    pub fn target(&self, port: &ServicePort) -> Option<SocketAddr> {
        if self.ports.is_empty() {
            return Some(SocketAddr::new(self.address, port.port));
        }
        self.ports
            .iter()
            .find(|(name, _)| *name == port.name)
            .map(|(_, p)| SocketAddr::new(self.address, *p))
    }
}

/// Per-service behaviour. [`Policy::default`] gives the values documented on each field.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Only balance over endpoints of this cluster (`east.web.shop.global`). Default: none.
    pub pinned_cluster: Option<String>,
    /// Only balance over endpoints of the proxy's own cluster. Default: false.
    pub local_only: bool,
    /// Limit for establishing one upstream connection. Default: 1 s.
    pub connect_timeout: Duration,
    /// Limit for one attempt, from sending the request to the response headers. Default: 10 s.
    pub try_timeout: Duration,
    /// Limit for the whole request up to the response headers, all attempts included; response
    /// bodies (streams, upgrades) are not limited. Default: 30 s.
    pub request_timeout: Duration,
    /// Most attempts that send a request (connect failures do not count). Default: 3.
    pub max_attempts: u32,
    /// Retries may add at most this fraction to the requests of the last 10 s. Default: 0.2.
    pub retry_budget_ratio: f64,
    /// Retries allowed per second regardless of the ratio. Default: 10.
    pub retry_budget_min_per_sec: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            pinned_cluster: None,
            local_only: false,
            connect_timeout: Duration::from_secs(1),
            try_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_attempts: 3,
            retry_budget_ratio: 0.2,
            retry_budget_min_per_sec: 10,
        }
    }
}

impl Policy {
    /// The balancer settings this policy implies.
    pub(crate) fn balancer_config(&self) -> BalancerConfig {
        BalancerConfig {
            local_only: self.local_only,
            pinned_cluster: self.pinned_cluster.clone(),
            ..BalancerConfig::default()
        }
    }
}

/// The balancer's view of a service's endpoints for one port.
pub(crate) fn endpoint_infos(route: &ServiceRoute, port: &ServicePort) -> Vec<EndpointInfo> {
    route
        .endpoints
        .iter()
        .filter_map(|b| {
            b.target(port).map(|addr| EndpointInfo {
                addr,
                locality: b.locality.clone(),
                ready: b.ready,
            })
        })
        .collect()
}
