//! Service endpoints for the proxy tests: real servers in a pod namespace, each on its own
//! thread with its own tokio runtime, that can be killed (every socket closes at once, as when
//! the process dies) and started again on the same address.
//!
//! - [`Kind::Http`]: HTTP/1.1 (hyper) answering every request with its identity (body and
//!   `x-endpoint`), after an adjustable delay; a request with `Upgrade: websocket` gets a real
//!   RFC 6455 handshake and an echo of every frame.
//! - [`Kind::Grpc`]: HTTP/2 with prior knowledge speaking gRPC framing: `/echo.Echo/Unary` and
//!   `/echo.Echo/Bidi` (each message is answered as soon as it arrives), then `grpc-status: 0`.
//! - [`Kind::TcpEcho`]: writes `<identity>\n`, then echoes every byte.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use netns_tests::{Netns, in_netns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::grpc;
use crate::ws;

/// What an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HTTP/1.1 with identity answers and WebSocket echo.
    Http,
    /// gRPC over HTTP/2 with prior knowledge.
    Grpc,
    /// A greeting line, then a byte echo.
    TcpEcho,
}

/// Counters and knobs shared with the serving thread.
#[derive(Debug, Default)]
pub struct State {
    /// Requests (HTTP, gRPC calls) or connections (TCP) served.
    pub requests: AtomicU64,
    /// Delay before each HTTP answer, in milliseconds.
    pub delay_ms: AtomicU64,
}

/// A running (or killed) endpoint.
pub struct Endpoint {
    /// Its identity, in every answer.
    pub identity: String,
    /// Where it listens.
    pub addr: SocketAddr,
    kind: Kind,
    ns: Netns,
    state: Arc<State>,
    running: Option<(oneshot::Sender<()>, JoinHandle<Result<()>>)>,
}

impl Endpoint {
    /// Starts `identity` serving `kind` on `addr` inside `ns`; returns once it listens.
    pub fn start(ns: &Netns, kind: Kind, addr: SocketAddr, identity: &str) -> Result<Endpoint> {
        let mut endpoint = Endpoint {
            identity: identity.to_owned(),
            addr,
            kind,
            ns: ns.handle(),
            state: Arc::default(),
            running: None,
        };
        endpoint.restart()?;
        Ok(endpoint)
    }

    /// Kills the endpoint: its listener and every connection close at once.
    pub fn kill(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }

    /// Starts it again on the same address (after [`Endpoint::kill`]).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let (stop, stopped) = oneshot::channel();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let (kind, addr, state) = (self.kind, self.addr, self.state.clone());
        let identity: Arc<str> = Arc::from(self.identity.as_str());
        let thread = in_netns(&self.ns, move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = match TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = bound_tx.send(Err(e.to_string()));
                        return Ok(());
                    }
                };
                let _ = bound_tx.send(Ok(()));
                tokio::select! {
                    () = accept(listener, kind, identity, state) => Ok(()),
                    _ = stopped => Ok(()),
                }
            })
            // Dropping the runtime drops every connection task: all sockets close.
        });
        match bound_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {
                self.running = Some((stop, thread));
                Ok(())
            }
            Ok(Err(e)) => bail!("{} cannot listen on {addr}: {e}", self.identity),
            Err(_) => Err(thread
                .join()
                .map_err(|_| anyhow!("endpoint thread panicked"))
                .and_then(|r| r)
                .err()
                .unwrap_or_else(|| anyhow!("{} did not start", self.identity))),
        }
    }

    /// Requests (or TCP connections) served since it was created.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Makes every later HTTP answer wait `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn accept(listener: TcpListener, kind: Kind, identity: Arc<str>, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (identity, state) = (identity.clone(), state.clone());
        tokio::spawn(async move {
            match kind {
                Kind::Http => serve_http(stream, identity, state).await,
                Kind::Grpc => serve_grpc(stream, identity, state).await,
                Kind::TcpEcho => echo(stream, &identity, &state).await,
            }
        });
    }
}

/// The response body of every test server.
pub type Body = BoxBody<Bytes, Infallible>;

async fn serve_http(stream: TcpStream, identity: Arc<str>, state: Arc<State>) {
    let service = service_fn(move |req| http(req, identity.clone(), state.clone()));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

async fn http(
    mut req: Request<Incoming>,
    identity: Arc<str>,
    state: Arc<State>,
) -> Result<Response<Body>, Infallible> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(key) = ws::upgrade_key(&req) {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let _ = ws::echo(TokioIo::new(upgraded)).await;
            }
        });
        return Ok(ws::switching_protocols(&key, &identity));
    }
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let _ = req.into_body().collect().await;
    let mut response = Response::new(Full::new(Bytes::from(identity.to_string())).boxed());
    if let Ok(value) = HeaderValue::from_str(&identity) {
        response.headers_mut().insert("x-endpoint", value);
    }
    Ok(response)
}

async fn serve_grpc(stream: TcpStream, identity: Arc<str>, state: Arc<State>) {
    let service = service_fn(move |req: Request<Incoming>| {
        let (identity, state) = (identity.clone(), state.clone());
        async move {
            state.requests.fetch_add(1, Ordering::Relaxed);
            let response = match req.uri().path() {
                "/echo.Echo/Unary" | "/echo.Echo/Bidi" => grpc::serve(req, identity),
                _ => {
                    let mut r = Response::new(Full::new(Bytes::new()).boxed());
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    r
                }
            };
            Ok::<_, Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn echo(mut stream: TcpStream, identity: &str, state: &State) {
    state.requests.fetch_add(1, Ordering::Relaxed);
    if stream
        .write_all(format!("{identity}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs `f` to completion on a current-thread runtime on a thread inside `ns`: every socket the
/// future opens lives in that namespace.
pub fn block_in<T, F, Fut>(ns: &Netns, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    in_netns(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?
            .block_on(f())
    })
    .join()
    .map_err(|_| anyhow!("client thread panicked"))?
}
