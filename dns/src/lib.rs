//! peerd's DNS server: authoritative for `global.`, a caching forwarder for everything else.
//!
//! - `<svc>.<ns>.global` and `<cluster>.<svc>.<ns>.global` answer A/AAAA with the virtual IP
//!   the caller put in the [`Zone`], and `_<port>._tcp.<name>` answers SRV with its ports.
//! - Any other name under `global.` is NXDOMAIN with the zone's SOA, and is **never**
//!   forwarded: `.global` is a real top-level domain, and leaking mesh names to it is the
//!   Istio bug this design avoids.
//! - Other names go to the upstream resolvers (configured, or `/etc/resolv.conf`) through
//!   hickory-resolver's cache.
//!
//! Queries are answered by a hickory-server `Catalog` holding two `ZoneHandler`s (`global.`
//! and the root forwarder). The usual `.global` question (one A, AAAA or SRV question, with or
//! without EDNS) is first tried against answers precomputed at each update (`fast.rs`; tests
//! check that both paths give the same responses). The sockets around it are ours,
//! not hickory's `Server` (see `server.rs` for why).
//!
//! This crate knows nothing of the mesh: it does not allocate VIPs, watch services or read
//! peerd's config. The daemon computes the names and VIPs and calls [`DnsServer::update`].

mod authority;
mod fast;
mod forward;
mod handler;
mod server;
mod stats;
mod zone;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use forward::upstreams_from_resolv_conf;
pub use handler::QueryHandler;
pub use server::DnsServer;
pub use stats::DnsStats;
pub use zone::{GlobalName, Zone};

/// Default record TTL, in seconds: mesh VIPs and names change as services come and go.
pub const DEFAULT_TTL: u32 = 5;

/// How the server listens and where it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// UDP and TCP listen address (port 0: any free port, the same for both).
    pub listen: SocketAddr,
    /// Upstream resolvers for names outside `global.`; empty means the `nameserver` lines of
    /// `/etc/resolv.conf`, read at start. The server's own address is always left out.
    pub upstream: Vec<SocketAddr>,
    /// TTL of every `.global` record, and the negative-caching TTL in the SOA.
    pub ttl: u32,
}

impl DnsConfig {
    /// Listens on `listen`, forwards per `/etc/resolv.conf`, with [`DEFAULT_TTL`].
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            upstream: Vec::new(),
            ttl: DEFAULT_TTL,
        }
    }
}

/// Which transport a message came over: decides the response size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Limited to 512 bytes, or the client's EDNS size (at most 4096); larger answers are
    /// truncated (TC bit).
    Udp,
    /// Up to 65535 bytes.
    Tcp,
}

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Another process already listens there.
    #[error("dns {transport} port {addr} is busy: another DNS server is already listening")]
    PortBusy {
        /// The address asked for.
        addr: SocketAddr,
        /// `udp` or `tcp`.
        transport: &'static str,
    },
    /// Ports below 1024 need root or `CAP_NET_BIND_SERVICE`.
    #[error("dns port {addr} is privileged: run as root or grant CAP_NET_BIND_SERVICE")]
    Privileged {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Any other bind failure (an address this host does not have, ...).
    #[error("cannot bind dns {transport} socket on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// `udp` or `tcp`.
        transport: &'static str,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The resolv.conf to take upstreams from is missing or lists no nameserver.
    #[error("cannot take upstream resolvers from {path}: {reason}")]
    ResolvConf {
        /// The file read.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// hickory-resolver rejected the upstream configuration.
    #[error("cannot build the upstream resolver: {reason}")]
    Resolver {
        /// hickory-resolver's message.
        reason: String,
    },
}
