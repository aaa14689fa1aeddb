//! The node's data plane, in either mode of `node.mode`:
//!
//! - **kernel**: a TUN device with the overlay address, kernel routes for every peer's allowed
//!   IPs, and a local route for the service CIDR so the proxy can listen on any virtual IP.
//!   Needs `CAP_NET_ADMIN`.
//! - **userspace**: a smoltcp stack inside the process ([`overlay::netstack`]). Nothing on the
//!   host changes: the proxy dials remote endpoints through the stack, and connections arriving
//!   through the tunnel for this node's endpoints are copied to the real local sockets (each
//!   endpoint's `local`, default `127.0.0.1:<port>`), TCP and UDP alike. Virtual IPs come from `127.0.0.0/8`, which
//!   Linux already delivers locally. Needs no privilege.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use ipnet::IpNet;
use l7proxy::{BoxFuture, BoxIo, Dialer, TcpDialer};
use overlay::Node;
use overlay::device::{Device, OtherSink};
use overlay::netstack::Netstack;
use overlay::tun::{Tun, TunConfig};
use overlay::udp::UdpIo;
use tokio::task::JoinHandle;

use crate::config::{Config, Mode};
use crate::netlink::{Netlink, RouteChanges};

/// The host side of the data plane, prepared before the packet threads start.
pub enum Attach {
    /// A TUN device, addressed and up.
    Tun {
        /// The device.
        tun: Tun,
        /// Its link index.
        index: u32,
        /// Route programming.
        netlink: Netlink,
    },
    /// Nothing on the host; netlink only to list addresses, when the host allows it.
    Userspace {
        /// Read-only netlink.
        netlink: Option<Netlink>,
    },
}

/// Prepares the host for `config.node.mode`.
pub async fn attach(config: &Config) -> Result<Attach> {
    if config.node.mode == Mode::Userspace {
        return Ok(Attach::Userspace {
            netlink: Netlink::connect().ok(),
        });
    }
    let mut tun_config = TunConfig::new(&config.node.interface);
    tun_config.mtu = config.mtu();
    let tun = Tun::create(&tun_config).with_context(|| {
        format!(
            "cannot create TUN device {} (kernel mode needs CAP_NET_ADMIN and /dev/net/tun; mode = \"userspace\" needs neither)",
            config.node.interface
        )
    })?;
    let index = tun.if_index()?;
    let netlink = Netlink::connect()?;
    netlink
        .add_address(index, config.node.address.into(), 32)
        .await?;
    if let Some(v6) = config.node.address6 {
        netlink.add_address(index, v6.into(), 128).await?;
    }
    netlink.set_up(index).await?;
    // Virtual IPs of global names are local addresses of every node, so the proxy can listen on
    // them and pods behind the node reach them through their default route.
    netlink.add_local_route(config.service_cidr()).await?;
    Ok(Attach::Tun {
        tun,
        index,
        netlink,
    })
}

impl Attach {
    /// This host's global addresses, except the tunnel's own.
    pub async fn host_addresses(&self) -> Result<Vec<IpAddr>> {
        match self {
            Attach::Tun { index, netlink, .. } => netlink.global_addresses(*index).await,
            Attach::Userspace { netlink: Some(n) } => n.global_addresses(0).await,
            Attach::Userspace { netlink: None } => Ok(Vec::new()),
        }
    }

    /// Starts moving packets.
    pub fn start(
        self,
        config: &Config,
        node: Arc<Mutex<Node>>,
        udp: UdpIo,
        sink: Option<OtherSink>,
    ) -> Result<DataPath> {
        match self {
            Attach::Tun {
                tun,
                index,
                netlink,
            } => {
                let offload = tun.offload();
                let device = Device::start_with(node, tun, udp, sink)
                    .context("cannot start the data path")?;
                Ok(DataPath::Kernel {
                    device,
                    netlink,
                    index,
                    offload,
                })
            }
            Attach::Userspace { .. } => {
                let mut addresses = vec![IpNet::from(IpAddr::V4(config.node.address))];
                if let Some(v6) = config.node.address6 {
                    addresses.push(IpNet::from(IpAddr::V6(v6)));
                }
                let stack = Netstack::start(node, udp, addresses, config.mtu(), sink)
                    .context("cannot start the userspace network stack")?;
                Ok(DataPath::Userspace(Userspace {
                    stack,
                    forwards: Arc::default(),
                }))
            }
        }
    }
}

/// A running data plane.
pub enum DataPath {
    /// TUN device and kernel routes.
    Kernel {
        /// The packet threads.
        device: Device,
        /// Route programming.
        netlink: Netlink,
        /// The TUN device's link index.
        index: u32,
        /// Whether TUN offloads are on.
        offload: bool,
    },
    /// The in-process stack.
    Userspace(Userspace),
}

/// The userspace data plane's state.
pub struct Userspace {
    stack: Netstack,
    /// This node's endpoints (overlay `ip:port`), each with the real local socket it forwards
    /// to and the task doing it; the dialer reads it too.
    forwards: Forwards,
}

impl DataPath {
    /// `kernel` or `userspace`, for status.
    pub fn mode(&self) -> &'static str {
        match self {
            DataPath::Kernel { .. } => "kernel",
            DataPath::Userspace(_) => "userspace",
        }
    }

    /// Whether TUN offloads are active.
    pub fn offload(&self) -> bool {
        matches!(self, DataPath::Kernel { offload: true, .. })
    }

    /// Sends a control datagram from the WireGuard port.
    pub fn send_other(&self, to: SocketAddr, datagram: &[u8]) -> io::Result<()> {
        match self {
            DataPath::Kernel { device, .. } => device.send_other(to, datagram),
            DataPath::Userspace(u) => u.stack.send_other(to, datagram),
        }
    }

    /// Sends what the node queued (after a peer change) now.
    pub fn flush(&self) {
        match self {
            DataPath::Kernel { device, .. } => device.flush(),
            DataPath::Userspace(u) => u.stack.flush(),
        }
    }

    /// Kernel mode: routes `desired` into the TUN device. Userspace mode has no routes: the
    /// node's peer table alone decides where a packet goes.
    pub async fn sync_routes(
        &self,
        desired: &BTreeSet<IpNet>,
        src4: Ipv4Addr,
        src6: Option<Ipv6Addr>,
    ) -> Result<RouteChanges> {
        match self {
            DataPath::Kernel { netlink, index, .. } => {
                netlink.sync_routes(*index, desired, Some(src4), src6).await
            }
            DataPath::Userspace(_) => Ok(RouteChanges::default()),
        }
    }

    /// How the proxy reaches endpoints.
    pub fn dialer(&self) -> Arc<dyn Dialer> {
        match self {
            DataPath::Kernel { .. } => Arc::new(TcpDialer),
            DataPath::Userspace(u) => Arc::new(NetstackDialer {
                stack: u.stack.clone(),
                forwards: u.forwards.clone(),
            }),
        }
    }

    /// Userspace mode: makes the tunnel forward exactly `wanted` (endpoint → local socket).
    /// Kernel mode: nothing to do, the endpoints are real addresses.
    pub fn set_forwards(&self, wanted: &HashMap<SocketAddr, SocketAddr>) {
        let DataPath::Userspace(u) = self else { return };
        let mut forwards = lock(&u.forwards);
        forwards.retain(|endpoint, (to, task)| {
            let keep = wanted.get(endpoint) == Some(to) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (endpoint, to) in wanted {
            if forwards.contains_key(endpoint) {
                continue;
            }
            let (stack, endpoint_, to_) = (u.stack.clone(), *endpoint, *to);
            let task = tokio::spawn(async move {
                let tcp =
                    async { overlay::netstack::forward(stack.listen(endpoint_).await?, to_).await };
                let udp = async {
                    overlay::netstack::forward_udp(stack.bind_udp(endpoint_).await?, to_).await
                };
                let (tcp, udp) = tokio::join!(tcp, udp);
                for (proto, result) in [("tcp", tcp), ("udp", udp)] {
                    if let Err(error) = result {
                        tracing::warn!(endpoint = %endpoint_, to = %to_, proto, %error, "cannot forward an endpoint through the tunnel");
                    }
                }
            });
            tracing::info!(%endpoint, %to, "forwarding endpoint through the tunnel");
            forwards.insert(*endpoint, (*to, task));
        }
    }
}

impl Drop for Userspace {
    fn drop(&mut self) {
        for (_, task) in lock(&self.forwards).values() {
            task.abort();
        }
        self.stack.stop();
    }
}

/// Endpoint → (local socket, forwarding task).
type Forwards = Arc<Mutex<HashMap<SocketAddr, (SocketAddr, JoinHandle<()>)>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Userspace mode's dialer: this node's own endpoints are real local sockets; everything else
/// goes through the tunnel.
struct NetstackDialer {
    stack: Netstack,
    forwards: Forwards,
}

impl Dialer for NetstackDialer {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxIo>> {
        let local = lock(&self.forwards).get(&addr).map(|(to, _)| *to);
        match local {
            Some(to) => TcpDialer.dial(to),
            None => {
                let stack = self.stack.clone();
                Box::pin(async move { Ok(Box::new(stack.connect(addr).await?) as BoxIo) })
            }
        }
    }
}
