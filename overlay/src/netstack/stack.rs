//! State shared between the stack's thread and the application handles: the smoltcp interface
//! and sockets behind one mutex, port bookkeeping, listeners, sockets awaiting removal, and the
//! eventfd that wakes the thread.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpAddress, IpCidr, IpListenEndpoint};
use tokio::sync::Notify;

use crate::device::OtherSink;
use crate::node::Node;
use crate::udp::UdpIo;

/// Ephemeral ports handed to `connect`, `listen(:0)` and `bind_udp(:0)` (RFC 6335 §6).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;
/// How long a socket its owner dropped may take to finish closing before it is aborted
/// (Linux's `tcp_fin_timeout`).
pub(super) const ORPHAN_LINGER: Duration = Duration::from_secs(60);

/// Everything the thread and the handles share.
pub(crate) struct Shared {
    pub(super) stack: Mutex<Stack>,
    pub(super) node: Arc<Mutex<Node>>,
    pub(super) udp: Arc<UdpIo>,
    pub(super) other: Option<OtherSink>,
    pub(super) kick: Kick,
    pub(super) stopped: AtomicBool,
}

impl Shared {
    /// Wakes the stack's thread: a socket has data or a state change to send.
    pub(super) fn kick(&self) {
        self.kick.raise();
    }

    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.kick.raise();
    }

    /// Fails once the stack has stopped: nothing would ever move packets again.
    pub(super) fn check_running(&self) -> io::Result<()> {
        if self.stopped.load(Ordering::Relaxed) {
            Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "netstack stopped",
            ))
        } else {
            Ok(())
        }
    }
}

/// Locks the stack; a panic in one handle must not take the data path down with it.
pub(super) fn lock(stack: &Mutex<Stack>) -> MutexGuard<'_, Stack> {
    stack
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The smoltcp side: interface, sockets and what the handles need to find theirs.
pub(crate) struct Stack {
    pub(super) iface: Interface,
    pub(super) sockets: SocketSet<'static>,
    pub(super) tcp_buffer: usize,
    tcp_ports: BTreeSet<u16>,
    udp_ports: BTreeSet<u16>,
    next_port: u16,
    /// Listeners by port.
    pub(super) listeners: HashMap<u16, Listener>,
    /// Sockets whose owner is gone, with the port to free and when to give up on them.
    orphans: Vec<Orphan>,
}

/// The sockets of one listening port that were not yet accepted.
pub(super) struct Listener {
    pub(super) endpoint: IpListenEndpoint,
    pub(super) handles: Vec<SocketHandle>,
    waker: Waker,
}

struct Orphan {
    handle: SocketHandle,
    /// The port to free, and whether it is a UDP port (else TCP).
    port: Option<(bool, u16)>,
    deadline: Instant,
}

/// Wakes whoever waits in `accept` (smoltcp keeps one waker per socket; a listener has many).
pub(super) struct Signal {
    pub(super) notify: Notify,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.notify.notify_one();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.notify.notify_one();
    }
}

impl Stack {
    pub(super) fn new(iface: Interface, tcp_buffer: usize) -> Self {
        Self {
            iface,
            sockets: SocketSet::new(Vec::new()),
            tcp_buffer,
            tcp_ports: BTreeSet::new(),
            udp_ports: BTreeSet::new(),
            next_port: *EPHEMERAL.start() + rand::random::<u16>() % 1000,
            listeners: HashMap::new(),
            orphans: Vec::new(),
        }
    }

    /// The interface addresses.
    pub(super) fn addresses(&self) -> Vec<IpAddr> {
        self.iface
            .ip_addrs()
            .iter()
            .map(|c| c.address().into())
            .collect()
    }

    /// The stack's first address of `remote`'s family.
    pub(super) fn source_for(&self, remote: IpAddr) -> Option<IpAddr> {
        self.iface
            .ip_addrs()
            .iter()
            .map(IpCidr::address)
            .map(IpAddr::from)
            .find(|a| a.is_ipv4() == remote.is_ipv4())
    }

    /// Checks that `ip` is one of ours or unspecified; returns the smoltcp form (`None` = any).
    pub(super) fn local_ip(&self, ip: IpAddr) -> io::Result<Option<IpAddress>> {
        if ip.is_unspecified() {
            return Ok(None);
        }
        if self.iface.has_ip_addr(IpAddress::from(ip)) {
            Ok(Some(ip.into()))
        } else {
            Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{ip} is not an address of this netstack"),
            ))
        }
    }

    /// Reserves `port` (or an ephemeral one for 0) for TCP or UDP.
    pub(super) fn reserve_port(&mut self, udp: bool, port: u16) -> io::Result<u16> {
        let used = if udp {
            &mut self.udp_ports
        } else {
            &mut self.tcp_ports
        };
        if port != 0 {
            return if used.insert(port) {
                Ok(port)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("port {port} is in use"),
                ))
            };
        }
        let span = EPHEMERAL.end() - EPHEMERAL.start() + 1;
        for _ in 0..span {
            let candidate = self.next_port;
            self.next_port = if candidate == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                candidate + 1
            };
            if used.insert(candidate) {
                return Ok(candidate);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free ephemeral port",
        ))
    }

    pub(super) fn release_port(&mut self, udp: bool, port: u16) {
        if udp {
            self.udp_ports.remove(&port);
        } else {
            self.tcp_ports.remove(&port);
        }
    }

    /// A TCP socket with this stack's buffers, Cubic, and no Nagle delay (the thread already
    /// coalesces writes that arrive between two polls).
    pub(super) fn new_tcp(&self) -> tcp::Socket<'static> {
        let rx = tcp::SocketBuffer::new(vec![0; self.tcp_buffer]);
        let tx = tcp::SocketBuffer::new(vec![0; self.tcp_buffer]);
        let mut socket = tcp::Socket::new(rx, tx);
        socket.set_congestion_control(tcp::CongestionControl::Cubic);
        socket.set_nagle_enabled(false);
        socket
    }

    /// Registers a listener for `endpoint.port` with [`super::LISTEN_SPARE`] listening sockets.
    pub(super) fn add_listener(&mut self, endpoint: IpListenEndpoint) -> io::Result<Arc<Signal>> {
        let signal = Arc::new(Signal {
            notify: Notify::new(),
        });
        let waker = Waker::from(Arc::clone(&signal));
        self.listeners.insert(
            endpoint.port,
            Listener {
                endpoint,
                handles: Vec::new(),
                waker,
            },
        );
        self.replenish(endpoint.port, 0)?;
        Ok(signal)
    }

    /// Keeps `LISTEN_SPARE + extra` sockets listening on `port`, within the backlog.
    pub(super) fn replenish(&mut self, port: u16, extra: usize) -> io::Result<()> {
        let Some(listener) = self.listeners.get(&port) else {
            return Ok(());
        };
        let (endpoint, waker) = (listener.endpoint, listener.waker.clone());
        let listening = listener
            .handles
            .iter()
            .filter(|&&h| self.sockets.get::<tcp::Socket>(h).state() == tcp::State::Listen)
            .count();
        let room = super::LISTEN_BACKLOG.saturating_sub(listener.handles.len());
        let want = (super::LISTEN_SPARE + extra)
            .saturating_sub(listening)
            .min(room);
        for _ in 0..want {
            let mut socket = self.new_tcp();
            socket
                .listen(endpoint)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            // An `accept` may be waiting already: it must hear about this socket too.
            socket.register_recv_waker(&waker);
            let handle = self.sockets.add(socket);
            if let Some(listener) = self.listeners.get_mut(&port) {
                listener.handles.push(handle);
            }
        }
        Ok(())
    }

    /// Takes one connection that completed its handshake on `port`, replacing it with a fresh
    /// listening socket. Without one, arms the listener's waker on every pending socket.
    pub(super) fn take_accepted(&mut self, port: u16) -> io::Result<Option<SocketHandle>> {
        let Some(listener) = self.listeners.get_mut(&port) else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "listener closed",
            ));
        };
        let mut found = None;
        let mut i = 0;
        while i < listener.handles.len() {
            let h = listener.handles[i];
            let socket = self.sockets.get_mut::<tcp::Socket>(h);
            match socket.state() {
                tcp::State::Listen | tcp::State::SynReceived => {
                    socket.register_recv_waker(&listener.waker);
                    i += 1;
                }
                tcp::State::Closed | tcp::State::TimeWait => {
                    // Reset (or finished) before anyone accepted it.
                    listener.handles.swap_remove(i);
                    self.sockets.remove(h);
                }
                _ => {
                    found = Some(listener.handles.remove(i));
                    break;
                }
            }
        }
        if found.is_some() {
            self.replenish(port, 0)?;
        }
        Ok(found)
    }

    /// Drops a listener: listening sockets go at once, unaccepted connections are reset.
    pub(super) fn remove_listener(&mut self, port: u16) {
        let Some(listener) = self.listeners.remove(&port) else {
            return;
        };
        for h in listener.handles {
            let socket = self.sockets.get_mut::<tcp::Socket>(h);
            if socket.state() == tcp::State::Listen {
                self.sockets.remove(h);
            } else {
                socket.abort();
                self.orphan_tcp(h, None);
            }
        }
        self.release_port(false, port);
    }

    /// Hands a TCP socket whose owner is gone to the thread, which removes it once it has
    /// closed and frees `port`.
    pub(super) fn orphan_tcp(&mut self, handle: SocketHandle, port: Option<u16>) {
        self.orphans.push(Orphan {
            handle,
            port: port.map(|p| (false, p)),
            deadline: Instant::now() + ORPHAN_LINGER,
        });
    }

    /// Hands a UDP socket with datagrams still queued to the thread, which removes it once
    /// they have left and frees `port`.
    pub(super) fn orphan_udp(&mut self, handle: SocketHandle, port: u16) {
        self.orphans.push(Orphan {
            handle,
            port: Some((true, port)),
            deadline: Instant::now() + Duration::from_secs(1),
        });
    }

    /// Removes orphans that are done (a TCP socket whose reset or final ACK has left, a UDP
    /// socket with nothing queued), and aborts TCP orphans past their linger time.
    pub(super) fn reap(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.orphans.len() {
            let o = &self.orphans[i];
            let (done, expired) = match o.port {
                Some((true, _)) => {
                    let socket = self.sockets.get::<udp::Socket>(o.handle);
                    (socket.send_queue() == 0, now >= o.deadline)
                }
                _ => {
                    let socket = self.sockets.get_mut::<tcp::Socket>(o.handle);
                    let closed = socket.state() == tcp::State::Closed;
                    if !closed && now >= o.deadline {
                        // Give the reset a moment to leave before the socket goes.
                        socket.abort();
                        self.orphans[i].deadline = now + Duration::from_secs(1);
                        i += 1;
                        continue;
                    }
                    (
                        closed && socket.remote_endpoint().is_none(),
                        closed && now >= o.deadline,
                    )
                }
            };
            if done || expired {
                let o = self.orphans.swap_remove(i);
                self.sockets.remove(o.handle);
                if let Some((udp, port)) = o.port {
                    self.release_port(udp, port);
                }
            } else {
                i += 1;
            }
        }
    }

    pub(super) fn has_orphans(&self) -> bool {
        !self.orphans.is_empty()
    }

    /// At shutdown: aborts every TCP socket and closes every UDP socket, which wakes whoever
    /// waits on them to find the stack gone.
    pub(super) fn close_all(&mut self) {
        for (_, socket) in self.sockets.iter_mut() {
            match socket {
                smoltcp::socket::Socket::Tcp(s) => s.abort(),
                smoltcp::socket::Socket::Udp(s) => s.close(),
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
        for listener in self.listeners.values() {
            listener.waker.wake_by_ref();
        }
    }
}

/// An eventfd the handles write to wake the thread, at most once until the thread clears it.
pub(super) struct Kick {
    fd: OwnedFd,
    raised: AtomicBool,
}

impl Kick {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no pointer arguments; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            fd,
            raised: AtomicBool::new(false),
        })
    }

    pub(super) fn raise(&self) {
        if !self.raised.swap(true, Ordering::AcqRel) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live stack array to an eventfd we own. A full
            // counter (EAGAIN) still leaves the fd readable, which is all that matters.
            unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }

    /// Called by the thread before it looks at the sockets: later raises wake it again.
    pub(super) fn clear(&self) {
        if self.raised.swap(false, Ordering::AcqRel) {
            let mut buf = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live stack array; EAGAIN is harmless.
            unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        }
    }

    pub(super) fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}
