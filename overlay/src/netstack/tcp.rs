//! TCP through the tunnel: connections ([`NetstackTcp`], tokio `AsyncRead` + `AsyncWrite`),
//! listeners with a backlog ([`NetstackListener`]), and [`forward`] to real local sockets.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::IpListenEndpoint;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::stack::{Shared, Signal, lock};
use crate::device::lock as lock_node;

/// How long `connect` waits for the handshake (SYN retransmissions included).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Copy buffer per direction in [`forward`].
const COPY_BUF: usize = 64 << 10;

/// A TCP connection through the tunnel. Dropping it closes it gracefully (FIN), or resets it
/// when received data was left unread, as a kernel socket does.
pub struct NetstackTcp {
    shared: Arc<Shared>,
    handle: SocketHandle,
    local: SocketAddr,
    peer: SocketAddr,
    /// The ephemeral port this connection owns (none for accepted connections).
    port: Option<u16>,
}

pub(super) async fn connect(shared: &Arc<Shared>, remote: SocketAddr) -> io::Result<NetstackTcp> {
    shared.check_running()?;
    if remote.port() == 0 || remote.ip().is_unspecified() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot connect to {remote}"),
        ));
    }
    if lock_node(&shared.node).route(remote.ip()).is_none() {
        return Err(io::Error::new(
            io::ErrorKind::HostUnreachable,
            format!("no peer routes {}", remote.ip()),
        ));
    }
    let conn = {
        let mut guard = lock(&shared.stack);
        let stack = &mut *guard;
        let ip = stack.source_for(remote.ip()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("no local address for {remote}"),
            )
        })?;
        let port = stack.reserve_port(false, 0)?;
        let local = SocketAddr::new(ip, port);
        let mut socket = stack.new_tcp();
        socket.set_timeout(Some(smoltcp::time::Duration::from_micros(
            CONNECT_TIMEOUT.as_micros() as u64,
        )));
        if let Err(e) = socket.connect(stack.iface.context(), remote, local) {
            stack.release_port(false, port);
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()));
        }
        NetstackTcp {
            shared: Arc::clone(shared),
            handle: stack.sockets.add(socket),
            local,
            peer: remote,
            port: Some(port),
        }
    };
    shared.kick();
    let started = Instant::now();
    match poll_fn(|cx| conn.poll_established(cx)).await {
        Ok(()) => Ok(conn),
        Err(_) if started.elapsed() >= CONNECT_TIMEOUT => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting to {remote} timed out"),
        )),
        Err(e) => Err(e),
    }
}

impl std::fmt::Debug for NetstackTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetstackTcp")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl NetstackTcp {
    /// This end's overlay address and port.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The remote end's address and port.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Aborts the connection with a reset (RST).
    pub fn reset(&self) {
        self.with_socket(tcp::Socket::abort);
        self.shared.kick();
    }

    fn with_socket<R>(&self, f: impl FnOnce(&mut tcp::Socket<'static>) -> R) -> R {
        let mut stack = lock(&self.shared.stack);
        f(stack.sockets.get_mut::<tcp::Socket>(self.handle))
    }

    fn poll_established(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with_socket(|socket| match socket.state() {
            tcp::State::SynSent | tcp::State::SynReceived => {
                socket.register_send_waker(cx.waker());
                Poll::Pending
            }
            tcp::State::Closed => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("{} refused the connection", self.peer),
            ))),
            _ => {
                // The connect timeout must not outlive the handshake.
                socket.set_timeout(None);
                Poll::Ready(Ok(()))
            }
        })
    }
}

impl AsyncRead for NetstackTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let (result, update_window) = self.with_socket(|socket| {
            // Reading from a buffer more than half full may let the window double: smoltcp
            // then owes the sender a window update, which only the thread can send.
            let update_window = socket.recv_queue() > socket.recv_capacity() / 2;
            match socket.recv_slice(buf.initialize_unfilled()) {
                Ok(0) => {
                    socket.register_recv_waker(cx.waker());
                    (Poll::Pending, false)
                }
                Ok(n) => {
                    buf.advance(n);
                    (Poll::Ready(Ok(())), update_window)
                }
                Err(tcp::RecvError::Finished) => (Poll::Ready(Ok(())), false),
                Err(tcp::RecvError::InvalidState) => (Poll::Ready(Err(broken(socket))), false),
            }
        });
        if update_window {
            self.shared.kick();
        }
        result
    }
}

impl AsyncWrite for NetstackTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let result = self.with_socket(|socket| match socket.send_slice(data) {
            Ok(0) => {
                socket.register_send_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => Poll::Ready(Ok(n)),
            Err(tcp::SendError::InvalidState) => Poll::Ready(Err(broken(socket))),
        });
        if matches!(result, Poll::Ready(Ok(_))) {
            self.shared.kick();
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Like a kernel socket: written data is already the stack's to deliver.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with_socket(tcp::Socket::close);
        self.shared.kick();
        Poll::Ready(Ok(()))
    }
}

/// The error for a read or write on a connection that can no longer carry data.
fn broken(socket: &tcp::Socket) -> io::Error {
    match socket.state() {
        tcp::State::Closed | tcp::State::TimeWait => {
            io::Error::new(io::ErrorKind::ConnectionReset, "connection reset")
        }
        _ => io::Error::new(io::ErrorKind::BrokenPipe, "connection closed for writing"),
    }
}

impl Drop for NetstackTcp {
    fn drop(&mut self) {
        let mut guard = lock(&self.shared.stack);
        let stack = &mut *guard;
        let socket = stack.sockets.get_mut::<tcp::Socket>(self.handle);
        if socket.state() == tcp::State::Closed && socket.remote_endpoint().is_none() {
            stack.sockets.remove(self.handle);
            if let Some(port) = self.port {
                stack.release_port(false, port);
            }
            return;
        }
        if socket.can_recv() || matches!(socket.state(), tcp::State::SynSent) {
            // RFC 1122 §4.2.2.13: closing with unread data resets the connection.
            socket.abort();
        } else {
            socket.close();
        }
        stack.orphan_tcp(self.handle, self.port);
        drop(guard);
        self.shared.kick();
    }
}

/// Accepts TCP connections arriving through the tunnel for one port.
pub struct NetstackListener {
    shared: Arc<Shared>,
    local: SocketAddr,
    signal: Arc<Signal>,
}

pub(super) fn listen(shared: &Arc<Shared>, local: SocketAddr) -> io::Result<NetstackListener> {
    shared.check_running()?;
    let mut stack = lock(&shared.stack);
    let addr = stack.local_ip(local.ip())?;
    let port = stack.reserve_port(false, local.port())?;
    let endpoint = IpListenEndpoint { addr, port };
    let signal = match stack.add_listener(endpoint) {
        Ok(signal) => signal,
        Err(e) => {
            stack.remove_listener(port);
            return Err(e);
        }
    };
    Ok(NetstackListener {
        shared: Arc::clone(shared),
        local: SocketAddr::new(local.ip(), port),
        signal,
    })
}

impl std::fmt::Debug for NetstackListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetstackListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl NetstackListener {
    /// The next connection that completed its handshake, and the remote address.
    pub async fn accept(&self) -> io::Result<(NetstackTcp, SocketAddr)> {
        loop {
            self.shared.check_running()?;
            {
                let mut guard = lock(&self.shared.stack);
                let stack = &mut *guard;
                if let Some(handle) = stack.take_accepted(self.local.port())? {
                    let socket = stack.sockets.get::<tcp::Socket>(handle);
                    let local = socket.local_endpoint().map_or(self.local, SocketAddr::from);
                    let peer = socket
                        .remote_endpoint()
                        .map_or(self.local, SocketAddr::from);
                    let conn = NetstackTcp {
                        shared: Arc::clone(&self.shared),
                        handle,
                        local,
                        peer,
                        port: None,
                    };
                    return Ok((conn, peer));
                }
            }
            // A wake between the check and here leaves a permit: nothing is lost.
            self.signal.notify.notified().await;
        }
    }

    /// The address and port listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for NetstackListener {
    fn drop(&mut self) {
        lock(&self.shared.stack).remove_listener(self.local.port());
        self.shared.kick();
    }
}

/// Accepts connections through the tunnel until `listener` fails and copies each, on its own
/// task, to a new TCP connection to the real local socket `to` (nodelay, 64 KiB per direction).
/// A connection that `to` refuses is reset inside the tunnel, so the remote client sees a
/// refusal too. Connection tasks outlive an aborted `forward`; dropping the listener stops
/// new ones.
pub async fn forward(listener: NetstackListener, to: SocketAddr) -> io::Result<()> {
    loop {
        let (conn, peer) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(error) = splice(conn, to).await {
                tracing::debug!(%peer, %to, %error, "forwarded connection failed");
            }
        });
    }
}

async fn splice(mut conn: NetstackTcp, to: SocketAddr) -> io::Result<()> {
    let mut local = match tokio::net::TcpStream::connect(to).await {
        Ok(s) => s,
        Err(e) => {
            conn.reset();
            return Err(e);
        }
    };
    local.set_nodelay(true)?;
    match tokio::io::copy_bidirectional_with_sizes(&mut conn, &mut local, COPY_BUF, COPY_BUF).await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            conn.reset();
            Err(e)
        }
    }
}
