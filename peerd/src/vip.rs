//! Virtual IPs for global names. Each name's address is derived from the name itself, so every
//! kernel-mode node of the mesh computes the same one without coordination: a hash picks a slot
//! in the service CIDR; when two names want the same slot, the names are taken in order of
//! (slot, name) and a later one moves to the next free slot. A name's address only changes if
//! a new name collides with it and sorts first — rare in a /16 (the chance per new name is
//! about the number of names divided by 65,534) and the same on every node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Assigns every name a distinct address inside `cidr` (not the network or broadcast address).
/// Names beyond the CIDR's capacity get none.
pub fn assign<'a>(
    names: impl IntoIterator<Item = &'a str>,
    cidr: Ipv4Net,
) -> BTreeMap<String, Ipv4Addr> {
    let base = u32::from(cidr.network());
    let size = 1u64 << (32 - u32::from(cidr.prefix_len()));
    let usable = size.saturating_sub(2).max(1);
    let mut wanted: Vec<(u64, &str)> = names.into_iter().map(|n| (fnv1a(n) % usable, n)).collect();
    wanted.sort_unstable();
    wanted.dedup_by(|a, b| a.1 == b.1);
    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    for (slot, name) in wanted {
        if taken.len() as u64 >= usable {
            break;
        }
        let mut s = slot;
        while !taken.insert(s) {
            s = (s + 1) % usable;
        }
        out.insert(name.to_owned(), Ipv4Addr::from(base + 1 + s as u32));
    }
    out
}

/// FNV-1a, 64-bit: stable across processes, versions and platforms.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_inside_the_cidr_and_stable() {
        let a = assign(
            ["web.shop.global", "east.web.shop.global"],
            cidr("10.253.0.0/16"),
        );
        assert_eq!(a.len(), 2);
        for ip in a.values() {
            assert!(cidr("10.253.0.0/16").contains(ip));
            assert_ne!(*ip, Ipv4Addr::new(10, 253, 0, 0));
            assert_ne!(*ip, Ipv4Addr::new(10, 253, 255, 255));
        }
        // Independent of the order names arrive in, and of unrelated names.
        let b = assign(
            ["east.web.shop.global", "api.shop.global", "web.shop.global"],
            cidr("10.253.0.0/16"),
        );
        assert_eq!(a["web.shop.global"], b["web.shop.global"]);
        assert_eq!(a["east.web.shop.global"], b["east.web.shop.global"]);
    }

    #[test]
    fn a_full_cidr_gives_every_slot_once() {
        let names: Vec<String> = (0..20).map(|i| format!("s{i}.ns.global")).collect();
        let a = assign(names.iter().map(String::as_str), cidr("10.0.0.0/28"));
        assert_eq!(a.len(), 14, "a /28 has 14 usable addresses");
        let distinct: BTreeSet<_> = a.values().collect();
        assert_eq!(distinct.len(), 14);
    }

    proptest! {
        #[test]
        fn distinct_and_order_independent(mut names in proptest::collection::btree_set("[a-z]{1,8}\\.[a-z]{1,5}\\.global", 1..200)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>())) {
            let one = assign(names.iter().map(String::as_str), cidr("10.253.0.0/22"));
            names.reverse();
            let two = assign(names.iter().map(String::as_str), cidr("10.253.0.0/22"));
            prop_assert_eq!(&one, &two);
            let distinct: BTreeSet<_> = one.values().collect();
            prop_assert_eq!(distinct.len(), names.len());
        }
    }
}
