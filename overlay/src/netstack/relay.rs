//! UDP forwarding from the tunnel to a real local socket. Each remote sender gets its own
//! kernel UDP socket connected to the target, as a NAT would give it, so that the target's
//! replies go back to the right sender; a flow quiet in both directions for [`UDP_IDLE`] is
//! forgotten, and a forwarder keeps at most [`UDP_FLOWS`] flows (datagrams of further senders
//! are dropped until one expires).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::NetstackUdp;

/// How long a flow lives without a datagram either way.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// Most flows one forwarder keeps.
pub const UDP_FLOWS: usize = 1024;
/// Largest datagram carried.
const MAX_DATAGRAM: usize = 65_535;

/// One sender's flow: its local socket, and when a datagram last went either way (ms since
/// the forwarder started), so the reply task can tell a quiet flow from a one-way one.
struct Flow {
    socket: Arc<UdpSocket>,
    last: Arc<AtomicU64>,
}

/// Receives datagrams arriving through the tunnel on `socket` and relays each to `to` from
/// the sender's own local socket; replies travel back through the tunnel. Runs until `socket`
/// fails; flows end with it.
pub async fn forward_udp(socket: NetstackUdp, to: SocketAddr) -> io::Result<()> {
    let socket = Arc::new(socket);
    let epoch = Instant::now();
    // Owned by this loop alone: a reply task ends by returning its peer, which is then removed.
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        while let Some(ended) = tasks.try_join_next() {
            if let Ok(peer) = ended {
                flows.remove(&peer);
            }
        }
        if !flows.contains_key(&from) {
            if flows.len() >= UDP_FLOWS {
                tracing::debug!(%from, %to, "udp forward: too many flows, datagram dropped");
                continue;
            }
            let local = match open(to).await {
                Ok(s) => Arc::new(s),
                Err(error) => {
                    tracing::debug!(%to, %error, "udp forward: cannot open a local socket");
                    continue;
                }
            };
            let last = Arc::new(AtomicU64::new(0));
            tasks.spawn(replies(
                socket.clone(),
                local.clone(),
                from,
                last.clone(),
                epoch,
            ));
            flows.insert(
                from,
                Flow {
                    socket: local,
                    last,
                },
            );
        }
        let flow = &flows[&from];
        flow.last.store(millis(epoch), Ordering::Relaxed);
        // A refused or unreachable target loses the datagram, as it would on a real network.
        let _ = flow.socket.send(&buf[..n]).await;
    }
}

async fn open(to: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match to {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(to).await?;
    Ok(socket)
}

/// Sends the target's replies on `local` back to `peer` through the tunnel until the flow
/// goes quiet; returns `peer` so the forwarder forgets the flow.
async fn replies(
    tunnel: Arc<NetstackUdp>,
    local: Arc<UdpSocket>,
    peer: SocketAddr,
    last: Arc<AtomicU64>,
    epoch: Instant,
) -> SocketAddr {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let idle_ms = UDP_IDLE.as_millis() as u64;
    loop {
        match tokio::time::timeout(UDP_IDLE, local.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                last.store(millis(epoch), Ordering::Relaxed);
                if tunnel.send_to(&buf[..n], peer).await.is_err() {
                    return peer;
                }
            }
            // ICMP port unreachable from the target: keep the flow, the target may come back.
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) if millis(epoch).saturating_sub(last.load(Ordering::Relaxed)) < idle_ms => {}
            Err(_) => return peer,
        }
    }
}

fn millis(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}
