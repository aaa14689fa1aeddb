//! Listeners and client connections: accept, detect the protocol, hand the connection to the
//! HTTP/1.1 fast path (or hyper), the HTTP/2 path or the opaque TCP forwarder.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use peerd_types::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use crate::detect::{self, Detected, MAX_HEAD, Prefixed};
use crate::errors::{self, ProxyError};
use crate::forward::{self, ConnCtx};
use crate::h1;
use crate::h2;
use crate::idle::{self, Activity};
use crate::proxy::Shared;
use crate::route::Route;
use crate::sync::{read, write};
use crate::tcp;

/// How long and how much a rejected client's remaining bytes are drained before closing.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;
/// Pending connections the kernel queues per listener.
const BACKLOG: u32 = 4096;

/// The route a listener serves; swapped in place when the configuration changes what is
/// behind the address.
pub(crate) type RouteSlot = RwLock<Arc<Route>>;

/// A bound listener and its accept task.
pub(crate) struct Listener {
    pub(crate) slot: Arc<RouteSlot>,
    pub(crate) task: JoinHandle<()>,
}

impl Listener {
    /// Binds `addr` and starts accepting.
    pub(crate) fn start(addr: SocketAddr, route: Route, shared: Arc<Shared>) -> io::Result<Self> {
        let listener = bind(addr)?;
        let slot = Arc::new(RwLock::new(Arc::new(route)));
        let task = tokio::spawn(accept_loop(listener, slot.clone(), shared));
        Ok(Self { slot, task })
    }

    pub(crate) fn route(&self) -> Arc<Route> {
        read(&self.slot).clone()
    }

    pub(crate) fn set_route(&self, route: Route) {
        *write(&self.slot) = Arc::new(route);
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

async fn accept_loop(listener: TcpListener, slot: Arc<RouteSlot>, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                let route = read(&slot).clone();
                tokio::spawn(serve_connection(stream, client, route, shared.clone()));
            }
            Err(error) if is_per_connection(&error) => {
                tracing::debug!(%error, "accept failed");
            }
            Err(error) => {
                // Out of file descriptors or memory: back off instead of spinning.
                tracing::warn!(%error, "accept failed; pausing this listener for 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// A plain function returning an `async move` block, not an `async fn`, which would keep a
/// second copy of its arguments in every connection's task (see [`h1::serve`]).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would store its arguments twice"
)]
fn serve_connection(
    mut stream: TcpStream,
    client: SocketAddr,
    route: Arc<Route>,
    shared: Arc<Shared>,
) -> impl Future<Output = ()> {
    async move {
        let _active = route.metrics.connection();
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%client, %error, "cannot set TCP_NODELAY");
        }
        let protocol = route.port.protocol;
        if protocol == Protocol::Tcp {
            let stream = Prefixed::new(Default::default(), stream);
            return Box::pin(tcp::forward(stream, client, &route, &shared)).await;
        }
        let idle_timeout = shared.client_idle_timeout();
        let (detected, prefix) = detect::detect(&mut stream, idle_timeout).await;
        let ctx = ConnCtx {
            route,
            shared,
            client,
        };
        if protocol == Protocol::Http && detected == Detected::Http1 {
            // hyper takes over from the fast path when a request needs it.
            return h1::serve(stream, prefix, ctx, idle_timeout).await;
        }
        let stream = Prefixed::new(prefix.freeze(), stream);
        match (protocol, detected) {
            (_, Detected::Closed) => {}
            (_, Detected::Reject(error)) => Box::pin(reject(stream, &error)).await,
            (_, Detected::Http2) => Box::pin(h2::serve(stream, ctx, idle_timeout)).await,
            (Protocol::Http, Detected::Opaque) => {
                Box::pin(tcp::forward(stream, client, &ctx.route, &ctx.shared)).await;
            }
            // HTTP/2 ports need the HTTP/2 preface (`http` ports went to the fast path above).
            (_, Detected::Http1) => Box::pin(reject(stream, &ProxyError::BadRequest)).await,
            (_, Detected::Opaque) => errors::reset_tcp(stream.get_ref(), &ProxyError::BadRequest),
        }
    }
}

/// Answers a bad first request head and closes. The rest of what the client sends is read and
/// dropped for a moment (a "lingering close"): closing with unread data would reset the
/// connection and could destroy the answer before the client reads it.
pub(crate) async fn reject(mut stream: Prefixed<TcpStream>, error: &ProxyError) {
    tracing::debug!(reason = error.reason(), "rejecting request");
    let response = errors::respond_raw_h1(error, true);
    if stream.write_all(&response).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

pub(crate) async fn serve_h1(stream: Prefixed<TcpStream>, ctx: ConnCtx) {
    let idle_timeout = ctx.shared.client_idle_timeout();
    let ctx = Arc::new(ctx);
    let activity = Arc::new(Activity::new(Instant::now()));
    let service = {
        let activity = activity.clone();
        // Boxed: hyper keeps room for one request future per connection for the connection's
        // whole life, and idle keep-alive connections should not pay for a large one.
        service_fn(move |req| Box::pin(forward::serve(ctx.clone(), req, Some(activity.start()))))
    };
    // No hyper timer: `close_when_idle` limits the wait for the next request head.
    // Writes flattened into one buffer: a response head and a small body in one `write` cost
    // the kernel less than a two-part `writev`.
    let connection = pin!(
        http1::Builder::new()
            .header_read_timeout(None)
            .auto_date_header(false)
            .writev(false)
            .max_header_size(MAX_HEAD)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
    );
    match idle::close_when_idle(connection, &activity, idle_timeout).await {
        Some(Err(error)) => tracing::trace!(%error, "client HTTP/1.1 connection ended"),
        Some(Ok(())) => {}
        None => tracing::trace!("idle client HTTP/1.1 connection closed"),
    }
}

#[cfg(test)]
mod tests {
    use peerd_types::{Locality, ServicePort};

    use super::*;
    use crate::dial::TcpDialer;

    /// Every client connection is a task that holds this future, idle ones too: 10,000 idle
    /// keep-alive connections hold 10,000 of them. What only requests in progress, or only
    /// some connections, need is boxed, and arguments are not stored twice; with neither it
    /// was 2,080 bytes.
    #[tokio::test]
    async fn a_connection_task_stays_under_a_kibibyte() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, client) = listener.accept().await.unwrap();
        let shared = Arc::new(Shared::new());
        let port = ServicePort {
            name: "http".into(),
            port: 80,
            protocol: Protocol::Http,
        };
        let route = Route::new(
            "web",
            port,
            Locality::default(),
            Arc::new(TcpDialer),
            &shared.metrics,
        );
        let task = serve_connection(stream, client, Arc::new(route), shared);
        let size = std::mem::size_of_val(&task);
        eprintln!("connection task future: {size} bytes");
        assert!(size <= 1024, "a connection's task future is {size} bytes");
    }
}
