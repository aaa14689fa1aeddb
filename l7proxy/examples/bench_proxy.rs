//! The proxy serving one route, for benchmarks: `VIP:8080` (http) and `VIP:8081` (http2) in
//! front of one endpoint.
//!
//!     cargo run --release -p l7proxy --example bench_proxy -- 127.0.0.3 127.0.0.1:18080 [THREADS]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use l7proxy::{
    Backend, Locality, Policy, Protocol, Proxy, ProxyConfig, ServicePort, ServiceRoute, TcpDialer,
};

fn main() -> std::io::Result<()> {
    let invalid =
        |e: std::net::AddrParseError| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    let mut args = std::env::args().skip(1);
    let vip: IpAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.3".into())
        .parse()
        .map_err(invalid)?;
    let backend: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:18080".into())
        .parse()
        .map_err(invalid)?;
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    support::raise_nofile_limit();
    // One core: a current-thread runtime, as linkerd2-proxy does; more: work stealing.
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(vip, backend))
}

async fn run(vip: IpAddr, backend: SocketAddr) -> std::io::Result<()> {
    let proxy = Proxy::new(Locality::default(), Arc::new(TcpDialer));
    let port = |name: &str, port, protocol| ServicePort {
        name: name.into(),
        port,
        protocol,
    };
    let failures = proxy
        .update(ProxyConfig {
            services: vec![ServiceRoute {
                name: "bench.global".into(),
                vip,
                ports: vec![
                    port("http", 8080, Protocol::Http),
                    port("h2", 8081, Protocol::Http2),
                ],
                endpoints: vec![Backend {
                    address: backend.ip(),
                    ports: vec![
                        ("http".into(), backend.port()),
                        ("h2".into(), backend.port()),
                    ],
                    locality: Locality::default(),
                    ready: true,
                }],
                policy: Policy::default(),
            }],
        })
        .await;
    if let Some((addr, error)) = failures.into_iter().next() {
        return Err(std::io::Error::new(
            error.kind(),
            format!("{addr}: {error}"),
        ));
    }
    println!("bench_proxy listening on {vip}:8080 (http) and {vip}:8081 (http2)");
    tokio::signal::ctrl_c().await?;
    let mut metrics = String::new();
    proxy.encode_metrics(&mut metrics);
    eprintln!(
        "{}",
        metrics
            .lines()
            .filter(|l| l.starts_with("requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}
