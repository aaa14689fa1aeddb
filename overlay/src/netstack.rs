//! The unprivileged userspace data plane: overlay packets terminate in a smoltcp TCP/IP stack
//! inside the process instead of a TUN device. No TUN, no routes, no capabilities.
//!
//! One thread (`pd-netstack`) owns the loop: it reads the UDP socket in batches, decrypts every
//! datagram through the shared [`Node`] (locked once per batch), hands the batch of inner
//! packets to smoltcp in one `Interface::poll`, and encrypts everything the stack emits into one
//! GSO send per run, as [`crate::device`] does for a TUN. It sleeps until the UDP socket is
//! readable, an application kicks it (an eventfd, written at most once per round), or the next
//! deadline of smoltcp (`poll_at`) or of the node's timers: it never spins.
//!
//! Applications use the stack through async handles ([`NetstackTcp`], [`NetstackListener`],
//! [`NetstackUdp`]) that copy straight into and out of smoltcp's socket buffers under a short
//! lock and park on smoltcp's per-socket wakers.
//!
//! Sizing: each TCP socket gets [`TCP_BUFFER`] bytes of receive and of send buffer, which caps
//! one flow at about `TCP_BUFFER / RTT` (4 MiB at 10 ms ≈ 3.3 Gbit/s); window scaling follows
//! from the buffer size. The buffers are zero-filled allocations the kernel backs lazily, so an
//! idle connection costs little resident memory. Congestion control is Cubic.
//!
//! This module must not touch the host's network configuration, block an async task on IO, or
//! allocate per packet. It knows nothing of peerd: forwarding policy belongs to the caller.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use crate::device::{OtherSink, lock as lock_node, send_pending};
use crate::node::Node;
use crate::udp::UdpIo;

mod driver;
mod pipe;
mod relay;
mod stack;
mod tcp;
mod udp;

pub use relay::{UDP_FLOWS, UDP_IDLE, forward_udp};
pub use tcp::{CONNECT_TIMEOUT, NetstackListener, NetstackTcp, forward};
pub use udp::NetstackUdp;

use stack::{Shared, lock};

/// Receive and send buffer of every TCP socket, in bytes (see the module docs for the
/// bandwidth × delay reasoning).
pub const TCP_BUFFER: usize = 4 << 20;
/// Listening sockets kept ready per listener beyond those a burst of SYNs needs.
pub const LISTEN_SPARE: usize = 4;
/// Most connections a listener holds that were not yet accepted (its backlog).
pub const LISTEN_BACKLOG: usize = 128;

/// How a [`Netstack`] is built.
#[derive(Debug, Clone)]
pub struct NetstackConfig {
    /// This node's overlay addresses with their prefixes; at most four (one IPv4 needed for
    /// IPv4 traffic, IPv6 optional).
    pub addresses: Vec<IpNet>,
    /// The inner MTU (as a TUN device's MTU); TCP's MSS follows from it.
    pub mtu: u16,
    /// Receive and send buffer of each TCP socket.
    pub tcp_buffer: usize,
}

impl NetstackConfig {
    /// Defaults: [`TCP_BUFFER`] per direction.
    pub fn new(addresses: Vec<IpNet>, mtu: u16) -> Self {
        Self {
            addresses,
            mtu,
            tcp_buffer: TCP_BUFFER,
        }
    }
}

/// A running userspace stack: a cheap, cloneable handle. The stack's thread stops once every
/// handle, listener and socket is gone, or at [`Netstack::stop`].
#[derive(Clone)]
pub struct Netstack {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Netstack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netstack")
            .field("listen_port", &self.listen_port())
            .finish_non_exhaustive()
    }
}

impl Netstack {
    /// Starts a stack bound to `addresses` that runs `node` over `udp`. Datagrams that are
    /// not WireGuard messages go to `other` (a control plane sharing the port); without it they
    /// are counted as malformed.
    pub fn start(
        node: Arc<Mutex<Node>>,
        udp: UdpIo,
        addresses: Vec<IpNet>,
        mtu: u16,
        other: Option<OtherSink>,
    ) -> io::Result<Self> {
        Self::start_with(node, udp, NetstackConfig::new(addresses, mtu), other)
    }

    /// Like [`Netstack::start`] with every setting explicit.
    pub fn start_with(
        node: Arc<Mutex<Node>>,
        udp: UdpIo,
        config: NetstackConfig,
        other: Option<OtherSink>,
    ) -> io::Result<Self> {
        let shared = driver::spawn(node, udp, config, other)?;
        Ok(Self { shared })
    }

    /// The node, shared with whoever configures peers and reads status.
    pub fn node(&self) -> &Arc<Mutex<Node>> {
        &self.shared.node
    }

    /// The UDP port peers send to.
    pub fn listen_port(&self) -> u16 {
        self.shared.udp.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The overlay addresses the stack answers for.
    pub fn addresses(&self) -> Vec<IpAddr> {
        lock(&self.shared.stack).addresses()
    }

    /// Sends one datagram that is not a WireGuard message (a control-plane message) from the
    /// tunnel's port.
    pub fn send_other(&self, to: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        self.shared.udp.send(to, datagram, None)
    }

    /// Sends whatever the node has queued (after a configuration change, say) now rather than
    /// at the next tick.
    pub fn flush(&self) {
        let mut buf = vec![0u8; driver::MAX_BUF];
        send_pending(
            &mut lock_node(&self.shared.node),
            &self.shared.udp,
            &mut buf,
        );
    }

    /// Opens a TCP connection through the tunnel to `remote` (a remote node's overlay or
    /// endpoint address). Fails with `HostUnreachable` when no peer routes `remote`,
    /// `ConnectionRefused` when the remote answers with a reset, and `TimedOut` after
    /// [`CONNECT_TIMEOUT`].
    pub async fn connect(&self, remote: SocketAddr) -> io::Result<NetstackTcp> {
        tcp::connect(&self.shared, remote).await
    }

    /// Accepts TCP connections arriving through the tunnel for `local`: one of this stack's
    /// addresses (or the unspecified address for all of them) and a port (0 picks one).
    pub async fn listen(&self, local: SocketAddr) -> io::Result<NetstackListener> {
        tcp::listen(&self.shared, local)
    }

    /// Binds a UDP socket inside the tunnel to `local` (an address of this stack or the
    /// unspecified address; port 0 picks one).
    pub async fn bind_udp(&self, local: SocketAddr) -> io::Result<NetstackUdp> {
        udp::bind(&self.shared, local)
    }

    /// Stops the stack's thread now. Open sockets fail or stall from then on.
    pub fn stop(&self) {
        self.shared.stop();
    }
}
