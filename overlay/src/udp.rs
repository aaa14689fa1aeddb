//! The underlay UDP socket: batched receive (`recvmmsg`, GRO) and segmented send (GSO)
//! through quinn-udp, large socket buffers, and one dual-stack socket for IPv4 and IPv6 peers.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

pub use quinn_udp::BATCH_SIZE as RECV_BATCH;

/// Receive buffer asked for (firezone saw `RcvbufErrors` below this).
const RECV_BUFFER: usize = 16 << 20;
/// Send buffer asked for.
const SEND_BUFFER: usize = 4 << 20;
/// Largest UDP payload the kernel segments in one GSO send.
const MAX_GSO_BYTES: usize = 65_000;

/// Why the socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process holds the port.
    #[error("UDP port {port} is already in use")]
    PortInUse {
        /// The port asked for.
        port: u16,
    },
    /// Any other failure.
    #[error("cannot open UDP port {port}: {source}")]
    Io {
        /// The port asked for.
        port: u16,
        /// The system error.
        source: io::Error,
    },
}

/// A bound, non-blocking UDP socket with quinn-udp's batching state.
pub struct UdpIo {
    socket: UdpSocket,
    state: UdpSocketState,
    dual_stack: bool,
}

impl UdpIo {
    /// Binds `port` on every address: one dual-stack IPv6 socket, or IPv4 only where IPv6 is
    /// unavailable.
    pub fn bind(port: u16) -> Result<Self, BindError> {
        let io_err = |source: io::Error| match source.kind() {
            io::ErrorKind::AddrInUse => BindError::PortInUse { port },
            _ => BindError::Io { port, source },
        };
        let (socket, dual_stack) =
            match bind_socket(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)) {
                Ok(s) => (s, true),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(io_err(e)),
                Err(_) => (
                    bind_socket(SocketAddr::new([0, 0, 0, 0].into(), port)).map_err(io_err)?,
                    false,
                ),
            };
        let state = UdpSocketState::new(UdpSockRef::from(&socket)).map_err(io_err)?;
        set_buffer(&socket, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, RECV_BUFFER);
        set_buffer(&socket, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, SEND_BUFFER);
        Ok(Self {
            socket,
            state,
            dual_stack,
        })
    }

    /// The bound address (the port is the one to tell peers).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// How many datagrams the kernel may coalesce into one receive buffer (GRO).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Most segments in one GSO send of `segment_size`-byte datagrams.
    pub fn max_segments(&self, segment_size: usize) -> usize {
        self.state
            .max_gso_segments()
            .min(MAX_GSO_BYTES / segment_size.max(1))
            .max(1)
    }

    /// Receives a batch into `bufs`; each `meta[i].stride` splits a GRO buffer into datagrams.
    /// Waits up to `timeout` for the first datagram; returns 0 on timeout.
    pub fn recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
        timeout: Duration,
    ) -> io::Result<usize> {
        loop {
            match self.state.recv(UdpSockRef::from(&self.socket), bufs, meta) {
                Ok(n) => {
                    for m in &mut meta[..n] {
                        m.addr = canonical(m.addr);
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !wait(self.socket.as_raw_fd(), libc::POLLIN, timeout)? {
                        return Ok(0);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `contents` to `to`: one datagram, or `contents.len() / segment` datagrams of
    /// `segment` bytes (the last may be shorter) in one GSO call. Waits while the socket buffer
    /// is full; splits the batch itself where the kernel refuses GSO.
    pub fn send(&self, to: SocketAddr, contents: &[u8], segment: Option<usize>) -> io::Result<()> {
        let destination = if self.dual_stack { mapped(to) } else { to };
        let segment = segment.filter(|&s| s < contents.len());
        let transmit = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        loop {
            match self
                .state
                .try_send(UdpSockRef::from(&self.socket), &transmit)
            {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait(
                        self.socket.as_raw_fd(),
                        libc::POLLOUT,
                        Duration::from_millis(100),
                    )?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if segment.is_some()
                        && matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL)) =>
                {
                    // Some NICs and tunnels refuse UDP GSO at send time: fall back per datagram.
                    for chunk in contents.chunks(segment.unwrap_or(contents.len())) {
                        self.send(to, chunk, None)?;
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for UdpIo {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

fn bind_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Asks for `bytes` of buffer, past `net.core.*mem_max` when privileged.
fn set_buffer(socket: &UdpSocket, force: libc::c_int, plain: libc::c_int, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for option in [force, plain] {
        // SAFETY: setsockopt reads a c_int of the given size from a live stack value.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// Waits for `events` on `fd`; false on timeout.
pub(crate) fn wait(fd: libc::c_int, events: libc::c_short, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd on the stack.
    match unsafe { libc::poll(&raw mut pfd, 1, ms) } {
        -1 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn mapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(v4) => SocketAddr::new(v4.to_ipv6_mapped().into(), addr.port()),
        IpAddr::V6(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gso_batches_arrive_as_separate_datagrams() {
        let rx = UdpIo::bind(0).unwrap();
        let tx = UdpIo::bind(0).unwrap();
        let port = rx.local_addr().unwrap().port();
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // Ten 1000-byte datagrams and a short tail, in one call.
        let mut contents = Vec::new();
        for i in 0..10u8 {
            contents.extend(std::iter::repeat_n(i, 1000));
        }
        contents.extend_from_slice(b"tail");
        tx.send(to, &contents, Some(1000)).unwrap();

        let mut storage = vec![vec![0u8; 65536]; RECV_BATCH];
        let mut meta = vec![RecvMeta::default(); RECV_BATCH];
        let mut got: Vec<Vec<u8>> = Vec::new();
        while got.len() < 11 {
            let mut slices: Vec<IoSliceMut> =
                storage.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let n = rx
                .recv(&mut slices, &mut meta, Duration::from_secs(5))
                .unwrap();
            assert!(n > 0, "datagrams arrive");
            for (m, buf) in meta[..n].iter().zip(&storage) {
                assert_eq!(
                    m.addr.ip(),
                    "127.0.0.1".parse::<IpAddr>().unwrap(),
                    "IPv4 shown unmapped"
                );
                got.extend(buf[..m.len].chunks(m.stride).map(<[u8]>::to_vec));
            }
        }
        assert_eq!(got.len(), 11);
        assert!(
            got[..10]
                .iter()
                .enumerate()
                .all(|(i, d)| d.len() == 1000 && d[0] == i as u8)
        );
        assert_eq!(got[10], b"tail");
    }

    #[test]
    fn a_taken_port_is_reported_plainly() {
        let first = UdpIo::bind(0).unwrap();
        let port = first.local_addr().unwrap().port();
        let err = UdpIo::bind(port).err().expect("second bind fails");
        assert!(matches!(err, BindError::PortInUse { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("UDP port {port} is already in use")
        );
    }
}
