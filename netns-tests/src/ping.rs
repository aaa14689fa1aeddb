//! ICMP echo through `ping` inside a namespace.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;

use crate::netns::Netns;
use crate::wait::wait_until;

/// Pings `addr` from inside `ns` `count` times (0.2 s apart, 1 s timeout each); true when at
/// least one reply came back.
pub fn ping(ns: &Netns, addr: IpAddr, count: u32) -> bool {
    ping_args(ns, None, addr, count)
}

/// Like [`ping`], with the source address forced to `src` (`ping -I src`).
pub fn ping_from(ns: &Netns, src: IpAddr, addr: IpAddr, count: u32) -> bool {
    ping_args(ns, Some(src), addr, count)
}

/// Pings `addr` once at a time until a reply comes back (the first may be spent on a WireGuard
/// handshake), failing after `timeout`.
pub fn wait_ping(ns: &Netns, addr: IpAddr, timeout: Duration) -> Result<()> {
    let what = format!("a ping reply from {addr} in {}", ns.name());
    wait_until(timeout, &what, || Ok(ping(ns, addr, 1)))
}

fn ping_args(ns: &Netns, src: Option<IpAddr>, addr: IpAddr, count: u32) -> bool {
    let (count, addr) = (count.to_string(), addr.to_string());
    let mut args = vec!["ping", "-n", "-q", "-c", &count, "-W", "1", "-i", "0.2"];
    if addr.contains(':') {
        args.push("-6");
    }
    let src = src.map(|s| s.to_string());
    if let Some(src) = &src {
        args.extend(["-I", src]);
    }
    args.push(&addr);
    ns.exec(&args).is_ok_and(|out| out.status.success())
}
