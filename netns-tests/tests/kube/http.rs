//! A plain HTTP/1.1 server in a pod namespace and a client for it, on std sockets from threads
//! that entered a namespace: enough HTTP to tell which pod answered a request.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use netns_tests::{Netns, in_netns};

/// How long one exchange may take on either side.
const IO_WAIT: Duration = Duration::from_secs(3);
/// How often the server checks whether it should stop.
const TICK: Duration = Duration::from_millis(20);

/// A server answering every request with `200` and a fixed body. Stops when dropped.
pub struct PodServer {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl PodServer {
    /// Listens on `bind` inside `ns`; returns once the socket is bound.
    pub fn start(ns: &Netns, bind: SocketAddr, body: &str) -> Result<PodServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (flag, count, body) = (stop.clone(), served.clone(), body.to_owned());
        let thread = in_netns(ns, move || {
            let bound = TcpListener::bind(bind).and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            });
            let listener = match bound {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("cannot listen on {bind}: {e}")));
                    return Ok(());
                }
            };
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        // One connection at a time is plenty for these tests; a bad one is
                        // the client's problem, not the server's.
                        if answer(stream, &body).is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
                    Err(e) => return Err(e).context("accept"),
                }
            }
            Ok(())
        });
        match rx.recv_timeout(IO_WAIT) {
            Ok(Ok(())) => Ok(PodServer {
                stop,
                served,
                thread: Some(thread),
            }),
            Ok(Err(e)) => bail!("{e}"),
            Err(_) => bail!("the server thread in {} never started", ns.name()),
        }
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for PodServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request's head and answers it; the connection closes after the response.
fn answer(mut stream: TcpStream, body: &str) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_WAIT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            bail!("the client closed before its request ended");
        }
        head.extend_from_slice(&buf[..n]);
    }
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    Ok(())
}

/// A response: status code and body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Everything after the head.
    pub body: String,
}

/// `GET path` with `Host: host` to `addr`, from a thread inside `ns`.
pub fn get(ns: &Netns, addr: SocketAddr, host: &str, path: &str) -> Result<Response> {
    let request = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    in_netns(ns, move || {
        let mut stream = TcpStream::connect_timeout(&addr, IO_WAIT)
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_read_timeout(Some(IO_WAIT))?;
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .with_context(|| format!("reading the response from {addr}"))?;
        parse(&String::from_utf8_lossy(&raw))
    })
    .join()
    .map_err(|_| anyhow!("the client thread panicked"))?
}

fn parse(raw: &str) -> Result<Response> {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .with_context(|| format!("no complete response: {raw:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line: {head:?}"))?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}
