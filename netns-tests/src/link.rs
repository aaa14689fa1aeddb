//! veth pairs between namespaces, and addresses on links (for roaming tests).

use anyhow::{Context, Result};

use crate::netns::Netns;

/// One end of a veth pair: its namespace, interface name (at most 15 bytes) and addresses in
/// CIDR form (`192.0.2.1/24`, `2001:db8::1/64`).
#[derive(Debug, Clone, Copy)]
pub struct End<'a> {
    /// The namespace this end lives in.
    pub ns: &'a Netns,
    /// The interface name inside that namespace.
    pub ifname: &'a str,
    /// Addresses to assign, IPv4 or IPv6, with prefix length.
    pub addrs: &'a [&'a str],
}

/// Creates a veth pair with one end in each namespace, assigns the addresses and brings both
/// ends up. The pair is created inside `a`, so no name ever appears in the host namespace.
pub fn connect(a: End<'_>, b: End<'_>) -> Result<()> {
    a.ns.ip(&[
        "link",
        "add",
        a.ifname,
        "type",
        "veth",
        "peer",
        "name",
        b.ifname,
        "netns",
        b.ns.name(),
    ])
    .with_context(|| format!("cannot create veth {} <-> {}", a.ifname, b.ifname))?;
    for end in [a, b] {
        for addr in end.addrs {
            addr_add(end.ns, end.ifname, addr)?;
        }
        end.ns.ip(&["link", "set", end.ifname, "up"])?;
    }
    Ok(())
}

/// Adds `cidr` to `ifname` in `ns`. IPv6 addresses skip duplicate address detection, so they are
/// usable at once instead of tentative for a second or two.
pub fn addr_add(ns: &Netns, ifname: &str, cidr: &str) -> Result<()> {
    let mut args = vec!["addr", "add", cidr, "dev", ifname];
    if cidr.contains(':') {
        args.push("nodad");
    }
    ns.ip(&args)
        .with_context(|| format!("cannot add {cidr} to {ifname} in {}", ns.name()))?;
    Ok(())
}

/// Removes `cidr` from `ifname` in `ns`.
pub fn addr_del(ns: &Netns, ifname: &str, cidr: &str) -> Result<()> {
    ns.ip(&["addr", "del", cidr, "dev", ifname])
        .with_context(|| format!("cannot remove {cidr} from {ifname} in {}", ns.name()))?;
    Ok(())
}
