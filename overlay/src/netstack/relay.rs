//! UDP forwarding from the tunnel to a real local socket. Each remote sender gets its own
//! kernel UDP socket connected to the target, as a NAT would give it, so that the target's
//! replies go back to the right sender; a flow quiet in both directions for [`UDP_IDLE`] is
//! forgotten, and a forwarder keeps at most [`UDP_FLOWS`] flows (datagrams of further senders
//! are dropped until one expires).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::NetstackUdp;

/// How long a flow lives without a datagram either way.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// Most flows one forwarder keeps.
pub const UDP_FLOWS: usize = 1024;
/// Largest datagram carried.
const MAX_DATAGRAM: usize = 65_535;

struct Flow {
    socket: Arc<UdpSocket>,
    last: Arc<Mutex<Instant>>,
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Flow>>>;

/// Receives datagrams arriving through the tunnel on `socket` and relays each to `to` from
/// the sender's own local socket; replies travel back through the tunnel. Runs until `socket`
/// fails; flows end with it.
pub async fn forward_udp(socket: NetstackUdp, to: SocketAddr) -> io::Result<()> {
    let socket = Arc::new(socket);
    let flows: Flows = Arc::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        while tasks.try_join_next().is_some() {}
        let existing = lock(&flows)
            .get(&from)
            .map(|f| (f.socket.clone(), f.last.clone()));
        let (local, last) = match existing {
            Some(found) => found,
            None => {
                if lock(&flows).len() >= UDP_FLOWS {
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
                let last = Arc::new(Mutex::new(Instant::now()));
                lock(&flows).insert(
                    from,
                    Flow {
                        socket: local.clone(),
                        last: last.clone(),
                    },
                );
                tasks.spawn(replies(
                    socket.clone(),
                    local.clone(),
                    from,
                    last.clone(),
                    flows.clone(),
                ));
                (local, last)
            }
        };
        *lock(&last) = Instant::now();
        // A refused or unreachable target loses the datagram, as it would on a real network.
        let _ = local.send(&buf[..n]).await;
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
/// goes quiet, then forgets it.
async fn replies(
    tunnel: Arc<NetstackUdp>,
    local: Arc<UdpSocket>,
    peer: SocketAddr,
    last: Arc<Mutex<Instant>>,
    flows: Flows,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match tokio::time::timeout(UDP_IDLE, local.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                *lock(&last) = Instant::now();
                if tunnel.send_to(&buf[..n], peer).await.is_err() {
                    break;
                }
            }
            // ICMP port unreachable from the target: keep the flow, the target may come back.
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) if lock(&last).elapsed() < UDP_IDLE => {}
            Err(_) => break,
        }
    }
    lock(&flows).remove(&peer);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
