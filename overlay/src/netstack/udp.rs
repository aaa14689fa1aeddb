//! UDP through the tunnel: a bound socket with `send_to` and `recv_from`.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};

use super::stack::{Shared, lock};

/// Datagrams each direction of a socket can queue.
const UDP_PACKETS: usize = 256;
/// Payload bytes each direction of a socket can queue.
const UDP_BUFFER: usize = 1 << 20;

/// A UDP socket inside the tunnel. Datagrams still queued when it is dropped are sent.
pub struct NetstackUdp {
    shared: Arc<Shared>,
    handle: SocketHandle,
    local: SocketAddr,
}

pub(super) fn bind(shared: &Arc<Shared>, local: SocketAddr) -> io::Result<NetstackUdp> {
    shared.check_running()?;
    let mut stack = lock(&shared.stack);
    let addr = stack.local_ip(local.ip())?;
    let port = stack.reserve_port(true, local.port())?;
    let buffer = || {
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
            vec![0; UDP_BUFFER],
        )
    };
    let mut socket = udp::Socket::new(buffer(), buffer());
    if let Err(e) = socket.bind(IpListenEndpoint { addr, port }) {
        stack.release_port(true, port);
        return Err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()));
    }
    let handle = stack.sockets.add(socket);
    Ok(NetstackUdp {
        shared: Arc::clone(shared),
        handle,
        local: SocketAddr::new(local.ip(), port),
    })
}

impl std::fmt::Debug for NetstackUdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetstackUdp")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl NetstackUdp {
    /// The bound address and port.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends one datagram to `target`, waiting while the socket's queue is full.
    pub async fn send_to(&self, datagram: &[u8], target: SocketAddr) -> io::Result<usize> {
        poll_fn(|cx| self.poll_send_to(cx, datagram, target)).await
    }

    /// Receives one datagram; a datagram longer than `buf` is truncated, as with a kernel
    /// socket.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        poll_fn(|cx| self.poll_recv_from(cx, buf)).await
    }

    /// Poll form of [`NetstackUdp::send_to`].
    pub fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        datagram: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        let result = {
            let mut stack = lock(&self.shared.stack);
            let socket = stack.sockets.get_mut::<udp::Socket>(self.handle);
            if !socket.is_open() {
                return Poll::Ready(Err(stopped()));
            }
            if datagram.len() > socket.payload_send_capacity() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "datagram larger than the send buffer",
                )));
            }
            match socket.send_slice(datagram, IpEndpoint::from(target)) {
                Ok(()) => Poll::Ready(Ok(datagram.len())),
                Err(udp::SendError::BufferFull) => {
                    socket.register_send_waker(cx.waker());
                    return Poll::Pending;
                }
                Err(udp::SendError::Unaddressable) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot send to {target}"),
                ))),
            }
        };
        self.shared.kick();
        result
    }

    /// Poll form of [`NetstackUdp::recv_from`].
    pub fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut stack = lock(&self.shared.stack);
        let socket = stack.sockets.get_mut::<udp::Socket>(self.handle);
        if !socket.is_open() {
            return Poll::Ready(Err(stopped()));
        }
        match socket.recv() {
            Ok((payload, meta)) => {
                let n = payload.len().min(buf.len());
                buf[..n].copy_from_slice(&payload[..n]);
                Poll::Ready(Ok((n, meta.endpoint.into())))
            }
            Err(udp::RecvError::Exhausted | udp::RecvError::Truncated) => {
                socket.register_recv_waker(cx.waker());
                Poll::Pending
            }
        }
    }
}

/// The error for a socket the stack closed when it stopped.
fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "netstack stopped")
}

impl Drop for NetstackUdp {
    fn drop(&mut self) {
        let mut stack = lock(&self.shared.stack);
        let queued = stack.sockets.get::<udp::Socket>(self.handle).send_queue();
        if queued > 0 {
            stack.orphan_udp(self.handle, self.local.port());
        } else {
            stack.sockets.remove(self.handle);
            stack.release_port(true, self.local.port());
        }
    }
}
