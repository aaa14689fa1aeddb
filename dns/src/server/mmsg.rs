//! Batched UDP: `recvmmsg` takes every queued query in one system call and `sendmmsg` returns
//! their answers in one more, so a burst costs two calls instead of two per query.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Datagrams per system call.
pub(crate) const BATCH: usize = 32;
/// Per-datagram receive buffer. Longer queries arrive cut (and are counted as malformed): a
/// real query with one question is at most a few hundred bytes.
const BUF_LEN: usize = 4096;

/// Receive buffers and source addresses for one batch; reused across batches.
pub(crate) struct RecvBatch {
    bufs: Vec<[u8; BUF_LEN]>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    lens: Vec<usize>,
    cut: Vec<bool>,
    count: usize,
}

/// One received datagram.
pub(crate) struct Received<'b> {
    pub packet: &'b [u8],
    pub src: Option<SocketAddr>,
    /// Longer than the buffer: only a prefix arrived.
    pub cut: bool,
}

impl RecvBatch {
    pub fn new() -> Self {
        Self {
            bufs: vec![[0; BUF_LEN]; BATCH],
            // SAFETY: all-zero is a valid `sockaddr_storage` (an AF_UNSPEC address).
            addrs: vec![unsafe { zeroed() }; BATCH],
            addr_lens: vec![0; BATCH],
            lens: vec![0; BATCH],
            cut: vec![false; BATCH],
            count: 0,
        }
    }

    /// Waits until the socket is readable, then takes up to [`BATCH`] datagrams.
    pub async fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        loop {
            socket.readable().await?;
            match socket.try_io(Interest::READABLE, || self.recv_now(socket)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    fn recv_now(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|buf| libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: BUF_LEN,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(self.addrs.iter_mut())
            .map(|(iov, addr)| {
                // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
                let mut msg: libc::mmsghdr = unsafe { zeroed() };
                msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                msg.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                msg.msg_hdr.msg_iov = iov;
                msg.msg_hdr.msg_iovlen = 1;
                msg
            })
            .collect();
        // SAFETY: `msgs` holds BATCH headers whose name and iovec pointers point into `self`'s
        // buffers and `iovs`, all alive and unaliased for the duration of the call.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let count = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for (i, msg) in msgs.iter().take(count).enumerate() {
            self.lens[i] = (msg.msg_len as usize).min(BUF_LEN);
            self.cut[i] = msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.addr_lens[i] = msg.msg_hdr.msg_namelen;
        }
        self.count = count;
        Ok(count)
    }

    /// Datagram `i` of the last batch.
    pub fn get(&self, i: usize) -> Received<'_> {
        Received {
            packet: self.bufs[i].get(..self.lens[i]).unwrap_or_default(),
            src: socket_addr(&self.addrs[i]),
            cut: self.cut[i],
        }
    }

    /// Sends `replies` (datagram index, bytes) back to where each query came from; returns
    /// how many went out before the socket's buffer filled.
    pub fn send(&self, socket: &UdpSocket, replies: &[(usize, Vec<u8>)]) -> usize {
        let mut iovs: Vec<libc::iovec> = replies
            .iter()
            .map(|(_, bytes)| libc::iovec {
                iov_base: bytes.as_ptr().cast_mut().cast(),
                iov_len: bytes.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = replies
            .iter()
            .zip(iovs.iter_mut())
            .map(|((slot, _), iov)| {
                // SAFETY: all-zero is a valid `mmsghdr`.
                let mut msg: libc::mmsghdr = unsafe { zeroed() };
                msg.msg_hdr.msg_name = (&self.addrs[*slot] as *const libc::sockaddr_storage)
                    .cast_mut()
                    .cast();
                msg.msg_hdr.msg_namelen = self.addr_lens[*slot];
                msg.msg_hdr.msg_iov = iov;
                msg.msg_hdr.msg_iovlen = 1;
                msg
            })
            .collect();
        let Ok(len) = libc::c_uint::try_from(msgs.len()) else {
            return 0;
        };
        // SAFETY: each header points at a live reply buffer (read only by the kernel) and at
        // an address filled in by `recvmmsg`; all outlive the call.
        let sent = socket.try_io(Interest::WRITABLE, || {
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    len,
                    libc::MSG_DONTWAIT,
                )
            };
            usize::try_from(n).map_err(|_| io::Error::last_os_error())
        });
        sent.unwrap_or(0)
    }
}

/// The IPv4 or IPv6 address in `storage`, as filled in by the kernel.
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    let ptr = storage as *const libc::sockaddr_storage;
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, which it can contain.
            let addr = unsafe { &*ptr.cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(addr.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a `sockaddr_in6`, which it can contain.
            let addr = unsafe { &*ptr.cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
            let port = u16::from_be(addr.sin6_port);
            Some(SocketAddrV6::new(ip, port, addr.sin6_flowinfo, addr.sin6_scope_id).into())
        }
        _ => None,
    }
}
