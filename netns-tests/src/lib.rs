//! netns-tests: the end-to-end harness for peerd on real Linux network namespaces.
//!
//! A test builds a [`Lab`] (unique names and a temporary directory), creates namespaces
//! ([`Netns`]) joined by veth pairs ([`connect`]), runs the real `peerd` binary ([`Peerd`]) and
//! real wireguard-go nodes ([`WgGo`]) inside them, and moves traffic from threads that entered a
//! namespace ([`in_netns`], [`TcpSink`], [`tcp_send`], [`udp_flood`], [`ping`]). A [`MeshLab`]
//! builds a whole multi-cluster mesh (router, cluster bridges, nodes with pods behind them, a
//! mesh CA) for the control-plane tests and the convergence benchmark. DNS is asked with the real
//! `dig` ([`dig()`]) and forwarded to a real [`Unbound`] whose query log the tests read.
//!
//! What this crate must not do: touch the host namespace's network. Every address, route and
//! client lives in a namespace the test created, every name carries the test process's pid, and
//! everything is torn down in `Drop` (so a panicking test still cleans up). Helpers return
//! [`anyhow::Result`]; only the tests themselves unwrap. Readiness is always a polled condition
//! with a deadline ([`wait_until`]), never a bare sleep.
//!
//! Tests start with [`require!`]: a missing capability fails the test under `CI=true` and skips it
//! loudly otherwise.

mod dig;
mod keys;
mod lab;
mod link;
mod mesh;
mod netns;
mod peerd;
mod ping;
mod preflight;
mod proc;
mod stale;
mod traffic;
mod udp;
mod unbound;
mod wait;
mod wggo;

pub use dig::{Answer, Record, Transport, dig};
pub use keys::{Keypair, peerd_pubkey, wg_pubkey};
pub use lab::{A_UNDERLAY, A_UNDERLAY6, B_UNDERLAY, B_UNDERLAY6, Lab, Pair};
pub use link::{End, addr_add, addr_del, connect};
pub use mesh::{
    MESH_PORT, MeshLab, MeshNode, NodeOptions, RouteEvent, RouteMonitor, UdpProbe, kernel_routes,
    mesh_count, peer_field, peer_state, reach_times,
};
pub use netns::Netns;
pub use peerd::{
    DnsSpec, EndpointSpec, KubeSpec, MeshSpec, Peerd, PeerdConfig, PortSpec, ServiceSpec, peerd_bin,
};
pub use ping::{ping, ping_from, wait_ping};
pub use preflight::{Need, check, under_ci};
pub use proc::{run, run_with_stdin};
pub use traffic::{Checksum, DataStream, TcpSink, Transfer, in_netns, tcp_send, tcp_send_paced};
pub use udp::{UdpSink, udp_flood, udp_send};
pub use unbound::{LoggedQuery, Unbound};
pub use wait::{GiveUp, wait_until};
pub use wggo::{WgGo, WgGoConfig};

/// A peer as both peerd's `[[peer]]` table and `wg set ... peer` understand it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The peer's name (peerd only; wireguard-go has no names).
    pub name: String,
    /// The peer's base64 public key.
    pub public_key: String,
    /// The peer's underlay `ip:port`, when known in advance.
    pub endpoint: Option<std::net::SocketAddr>,
    /// CIDRs routed to, and accepted from, the peer.
    pub allowed_ips: Vec<String>,
    /// Keepalive interval in seconds; `None` disables it.
    pub persistent_keepalive: Option<u16>,
}

impl PeerSpec {
    /// A peer without endpoint or keepalive.
    pub fn new(name: &str, public_key: &str, allowed_ips: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            public_key: public_key.to_owned(),
            endpoint: None,
            allowed_ips: allowed_ips.iter().map(|s| (*s).to_owned()).collect(),
            persistent_keepalive: None,
        }
    }

    /// The same peer with a known endpoint.
    pub fn endpoint(mut self, endpoint: std::net::SocketAddr) -> Self {
        self.endpoint = Some(endpoint);
        self
    }
}

/// Skips (or, under `CI=true`, fails) the calling test unless every [`Need`] is met.
///
/// Expands to an early `return` from the test function, after printing a loud
/// `SKIPPED: reason` to stderr (uncaptured, so it shows without `--nocapture`).
#[macro_export]
macro_rules! require {
    ($($need:expr),+ $(,)?) => {
        if let Err(why) = $crate::check(&[$($need),+]) {
            let test = std::thread::current().name().unwrap_or("?").to_owned();
            if $crate::under_ci() {
                panic!("CI=true and test {test} cannot run: {why}");
            }
            // Straight to the stderr handle: libtest captures `eprintln!` of passing tests.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("\n*** SKIPPED: {test}: {why} ***\n\n").as_bytes(),
            );
            return;
        }
    };
}
