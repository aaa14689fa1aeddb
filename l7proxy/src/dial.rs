//! How the proxy reaches endpoints: a pluggable dialer (kernel TCP here; the userspace mode plugs
//! a smoltcp stack in).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A byte stream to an endpoint.
pub trait AsyncReadWrite: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncReadWrite for T {}

/// A boxed byte stream, what a [`Dialer`] returns.
pub type BoxIo = Box<dyn AsyncReadWrite>;

/// Opens byte streams to endpoints. The proxy applies its own connect timeout around `dial`.
pub trait Dialer: Send + Sync + 'static {
    /// Connects to `addr`.
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxIo>>;
}

/// The default dialer: a kernel TCP connection with `TCP_NODELAY`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxIo>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxIo)
        })
    }
}
