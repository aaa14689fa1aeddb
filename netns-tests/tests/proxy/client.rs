//! An HTTP/1.1 load client that runs in a test namespace: a few keep-alive connections sending
//! `GET /` back to back, recording when each answer came and which endpoint gave it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use netns_tests::{Netns, in_netns};
use tokio::net::TcpStream;

/// How long one request may take before the client counts it failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One answer (or failure) as the client saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// When it completed.
    pub at: Instant,
    /// The endpoint's identity, or what went wrong.
    pub outcome: Result<String, String>,
}

/// Requests in progress from a background thread until [`Load::stop`], or until `limit` were
/// sent.
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Vec<Reply>>>,
}

impl Load {
    /// Starts `connections` keep-alive connections from `ns` to `target`, sending at most
    /// `limit` requests in all (`None`: until stopped).
    pub fn start(ns: &Netns, target: SocketAddr, connections: usize, limit: Option<u64>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = in_netns(ns, move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(run(target, connections, limit, flag))
        });
        Load { stop, thread }
    }

    /// Stops sending and returns every reply, in completion order.
    pub fn stop(self) -> Result<Vec<Reply>> {
        self.stop.store(true, Ordering::Relaxed);
        self.wait()
    }

    /// Waits for the thread (it ends by itself once `limit` requests were sent).
    pub fn wait(self) -> Result<Vec<Reply>> {
        self.thread
            .join()
            .map_err(|_| anyhow!("load thread panicked"))?
    }
}

/// Sends `total` requests over `connections` connections from `ns` and returns the replies.
pub fn get_many(
    ns: &Netns,
    target: SocketAddr,
    connections: usize,
    total: u64,
) -> Result<Vec<Reply>> {
    Load::start(ns, target, connections, Some(total)).wait()
}

/// Replies per endpoint identity (failures under `"error: ..."`).
pub fn tally(replies: &[Reply]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for r in replies {
        let key = match &r.outcome {
            Ok(id) => id.clone(),
            Err(e) => format!("error: {e}"),
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

/// Replies whose endpoint identity starts with `prefix`.
pub fn count_from(replies: &[Reply], prefix: &str) -> u64 {
    replies
        .iter()
        .filter(|r| r.outcome.as_ref().is_ok_and(|id| id.starts_with(prefix)))
        .count() as u64
}

/// Failed replies.
pub fn failures(replies: &[Reply]) -> Vec<&Reply> {
    replies.iter().filter(|r| r.outcome.is_err()).collect()
}

async fn run(
    target: SocketAddr,
    connections: usize,
    limit: Option<u64>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<Reply>> {
    let sent = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (sent, stop) = (sent.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut replies = Vec::new();
            let mut conn: Option<http1::SendRequest<Empty<Bytes>>> = None;
            loop {
                if stop.load(Ordering::Relaxed)
                    || limit.is_some_and(|l| sent.fetch_add(1, Ordering::Relaxed) >= l)
                {
                    return replies;
                }
                let outcome =
                    match tokio::time::timeout(REQUEST_TIMEOUT, get(target, &mut conn)).await {
                        Ok(Ok(id)) => Ok(id),
                        Ok(Err(e)) => Err(format!("{e:#}")),
                        Err(_) => Err("timed out".to_owned()),
                    };
                if outcome.is_err() {
                    conn = None;
                }
                replies.push(Reply {
                    at: Instant::now(),
                    outcome,
                });
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.context("load worker")?);
    }
    all.sort_by_key(|r| r.at);
    Ok(all)
}

/// One `GET /` on `conn` (connecting first when there is none); the body is the identity.
async fn get(
    target: SocketAddr,
    conn: &mut Option<http1::SendRequest<Empty<Bytes>>>,
) -> Result<String> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(connect(target).await?);
    }
    let sender = conn.as_mut().context("no connection")?;
    sender.ready().await.context("connection not ready")?;
    let req = Request::get("/")
        .header("host", "web.shop.global")
        .body(Empty::new())?;
    let response = sender.send_request(req).await.context("request failed")?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if status != 200 {
        anyhow::bail!("status {status}: {text}");
    }
    Ok(text)
}

/// A new HTTP/1.1 connection to `target`.
pub async fn connect(target: SocketAddr) -> Result<http1::SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("connect {target}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}
