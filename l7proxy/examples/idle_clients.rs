//! Opens many keep-alive client connections, sends one request on each, then holds them idle
//! (for the memory benchmark).
//!
//!     cargo run --release -p l7proxy --example idle_clients -- 127.0.0.3:8080 10000 HOLD_SECS [silent|h2]
//!
//! With `silent`, the connections send nothing at all; with `h2`, each speaks HTTP/2 with prior
//! knowledge (one GET on stream 1, then nothing).

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
    let mode = match args.next().as_deref() {
        None => Mode::Http1,
        Some("silent") => Mode::Silent,
        Some("h2") => Mode::Http2,
        Some(other) => {
            let error = format!("unknown mode {other:?} (silent or h2)");
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, error));
        }
    };
    support::raise_nofile_limit();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(addr, count, Duration::from_secs(hold), mode))
}

#[derive(Clone, Copy)]
enum Mode {
    Http1,
    Silent,
    Http2,
}

async fn run(addr: SocketAddr, count: usize, hold: Duration, mode: Mode) -> std::io::Result<()> {
    let mut open = Vec::with_capacity(count);
    let mut failed = 0;
    for batch in (0..count).collect::<Vec<_>>().chunks(250) {
        let mut tasks = Vec::new();
        for _ in batch {
            tasks.push(tokio::spawn(one(addr, mode)));
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

async fn one(addr: SocketAddr, mode: Mode) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    match mode {
        Mode::Silent => return Ok(stream),
        Mode::Http2 => {
            one_h2(&mut stream).await?;
            return Ok(stream);
        }
        Mode::Http1 => {}
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

/// The preface, an empty SETTINGS frame, and a GET for `/` on stream 1 (HPACK: `:method GET`,
/// `:scheme http`, `:path /` from the static table, `:authority` a literal), then reads frames,
/// acknowledging the server's SETTINGS, until stream 1 ends.
async fn one_h2(stream: &mut TcpStream) -> std::io::Result<()> {
    const AUTHORITY: &[u8] = b"bench.global";
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&frame_head(0, 0x4, 0, 0));
    let mut block = vec![0x82, 0x86, 0x84, 0x01, AUTHORITY.len() as u8];
    block.extend_from_slice(AUTHORITY);
    // END_STREAM | END_HEADERS
    out.extend_from_slice(&frame_head(block.len(), 0x1, 0x5, 1));
    out.extend_from_slice(&block);
    stream.write_all(&out).await?;
    loop {
        let mut head = [0u8; 9];
        stream.read_exact(&mut head).await?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await?;
        match kind {
            // SETTINGS without ACK: acknowledge.
            0x4 if flags & 0x1 == 0 => stream.write_all(&frame_head(0, 0x4, 0x1, 0)).await?,
            // DATA or HEADERS with END_STREAM on our stream: the response is complete.
            0x0 | 0x1 if id == 1 && flags & 0x1 != 0 => return Ok(()),
            // GOAWAY or RST_STREAM.
            0x7 | 0x3 => return Err(std::io::ErrorKind::ConnectionReset.into()),
            _ => {}
        }
    }
}

fn frame_head(len: usize, kind: u8, flags: u8, stream: u32) -> [u8; 9] {
    let len = u32::try_from(len).expect("small frame").to_be_bytes();
    let id = stream.to_be_bytes();
    [
        len[1], len[2], len[3], kind, flags, id[0], id[1], id[2], id[3],
    ]
}
