//! The socket shell: one UDP socket and one TCP listener on the same address, feeding
//! [`QueryHandler`].
//!
//! UDP is read and answered in batches (`recvmmsg`/`sendmmsg`, see `server/mmsg.rs`).
//!
//! This replaces hickory's `Server` (which the catalog would otherwise be registered with)
//! for three reasons: `Server` drops packets shorter than a header and responses silently and
//! answers undecodable ones FORMERR internally, so junk could not be counted; it logs every
//! query at INFO; and it spawns a task per UDP datagram, where a `.global` answer needs no I/O
//! and is cheaper inline.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use tracing::{debug, info, trace, warn};

use self::mmsg::{Received, RecvBatch};
use crate::forward::{upstreams_from_resolv_conf, without_self};
use crate::handler::{Parsed, QueryHandler};
use crate::stats::{DnsStats, bump};
use crate::zone::Zone;
use crate::{DnsConfig, DnsError, Transport};

mod mmsg;

/// Forwarded UDP queries waiting for upstream at once; more are dropped (and counted).
const MAX_UDP_IN_FLIGHT: usize = 1024;
/// Open TCP connections at once; more are closed at accept (and counted).
const MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP client that sends nothing for this long is disconnected (RFC 7766 §6.2.3).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// A started message, or a response write, that takes longer is abandoned.
const TCP_IO: Duration = Duration::from_secs(5);
/// Where upstreams come from when the configuration lists none.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// A running DNS server. Dropping it stops it too; [`DnsServer::shutdown`] also waits.
pub struct DnsServer {
    local_addr: SocketAddr,
    handler: Arc<QueryHandler>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `config.listen` (port 0 picks one free for both), reads the
    /// upstreams (from `/etc/resolv.conf` when the list is empty) and starts serving `zone`.
    ///
    /// With no usable upstream the server still starts and serves `global.`; other names get
    /// SERVFAIL and a warning is logged.
    ///
    /// # Errors
    ///
    /// [`DnsError::PortBusy`], [`DnsError::Privileged`] or [`DnsError::Bind`] when either
    /// socket cannot be bound; [`DnsError::Resolver`] when the upstreams are unusable.
    pub async fn start(config: DnsConfig, zone: Zone) -> Result<Self, DnsError> {
        let (udp, tcp) = bind_pair(config.listen).await?;
        let local_addr = udp.local_addr().map_err(|source| DnsError::Bind {
            addr: config.listen,
            transport: "udp",
            source,
        })?;
        let upstreams = if config.upstream.is_empty() {
            match upstreams_from_resolv_conf(Path::new(RESOLV_CONF)) {
                Ok(found) => found,
                Err(error) => {
                    warn!(%error, "cannot take upstream resolvers from resolv.conf");
                    Vec::new()
                }
            }
        } else {
            config.upstream
        };
        let upstreams = without_self(upstreams, local_addr);
        if upstreams.is_empty() {
            warn!(%local_addr, "no usable upstream resolver: names outside .global get SERVFAIL");
        }
        let handler = Arc::new(QueryHandler::new(&zone, config.ttl, &upstreams)?);
        let tasks = vec![
            tokio::spawn(serve_udp(Arc::new(udp), handler.clone())),
            tokio::spawn(serve_tcp(tcp, handler.clone())),
        ];
        info!(%local_addr, ?upstreams, names = zone.names.len(), "dns server listening");
        Ok(Self {
            local_addr,
            handler,
            tasks,
        })
    }

    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces every `.global` name; the next query sees the new zone.
    ///
    /// The answers are built on the calling thread before the swap, about 30 µs per name
    /// (0.3 s for 10,000 names on the development VM): call it where blocking that long is
    /// acceptable (`spawn_blocking` for large zones). Queries keep being answered from the old
    /// zone meanwhile.
    pub fn update(&self, zone: Zone) {
        self.handler.update(&zone);
        debug!(names = zone.names.len(), "dns zone updated");
    }

    /// Counters since start.
    pub fn stats(&self) -> DnsStats {
        self.handler.stats()
    }

    /// Stops serving and waits until both sockets are closed.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // Cancelled is the expected outcome; a panic would already have been reported.
            let _ = task.await;
        }
        info!(local_addr = %self.local_addr, "dns server stopped");
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// UDP and TCP on the same port. With port 0 the kernel picks the UDP port, which may be taken
/// for TCP: try a few times.
async fn bind_pair(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let mut attempts = if listen.port() == 0 { 8 } else { 1 };
    loop {
        attempts -= 1;
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|source| bind_error(listen, "udp", source))?;
        let addr = udp
            .local_addr()
            .map_err(|source| bind_error(listen, "udp", source))?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempts > 0 => continue,
            Err(source) => return Err(bind_error(addr, "tcp", source)),
        }
    }
}

fn bind_error(addr: SocketAddr, transport: &'static str, source: io::Error) -> DnsError {
    match source.kind() {
        io::ErrorKind::AddrInUse => DnsError::PortBusy { addr, transport },
        io::ErrorKind::PermissionDenied => DnsError::Privileged { addr },
        _ => DnsError::Bind {
            addr,
            transport,
            source,
        },
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, handler: Arc<QueryHandler>) {
    let mut batch = RecvBatch::new();
    let mut replies: Vec<(usize, Vec<u8>)> = Vec::with_capacity(mmsg::BATCH);
    let mut forwards = JoinSet::new();
    loop {
        let count = match batch.recv(&socket).await {
            Ok(count) => count,
            Err(error) => {
                // ICMP errors for earlier answers surface here (ECONNREFUSED); none of them
                // concern the next datagram, but do not spin on one that persists.
                trace!(%error, "udp receive error");
                tokio::task::yield_now().await;
                continue;
            }
        };
        replies.clear();
        for i in 0..count {
            let Received { packet, src, cut } = batch.get(i);
            let Some(src) = src.filter(|src| src.port() != 0) else {
                bump(&handler.counters().dropped);
                continue;
            };
            if cut {
                bump(&handler.counters().malformed);
                continue;
            }
            if let Some(reply) = handler.fast_answer(packet, Transport::Udp) {
                replies.push((i, reply));
                continue;
            }
            match handler.parse(packet, src, Transport::Udp) {
                Parsed::Drop => {}
                Parsed::Reply(reply) => replies.push((i, reply)),
                Parsed::Query {
                    request,
                    local: true,
                } => {
                    // Answered from memory: completes without waiting on anything.
                    replies.push((i, handler.answer(&request, Transport::Udp).await));
                }
                Parsed::Query { request, .. } => {
                    while forwards.try_join_next().is_some() {}
                    if forwards.len() >= MAX_UDP_IN_FLIGHT {
                        bump(&handler.counters().dropped);
                        continue;
                    }
                    let (socket, handler) = (socket.clone(), handler.clone());
                    forwards.spawn(async move {
                        let reply = handler.answer(&request, Transport::Udp).await;
                        send(&socket, &reply, src).await;
                    });
                }
            }
        }
        // What did not fit in the socket buffer in one go waits for room, one by one.
        let sent = batch.send(&socket, &replies);
        for (i, reply) in replies.drain(..).skip(sent) {
            if let Some(src) = batch.get(i).src {
                send(&socket, &reply, src).await;
            }
        }
    }
}

async fn send(socket: &UdpSocket, reply: &[u8], dst: SocketAddr) {
    if let Err(error) = socket.send_to(reply, dst).await {
        trace!(%dst, %error, "udp send failed");
    }
}

async fn serve_tcp(listener: TcpListener, handler: Arc<QueryHandler>) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, most likely: back off instead of spinning.
                debug!(%error, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_TCP_CONNECTIONS {
            bump(&handler.counters().dropped);
            continue;
        }
        connections.spawn(serve_connection(stream, peer, handler.clone()));
    }
}

/// RFC 1035 §4.2.2 framing: a two-byte length before each message. Queries on one connection
/// are answered in order.
async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, handler: Arc<QueryHandler>) {
    let mut packet = Vec::new();
    let mut out = Vec::new();
    loop {
        let len = match timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            // Closed, reset or idle: all normal ends of a connection.
            _ => return,
        };
        packet.clear();
        packet.resize(len, 0);
        if len == 0
            || !matches!(
                timeout(TCP_IO, stream.read_exact(&mut packet)).await,
                Ok(Ok(_))
            )
        {
            bump(&handler.counters().malformed);
            trace!(%peer, len, "incomplete tcp message");
            return;
        }
        let Some(reply) = handler.respond(&packet, peer, Transport::Tcp).await else {
            continue;
        };
        out.clear();
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        out.extend_from_slice(&reply_len.to_be_bytes());
        out.extend_from_slice(&reply);
        if !matches!(timeout(TCP_IO, stream.write_all(&out)).await, Ok(Ok(()))) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_failures_name_the_cause() {
        let addr: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let busy = bind_error(addr, "udp", io::ErrorKind::AddrInUse.into());
        assert_eq!(
            busy.to_string(),
            "dns udp port 127.0.0.1:53 is busy: another DNS server is already listening"
        );
        let denied = bind_error(addr, "tcp", io::ErrorKind::PermissionDenied.into());
        assert!(matches!(denied, DnsError::Privileged { .. }));
        assert!(denied.to_string().contains("CAP_NET_BIND_SERVICE"));
        let other = bind_error(addr, "udp", io::ErrorKind::AddrNotAvailable.into());
        assert!(matches!(
            other,
            DnsError::Bind {
                transport: "udp",
                ..
            }
        ));
    }
}
