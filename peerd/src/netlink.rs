//! Kernel networking through rtnetlink: the TUN device's addresses and state, and the routes
//! that send remote prefixes into it. No `ip` commands.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressScope,
};
use rtnetlink::packet_route::route::{
    RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// The routing protocol number peerd stamps on its routes, so it only ever removes its own
/// (`ip route` shows it as `proto 112`).
pub const PEERD_PROTO: u8 = 112;
/// The kernel's `local` routing table.
const LOCAL_TABLE: u32 = 255;

/// A connection to the kernel's routing netlink socket.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

/// What a route sync changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RouteChanges {
    /// Routes added.
    pub added: Vec<IpNet>,
    /// Routes removed.
    pub removed: Vec<IpNet>,
}

impl Netlink {
    /// Opens the socket (in the caller's network namespace) and spawns its reader task.
    pub fn connect() -> Result<Self> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("cannot open a netlink socket")?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// Puts `addr/prefix` on the link (idempotent). IPv6 addresses skip duplicate address
    /// detection: a tunnel has no neighbours, and a tentative address would make the kernel
    /// refuse routes that use it as their source for a moment after the link comes up.
    pub async fn add_address(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
        let mut request = self.handle.address().add(index, addr, prefix).replace();
        if addr.is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request
            .execute()
            .await
            .with_context(|| format!("cannot add address {addr}/{prefix}"))
    }

    /// Global-scope addresses of every link but `except`, for announcing underlay endpoints.
    pub async fn global_addresses(&self, except: u32) -> Result<Vec<IpAddr>> {
        let mut found = Vec::new();
        let mut stream = self.handle.address().get().execute();
        while let Some(message) = stream.try_next().await.context("cannot list addresses")? {
            if message.header.index == except || message.header.scope != AddressScope::Universe {
                continue;
            }
            for attr in &message.attributes {
                if let AddressAttribute::Address(ip) = attr
                    && !ip.is_loopback()
                    && !found.contains(ip)
                {
                    found.push(*ip);
                }
            }
        }
        Ok(found)
    }

    /// Makes every address of `net` local to this host (`ip route add local NET dev lo table
    /// local`), so the proxy can listen on any virtual IP of the service CIDR without putting
    /// addresses on an interface. Idempotent.
    pub async fn add_local_route(&self, net: ipnet::Ipv4Net) -> Result<()> {
        let lo = self.link_index("lo").await?;
        let message = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(net.network(), net.prefix_len())
            .output_interface(lo)
            .table_id(LOCAL_TABLE)
            .kind(RouteType::Local)
            .scope(RouteScope::Host)
            .protocol(RouteProtocol::Other(PEERD_PROTO))
            .build();
        self.handle
            .route()
            .add(message)
            .replace()
            .execute()
            .await
            .with_context(|| format!("cannot make the service CIDR {net} local"))
    }

    /// The index of the link called `name`.
    pub async fn link_index(&self, name: &str) -> Result<u32> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links
            .try_next()
            .await
            .with_context(|| format!("cannot find link {name}"))?
        {
            Some(link) => Ok(link.header.index),
            None => anyhow::bail!("no link named {name}"),
        }
    }

    /// Brings the link up.
    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .context("cannot bring the interface up")
    }

    /// Makes peerd's routes through link `index` exactly `desired`: adds what is missing,
    /// removes what is no longer wanted, leaves everyone else's routes alone.
    pub async fn sync_routes(
        &self,
        index: u32,
        desired: &BTreeSet<IpNet>,
        src4: Option<Ipv4Addr>,
        src6: Option<Ipv6Addr>,
    ) -> Result<RouteChanges> {
        let present = self.routes(index).await?;
        let mut changes = RouteChanges::default();
        for net in present.difference(desired) {
            let message = route_message(index, *net, None, None);
            match self.handle.route().del(message).execute().await {
                Ok(()) => changes.removed.push(*net),
                Err(e) => tracing::warn!(route = %net, error = %e, "cannot remove route"),
            }
        }
        for net in desired.difference(&present) {
            let message = route_message(index, *net, src4, src6);
            self.handle
                .route()
                .add(message)
                .replace()
                .execute()
                .await
                .with_context(|| format!("cannot add route {net}"))?;
            changes.added.push(*net);
        }
        Ok(changes)
    }

    /// peerd's routes through link `index`, both families.
    pub async fn routes(&self, index: u32) -> Result<BTreeSet<IpNet>> {
        let mut found = BTreeSet::new();
        let requests = [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ];
        for request in requests {
            let mut stream = self.handle.route().get(request).execute();
            while let Some(route) = stream.try_next().await.context("cannot list routes")? {
                if route.header.protocol != RouteProtocol::Other(PEERD_PROTO) {
                    continue;
                }
                if let Some(net) = route_prefix(&route, index) {
                    found.insert(net);
                }
            }
        }
        Ok(found)
    }
}

fn route_message(
    index: u32,
    net: IpNet,
    src4: Option<Ipv4Addr>,
    src6: Option<Ipv6Addr>,
) -> RouteMessage {
    match net {
        IpNet::V4(n) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(n.network(), n.prefix_len())
                .output_interface(index)
                .protocol(RouteProtocol::Other(PEERD_PROTO));
            if let Some(src) = src4 {
                b = b.pref_source(src);
            }
            b.build()
        }
        IpNet::V6(n) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(n.network(), n.prefix_len())
                .output_interface(index)
                .protocol(RouteProtocol::Other(PEERD_PROTO));
            if let Some(src) = src6 {
                b = b.pref_source(src);
            }
            b.build()
        }
    }
}

/// The destination of `route` when it leaves through link `index`.
fn route_prefix(route: &RouteMessage, index: u32) -> Option<IpNet> {
    let mut oif = None;
    let mut dst = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(rtnetlink::packet_route::route::RouteAddress::Inet(a)) => {
                dst = Some(IpAddr::V4(*a))
            }
            RouteAttribute::Destination(rtnetlink::packet_route::route::RouteAddress::Inet6(a)) => {
                dst = Some(IpAddr::V6(*a))
            }
            _ => {}
        }
    }
    if oif != Some(index) {
        return None;
    }
    let len = route.header.destination_prefix_length;
    let dst = dst.unwrap_or(
        if route.header.address_family == rtnetlink::packet_route::AddressFamily::Inet6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        },
    );
    IpNet::new(dst, len).ok()
}
