//! Cryptokey routing table: longest-prefix match from an inner IP address to the peer that owns
//! it (WireGuard paper §2, "Cryptokey Routing").

use std::net::IpAddr;

use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;
use ipnet::IpNet;

/// Maps IPv4 and IPv6 prefixes to values, answering longest-prefix-match lookups.
pub struct AllowedIps<T> {
    table: IpNetworkTable<T>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self {
            table: IpNetworkTable::new(),
        }
    }
}

impl<T> AllowedIps<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Points `net` (host bits ignored) at `value`, returning the value it replaces.
    pub fn insert(&mut self, net: IpNet, value: T) -> Option<T> {
        self.table.insert(to_network(net), value)
    }

    /// Removes exactly `net`, returning its value.
    pub fn remove(&mut self, net: IpNet) -> Option<T> {
        self.table.remove(to_network(net))
    }

    /// The value of the longest prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        self.table.longest_match(addr).map(|(_, value)| value)
    }

    /// Keeps only the entries for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(IpNet, &mut T) -> bool) {
        self.table.retain(|net, value| keep(to_ipnet(net), value));
    }

    /// Every entry, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &T)> {
        self.table.iter().map(|(net, value)| (to_ipnet(net), value))
    }
}

fn to_network(net: IpNet) -> IpNetwork {
    let net = net.trunc();
    // A truncated `IpNet` has no host bits and a valid prefix length, which is all
    // `IpNetwork::new` checks.
    IpNetwork::new(net.network(), net.prefix_len()).expect("truncated prefix is a valid network")
}

fn to_ipnet(net: IpNetwork) -> IpNet {
    IpNet::new(net.network_address(), net.netmask()).expect("network prefix is within bounds")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_for_v4_and_v6() {
        let mut t = AllowedIps::new();
        t.insert(net("10.0.0.0/8"), 1);
        t.insert(net("10.1.0.0/16"), 2);
        t.insert(net("10.1.1.7/32"), 3);
        t.insert(net("fd00::/8"), 4);
        t.insert(net("fd00:1::/32"), 5);
        t.insert(net("0.0.0.0/0"), 6);
        assert_eq!(t.lookup("10.1.1.7".parse().unwrap()), Some(&3));
        assert_eq!(t.lookup("10.1.1.8".parse().unwrap()), Some(&2));
        assert_eq!(t.lookup("10.2.0.1".parse().unwrap()), Some(&1));
        assert_eq!(t.lookup("192.0.2.1".parse().unwrap()), Some(&6));
        assert_eq!(t.lookup("fd00:1::9".parse().unwrap()), Some(&5));
        assert_eq!(t.lookup("fd12::1".parse().unwrap()), Some(&4));
        assert_eq!(t.lookup("2001:db8::1".parse().unwrap()), None);
    }

    #[test]
    fn host_bits_are_ignored_and_retain_removes() {
        let mut t = AllowedIps::new();
        t.insert(net("10.1.1.9/24"), 1);
        assert_eq!(t.lookup("10.1.1.200".parse().unwrap()), Some(&1));
        assert_eq!(t.iter().next().unwrap().0, net("10.1.1.0/24"));
        t.retain(|_, v| *v != 1);
        assert_eq!(t.lookup("10.1.1.200".parse().unwrap()), None);
    }

    fn arb_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, p)| {
                IpNet::new(std::net::Ipv4Addr::from(a).into(), p)
                    .unwrap()
                    .trunc()
            }),
            (any::<u128>(), 0u8..=128).prop_map(|(a, p)| {
                IpNet::new(std::net::Ipv6Addr::from(a).into(), p)
                    .unwrap()
                    .trunc()
            }),
        ]
    }

    proptest! {
        /// The table agrees with a naive scan for the longest containing prefix.
        #[test]
        fn matches_naive_model(
            entries in proptest::collection::vec((arb_net(), any::<u16>()), 0..40),
            probes in proptest::collection::vec(arb_net(), 0..40),
        ) {
            let mut table = AllowedIps::new();
            let mut model: Vec<(IpNet, u16)> = Vec::new();
            for (net, value) in &entries {
                table.insert(*net, *value);
                model.retain(|(n, _)| n != net);
                model.push((*net, *value));
            }
            // Probe the entries' own addresses too, so hits are common.
            let addrs = probes.iter().chain(entries.iter().map(|(n, _)| n)).map(|n| n.addr());
            for addr in addrs {
                let expected = model
                    .iter()
                    .filter(|(n, _)| n.contains(&addr))
                    .max_by_key(|(n, _)| n.prefix_len())
                    .map(|(_, v)| v);
                prop_assert_eq!(table.lookup(addr), expected);
            }
        }
    }
}
