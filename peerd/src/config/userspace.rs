//! What only userspace mode (`node.mode = "userspace"`) needs from the config: its service
//! CIDR default, its checks, and where tunnel connections for this node's endpoints go.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Config, Mode, USERSPACE_SERVICE_CIDR, default_service_cidr};

type Invalid = (&'static str, Option<usize>, &'static str, String);

impl Config {
    /// Where virtual IPs come from: `[dns] service_cidr`, else the mode's default.
    pub fn service_cidr(&self) -> ipnet::Ipv4Net {
        match self.dns.as_ref().and_then(|d| d.service_cidr) {
            Some(cidr) => cidr,
            None if self.node.mode == Mode::Userspace => {
                USERSPACE_SERVICE_CIDR.parse().expect("valid literal")
            }
            None => default_service_cidr(),
        }
    }

    /// Userspace mode: every endpoint of this node (overlay `ip:port`) and the real local
    /// socket that tunnel connections for it are copied to. Empty in kernel mode.
    pub fn forwards(&self) -> HashMap<SocketAddr, SocketAddr> {
        let mut out = HashMap::new();
        if self.node.mode != Mode::Userspace {
            return out;
        }
        for service in &self.services {
            for e in &service.endpoints {
                for (_, port) in e.targets(&service.ports) {
                    let target = e.local.unwrap_or_else(|| loopback(e.address, port));
                    out.insert(SocketAddr::new(e.address, port), target);
                }
            }
        }
        out
    }

    /// Userspace mode's checks: virtual IPs on loopback (nothing else is local without
    /// configuring an address), endpoints on this node's overlay address (the only addresses
    /// the userspace stack answers for).
    pub(super) fn validate_userspace(&self) -> Result<(), Invalid> {
        let loopback: ipnet::Ipv4Net = "127.0.0.0/8".parse().expect("valid literal");
        let cidr = self.service_cidr();
        if !loopback.contains(&cidr) {
            return Err((
                "dns",
                None,
                "service_cidr",
                format!("{cidr}: userspace mode needs virtual IPs inside 127.0.0.0/8"),
            ));
        }
        let own = [
            Some(IpAddr::V4(self.node.address)),
            self.node.address6.map(IpAddr::V6),
        ];
        for (i, service) in self.services.iter().enumerate() {
            for e in &service.endpoints {
                let bad = |message: String| Err(("service", Some(i), "endpoints", message));
                if !own.contains(&Some(e.address)) {
                    return bad(format!(
                        "{} is not this node's overlay address: in userspace mode endpoints use node.address (tunnel connections are copied to each endpoint's local socket)",
                        e.address
                    ));
                }
                let targets = e.ports.len() + usize::from(e.port.is_some());
                if e.local.is_some() && targets > 1 {
                    return bad(
                        "local needs an endpoint with a single target port (port = N)".into(),
                    );
                }
            }
        }
        Ok(())
    }
}

fn loopback(address: IpAddr, port: u16) -> SocketAddr {
    match address {
        IpAddr::V4(_) => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
        IpAddr::V6(_) => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
    }
}
