//! Traffic from this process inside a namespace: a thread enters the namespace with `setns`, so
//! every socket it creates lives there. A TCP sink and sender compare what arrived with what was
//! sent by byte count and checksum.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::netns::Netns;

/// How long a transfer may go without progress before it is an error.
const STALL: Duration = Duration::from_secs(30);
const CHUNK: usize = 64 * 1024;

/// Runs `f` on a new thread that first enters `ns` (`setns(CLONE_NEWNET)`).
pub fn in_netns<T, F>(ns: &Netns, f: F) -> JoinHandle<Result<T>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let (path, name) = (ns.path(), ns.name().to_owned());
    std::thread::spawn(move || {
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the fd is a valid, open namespace file for the duration of the call; setns only
        // changes this thread's network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let err = std::io::Error::last_os_error();
            bail!("setns into {name}: {err}");
        }
        f()
    })
}

/// What went through a TCP connection: its length and [`Checksum`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes sent or received.
    pub bytes: u64,
    /// Checksum of those bytes, in order.
    pub checksum: u64,
}

/// 64-bit FNV-1a over a byte stream: computed the same way by sender and receiver.
#[derive(Debug, Clone, Copy)]
pub struct Checksum(u64);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
}

impl Checksum {
    /// Feeds the next bytes of the stream.
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The checksum of everything fed so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// Deterministic pseudo-random bytes (splitmix64) from a seed.
#[derive(Debug, Clone)]
pub struct DataStream(u64);

impl DataStream {
    /// A stream starting at `seed`.
    pub fn new(seed: u64) -> Self {
        DataStream(seed)
    }

    /// Fills `buf` with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// A TCP listener in a namespace that accepts one connection and reads it to EOF.
#[derive(Debug)]
pub struct TcpSink {
    received: Arc<AtomicU64>,
    handle: JoinHandle<Result<Transfer>>,
}

impl TcpSink {
    /// Binds `bind` inside `ns` (returns once bound) and starts accepting in the background.
    pub fn start(ns: &Netns, bind: SocketAddr) -> Result<TcpSink> {
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = in_netns(ns, move || {
            let listener = TcpListener::bind(bind);
            let _ = tx.send(listener.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            receive(listener?, &counter)
        });
        match rx.recv() {
            Ok(Ok(())) => Ok(TcpSink { received, handle }),
            Ok(Err(e)) => bail!("tcp sink cannot bind {bind} in {}: {e}", ns.name()),
            Err(_) => Err(join(handle)
                .err()
                .unwrap_or_else(|| anyhow!("tcp sink thread died"))),
        }
    }

    /// Bytes received so far.
    pub fn progress(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The live byte counter, for watching a long transfer.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.received.clone()
    }

    /// Waits up to `timeout` for the connection to reach EOF; returns what arrived.
    pub fn wait(self, timeout: Duration) -> Result<Transfer> {
        let deadline = Instant::now() + timeout;
        while !self.handle.is_finished() {
            if Instant::now() >= deadline {
                bail!(
                    "tcp sink still receiving after {timeout:?} ({} bytes so far)",
                    self.progress()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        join(self.handle)
    }
}

fn receive(listener: TcpListener, counter: &AtomicU64) -> Result<Transfer> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + STALL;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("tcp sink accept"),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(STALL))?;
    let (mut sum, mut bytes, mut buf) = (Checksum::default(), 0u64, vec![0u8; CHUNK]);
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("tcp sink read after {bytes} bytes")),
        };
        sum.update(&buf[..n]);
        bytes += n as u64;
        counter.store(bytes, Ordering::Relaxed);
    }
    Ok(Transfer {
        bytes,
        checksum: sum.value(),
    })
}

/// Connects from inside `ns` to `dst`, sends `bytes` bytes of [`DataStream`] `seed`, closes,
/// and waits for the receiver to close too. Returns what was sent.
pub fn tcp_send(ns: &Netns, dst: SocketAddr, bytes: u64, seed: u64) -> Result<Transfer> {
    tcp_send_paced(ns, dst, bytes, seed, None)
}

/// [`tcp_send`] at no more than `rate` bytes per second (when given), so that a transfer lasts
/// long enough to break something in the middle of it.
pub fn tcp_send_paced(
    ns: &Netns,
    dst: SocketAddr,
    bytes: u64,
    seed: u64,
    rate: Option<u64>,
) -> Result<Transfer> {
    join(in_netns(ns, move || send(dst, bytes, seed, rate)))
}

fn send(dst: SocketAddr, bytes: u64, seed: u64, rate: Option<u64>) -> Result<Transfer> {
    let mut stream = TcpStream::connect_timeout(&dst, Duration::from_secs(10))
        .with_context(|| format!("tcp connect to {dst}"))?;
    stream.set_write_timeout(Some(STALL))?;
    stream.set_read_timeout(Some(STALL))?;
    let (mut data, mut sum, mut sent) = (DataStream::new(seed), Checksum::default(), 0u64);
    let (mut buf, start) = (vec![0u8; CHUNK], Instant::now());
    while sent < bytes {
        let n = CHUNK.min((bytes - sent) as usize);
        data.fill(&mut buf[..n]);
        stream
            .write_all(&buf[..n])
            .with_context(|| format!("tcp send to {dst} after {sent} bytes"))?;
        sum.update(&buf[..n]);
        sent += n as u64;
        if let Some(rate) = rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(ahead); // pacing, not waiting for readiness
            }
        }
    }
    stream.shutdown(Shutdown::Write)?;
    // The sink closes after reading EOF: once we see its EOF, every byte was delivered.
    let n = stream
        .read(&mut buf)
        .context("waiting for the receiver to close")?;
    if n != 0 {
        bail!("receiver sent {n} unexpected bytes");
    }
    Ok(Transfer {
        bytes: sent,
        checksum: sum.value(),
    })
}

fn join<T>(handle: JoinHandle<Result<T>>) -> Result<T> {
    handle
        .join()
        .map_err(|_| anyhow!("traffic thread panicked"))?
}
