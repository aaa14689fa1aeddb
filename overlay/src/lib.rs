//! The peerd overlay: userspace WireGuard tunnels on boringtun's `noise` module.
//!
//! [`Node`] is the sans-IO core (peer table, cryptokey routing, handshakes, timers, roaming,
//! the crypto-RP filter and drop counters). [`device`] is the thin IO shell that runs a node
//! between a Linux TUN device and a batched UDP socket; [`netstack`] runs the same node without
//! privileges, terminating the overlay in a userspace TCP/IP stack (smoltcp) in the process. This crate knows nothing of peerd, the
//! mesh or Kubernetes: it moves packets between peers it is told about.

pub mod allowed_ips;
#[cfg(target_os = "linux")]
pub mod device;
pub mod key;
#[cfg(target_os = "linux")]
pub mod netstack;
pub mod node;
pub mod packet;
pub mod peer;
pub mod stats;
#[cfg(target_os = "linux")]
pub mod tun;
pub mod uapi;
#[cfg(target_os = "linux")]
pub mod udp;

pub use allowed_ips::AllowedIps;
pub use key::{KeyError, PresharedKey, PrivateKey, PublicKey};
pub use node::{Inbound, Node, NodeError, Outbound, PeerId, Transmit};
pub use peer::{PeerConfig, PeerStatus};
pub use stats::{DropReason, Drops};

/// True when boringtun's clock is mocked for tests (feature `mock-time`). A binary built this
/// way must refuse to run: its timers would never fire.
pub const MOCK_TIME: bool = cfg!(feature = "mock-time");

/// Default MTU of the tunnel interface: 1500 minus the largest WireGuard overhead
/// (IPv6 40 + UDP 8 + WireGuard 32).
pub const DEFAULT_MTU: u16 = 1420;
