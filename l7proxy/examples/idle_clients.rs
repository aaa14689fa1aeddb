//! Opens many keep-alive client connections, sends one request on each, then holds them idle
//! (for the memory benchmark).
//!
//!     cargo run --release -p l7proxy --example idle_clients -- 127.0.0.3:8080 10000 HOLD_SECS [silent]
//!
//! With `silent`, the connections send nothing at all.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.3:8080".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let count: usize = args.next().and_then(|c| c.parse().ok()).unwrap_or(10_000);
    let hold: u64 = args.next().and_then(|c| c.parse().ok()).unwrap_or(30);
    let silent = args.next().as_deref() == Some("silent");
    support::raise_nofile_limit();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(addr, count, Duration::from_secs(hold), silent))
}

async fn run(addr: SocketAddr, count: usize, hold: Duration, silent: bool) -> std::io::Result<()> {
    let mut open = Vec::with_capacity(count);
    let mut failed = 0;
    for batch in (0..count).collect::<Vec<_>>().chunks(250) {
        let mut tasks = Vec::new();
        for _ in batch {
            tasks.push(tokio::spawn(one(addr, silent)));
        }
        for task in tasks {
            match task.await {
                Ok(Ok(stream)) => open.push(stream),
                _ => failed += 1,
            }
        }
    }
    println!("open {} failed {failed}", open.len());
    tokio::time::sleep(hold).await;
    Ok(())
}

async fn one(addr: SocketAddr, silent: bool) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    if silent {
        return Ok(stream);
    }
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: bench.global\r\n\r\n")
        .await?;
    // Read until the end of the (small, content-length framed) response.
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(head_end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= head_end + 4 + length {
                return Ok(stream);
            }
        }
    }
}
