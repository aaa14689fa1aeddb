//! A minimal "hello" HTTP endpoint for benchmarks: HTTP/1.1 and h2c (prior knowledge) on one
//! port, a fixed 13-byte body.
//!
//!     cargo run --release -p l7proxy --example hello -- 127.0.0.1:18080 [THREADS]
//!
//! One thread (the default) runs on a current-thread runtime. On a multi-thread runtime, even
//! with one worker, the LIFO slot runs hyper's HTTP/2 connection task right after each stream
//! task that wakes it, so every response went out in a write of its own (1.00 `writev` per
//! request, against 0.04–0.10 now, with the requests that arrive in one read answered in one
//! write): the endpoint, not the proxy in front of it, was what a benchmark measured.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:18080".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let mut runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    runtime.enable_all().build()?.block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("hello listening on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let service = service_fn(hello);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn hello(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(
        b"hello, world\n",
    ))))
}
