//! `peerd ping`: ICMP echo through the kernel's routes, so the round trip crosses the tunnel
//! exactly as pod traffic does.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU16, Ordering};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Distinguishes concurrent pings of one process.
static NEXT_IDENT: AtomicU16 = AtomicU16::new(1);

/// Sends `count` echo requests from `src` to `dst`, one every 200 ms, each waiting up to
/// `timeout`. Returns the round-trip time of each request that was answered.
pub fn ping(
    src: IpAddr,
    dst: IpAddr,
    count: u32,
    timeout: Duration,
) -> io::Result<Vec<Option<Duration>>> {
    let (domain, protocol, request, reply) = match dst {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128, 129),
    };
    let mut socket = Socket::new(domain, Type::RAW, Some(protocol))?;
    socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    let ident = (std::process::id() as u16) ^ NEXT_IDENT.fetch_add(0x9e37, Ordering::Relaxed);
    let mut results = Vec::new();
    for seq in 0..count {
        let seq = seq as u16;
        let mut packet = vec![request, 0, 0, 0];
        packet.extend_from_slice(&ident.to_be_bytes());
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(b"peerd-ping-pad!!");
        if dst.is_ipv4() {
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
        } // The kernel fills ICMPv6 checksums on raw sockets.
        let sent = Instant::now();
        socket.send_to(&packet, &SockAddr::from(SocketAddr::new(dst, 0)))?;
        results.push(
            wait_reply(&mut socket, dst, reply, ident, seq, sent + timeout)?.map(|at| at - sent),
        );
        if seq + 1 < count as u16 {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(results)
}

fn wait_reply(
    socket: &mut Socket,
    dst: IpAddr,
    reply: u8,
    ident: u16,
    seq: u16,
    deadline: Instant,
) -> io::Result<Option<Instant>> {
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left))?;
        let n = match socket.read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // IPv4 raw sockets deliver the IP header; IPv6 ones do not.
        let icmp = match dst {
            IpAddr::V4(want) => {
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                if n < ihl + 8 || Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]) != want {
                    continue;
                }
                &buf[ihl..n]
            }
            IpAddr::V6(_) => &buf[..n],
        };
        if icmp.len() >= 8
            && icmp[0] == reply
            && icmp[4..6] == ident.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
        {
            return Ok(Some(Instant::now()));
        }
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
