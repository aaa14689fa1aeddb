//! `peerd demo --failover`: steady GET load through one node's proxy while every endpoint of
//! one cluster is stopped and started again, with a live view of who answers and a count of
//! failed requests (the point: none).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::samples::{SERVED_BY, Samples};
use super::setup::NodePlan;

/// Concurrent client connections.
const WORKERS: usize = 4;
/// Pause between one connection's requests.
const PACE: Duration = Duration::from_millis(4);

/// Every answer: when, and by which node (`None`: the request failed).
#[derive(Default)]
struct Log {
    answers: Vec<(Instant, Option<String>)>,
}

/// What the failover run saw.
pub struct Outcome {
    pub requests: usize,
    pub failed: usize,
    /// From stopping the cluster until every answer came from elsewhere.
    pub switch: Option<Duration>,
    /// From starting it again until it answered again.
    pub back: Option<Duration>,
}

/// One GET through `vip` for `host`; the node that answered, and the body.
pub async fn get(vip: SocketAddr, host: &str) -> Result<(String, String)> {
    let mut sender = connect(vip).await?;
    request(&mut sender, host).await
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A keep-alive HTTP/1.1 connection to `vip`.
async fn connect(vip: SocketAddr) -> Result<Sender> {
    let stream = TcpStream::connect(vip)
        .await
        .with_context(|| format!("cannot connect to {vip}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn request(sender: &mut Sender, host: &str) -> Result<(String, String)> {
    let req = Request::get("/")
        .header("host", host)
        .body(Empty::new())
        .expect("valid request");
    let response = sender.send_request(req).await?;
    anyhow::ensure!(
        response.status().is_success(),
        "status {}",
        response.status()
    );
    let node = response
        .headers()
        .get(SERVED_BY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((node, String::from_utf8_lossy(&body).into_owned()))
}

async fn worker(vip: SocketAddr, host: String, log: Arc<Mutex<Log>>) {
    loop {
        let Ok(mut sender) = connect(vip).await else {
            record(&log, None);
            tokio::time::sleep(PACE).await;
            continue;
        };
        loop {
            match request(&mut sender, &host).await {
                Ok((node, _)) => record(&log, Some(node)),
                Err(_) => {
                    record(&log, None);
                    break;
                }
            }
            tokio::time::sleep(PACE).await;
        }
    }
}

fn record(log: &Mutex<Log>, node: Option<String>) {
    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
    log.answers.push((Instant::now(), node));
}

/// Runs the failover scenario against `vip` (a virtual IP of `host` on the client node),
/// stopping and restarting every endpoint of `cluster`.
pub async fn failover(
    vip: SocketAddr,
    host: &str,
    cluster: &str,
    plans: &[NodePlan],
    samples: &mut Samples,
) -> Result<Outcome> {
    let log = Arc::new(Mutex::new(Log::default()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(worker(vip, host.to_owned(), log.clone())))
        .collect();
    let in_cluster: Vec<&NodePlan> = plans.iter().filter(|p| p.cluster == cluster).collect();
    let served_by_cluster = |node: &Option<String>| {
        node.as_ref()
            .is_some_and(|n| in_cluster.iter().any(|p| &p.name == n))
    };
    let start = Instant::now();
    println!(
        "    {WORKERS} clients send GET http://{host}/ through {vip}, one request each per ~{} ms",
        PACE.as_millis()
    );
    watch(&log, start, Duration::from_secs(2)).await;
    let stopped = Instant::now();
    for p in &in_cluster {
        samples.stop(&p.name);
    }
    println!(
        "  >> stopped every endpoint of cluster {cluster} (their ports now refuse connections)"
    );
    watch(&log, start, Duration::from_secs(3)).await;
    let restarted = Instant::now();
    for p in &in_cluster {
        samples.start(p).await?;
    }
    println!("  >> started cluster {cluster}'s endpoints again");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        watch(&log, start, Duration::from_millis(500)).await;
        let back = log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answers
            .iter()
            .any(|(t, n)| *t > restarted && served_by_cluster(n));
        if back || Instant::now() > deadline {
            break;
        }
    }
    watch(&log, start, Duration::from_secs(1)).await;
    for w in workers {
        w.abort();
    }
    let log = log.lock().unwrap_or_else(|e| e.into_inner());
    let answers = &log.answers;
    // The switch is done at the last answer from the stopped cluster (or failure) after the stop.
    let switch = answers
        .iter()
        .filter(|(t, n)| *t > stopped && *t < restarted && (n.is_none() || served_by_cluster(n)))
        .map(|(t, _)| *t - stopped)
        .max()
        .or(Some(Duration::ZERO));
    let back = answers
        .iter()
        .find(|(t, n)| *t > restarted && served_by_cluster(n))
        .map(|(t, _)| *t - restarted);
    Ok(Outcome {
        requests: answers.len(),
        failed: answers.iter().filter(|(_, n)| n.is_none()).count(),
        switch,
        back,
    })
}

/// Prints, every 500 ms for `span`, who answered in that window.
async fn watch(log: &Mutex<Log>, start: Instant, span: Duration) {
    let end = Instant::now() + span;
    while Instant::now() < end {
        let from = Instant::now();
        tokio::time::sleep(Duration::from_millis(500).min(end - Instant::now())).await;
        let log = log.lock().unwrap_or_else(|e| e.into_inner());
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        let mut failed = 0;
        let mut total = 0;
        for (_, node) in log.answers.iter().rev().take_while(|(t, _)| *t >= from) {
            total += 1;
            match node {
                Some(n) => *by.entry(n.as_str()).or_default() += 1,
                None => failed += 1,
            }
        }
        let shares: Vec<String> = by
            .iter()
            .map(|(n, c)| format!("{n} {:>3.0}%", 100.0 * *c as f64 / total.max(1) as f64))
            .collect();
        println!(
            "    t={:>5.1}s  {:>4} requests  {}  failed {failed}",
            start.elapsed().as_secs_f64(),
            total,
            shares.join("  ")
        );
    }
}
