//! The `.global` data as the daemon hands it over, and the immutable snapshot queries read.
//!
//! A [`Zone`] is plain data; [`Snapshot::build`] turns it into ready-made record sets once per
//! update, so a query only hashes its name and clones an `Arc`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, RecordSet, RecordType};
use peerd_types::ServicePort;
use tracing::warn;

use crate::fast::{self, FastNode, FastZone};

/// One name under `global.` and what it resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalName {
    /// `web.shop.global` (every cluster) or `east.web.shop.global` (one cluster); a trailing dot
    /// is optional and case does not matter.
    pub name: String,
    /// The service's IPv4 virtual IP, answered for `A`.
    pub v4: Option<Ipv4Addr>,
    /// The service's IPv6 virtual IP, answered for `AAAA`.
    pub v6: Option<Ipv6Addr>,
    /// The service's ports, published as `_<port-name>._tcp.<name>` SRV records.
    pub ports: Vec<ServicePort>,
}

/// One complete set of `.global` names; each update replaces the previous one whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Zone {
    /// Every name the server answers under `global.`; anything else there is NXDOMAIN.
    pub names: Vec<GlobalName>,
}

/// The zone apex, `global.`.
pub(crate) fn apex() -> Name {
    // A fixed, valid ASCII label: this cannot fail.
    Name::from_labels([&b"global"[..]]).unwrap_or_else(|_| Name::root())
}

/// Record sets for one owner name. All `None` means an empty non-terminal: the name exists
/// (NODATA, not NXDOMAIN) because something exists below it (RFC 8020).
#[derive(Debug, Default)]
pub(crate) struct Node {
    pub a: Option<Arc<RecordSet>>,
    pub aaaa: Option<Arc<RecordSet>>,
    pub srv: Option<Arc<RecordSet>>,
    /// For SRV owners: the target's address records, sent as additional data (RFC 2782).
    pub glue: Vec<Arc<RecordSet>>,
}

/// What every query reads: immutable, swapped whole on update.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub soa: Arc<RecordSet>,
    pub ns: Arc<RecordSet>,
    pub nodes: HashMap<LowerName, Node>,
    /// The same data as ready-made wire answers.
    pub fast: FastZone,
}

impl Snapshot {
    /// Builds the record sets for `zone`. Names that are not under `global.`, or that do not
    /// parse, are skipped with a warning; the first of two entries with the same name wins.
    pub fn build(zone: &Zone, ttl: u32, serial: u32) -> Self {
        let apex = apex();
        let mut nodes: HashMap<LowerName, Node> = HashMap::new();
        let mut seen = HashSet::new();
        for entry in &zone.names {
            let Some(name) = parse_global_name(&entry.name, &apex) else {
                warn!(name = %entry.name, "skipping a name that is not under global.");
                continue;
            };
            if !seen.insert(LowerName::new(&name)) {
                warn!(name = %entry.name, "skipping a duplicate .global name");
                continue;
            }
            add_service(&mut nodes, &apex, &name, entry, ttl);
        }
        let soa = Arc::new(soa_rrset(&apex, ttl, serial));
        let mut fast = FastZone::new(&soa);
        for (name, node) in &nodes {
            let name = Name::from(name.clone());
            let glue: Vec<&RecordSet> = node.glue.iter().map(|set| &**set).collect();
            let encode = |rtype, set: &Option<Arc<RecordSet>>, extra: &[&RecordSet]| {
                set.as_ref()
                    .and_then(|set| fast::body(&name, rtype, set, extra))
            };
            let answers = FastNode {
                a: encode(RecordType::A, &node.a, &[]),
                aaaa: encode(RecordType::AAAA, &node.aaaa, &[]),
                srv: encode(RecordType::SRV, &node.srv, &glue),
            };
            fast.insert(&name, answers);
        }
        Self {
            soa,
            ns: Arc::new(ns_rrset(&apex, ttl)),
            nodes,
            fast,
        }
    }
}

/// `web.shop.global` → `web.shop.global.`, lower-cased; `None` unless strictly below the apex.
fn parse_global_name(text: &str, apex: &Name) -> Option<Name> {
    let mut name = Name::from_ascii(text).ok()?.to_lowercase();
    name.set_fqdn(true);
    (apex.zone_of(&name) && name.num_labels() > apex.num_labels()).then_some(name)
}

fn add_service(
    nodes: &mut HashMap<LowerName, Node>,
    apex: &Name,
    name: &Name,
    entry: &GlobalName,
    ttl: u32,
) {
    let a = entry.v4.map(|ip| rrset(name, ttl, [RData::A(A(ip))]));
    let aaaa = entry.v6.map(|ip| rrset(name, ttl, [RData::AAAA(AAAA(ip))]));
    let glue: Vec<_> = a.iter().chain(aaaa.iter()).cloned().collect();

    // One SRV record set per port name; several ports may share a name.
    let mut by_port_name: Vec<(&str, Vec<RData>)> = Vec::new();
    for port in &entry.ports {
        // Priority 0 and equal weights: one target, so the client simply takes every port.
        let srv = RData::SRV(SRV::new(0, 1, port.port, name.clone()));
        match by_port_name.iter_mut().find(|(n, _)| *n == port.name) {
            Some((_, records)) => records.push(srv),
            None => by_port_name.push((&port.name, vec![srv])),
        }
    }
    for (port_name, records) in by_port_name {
        let Some(owner) = srv_owner(port_name, name) else {
            warn!(name = %name, port = %port_name, "skipping a port name that is not a DNS label");
            continue;
        };
        let node = insert_with_ancestors(nodes, apex, &owner);
        node.srv = Some(rrset(&owner, ttl, records));
        node.glue.clone_from(&glue);
    }

    let node = insert_with_ancestors(nodes, apex, name);
    node.a = a;
    node.aaaa = aaaa;
}

/// `_<port-name>._tcp.<name>`. Every peerd protocol (HTTP, HTTP/2, gRPC, TCP) runs over TCP.
/// Port names are IANA service names in practice (RFC 6335 §5.1: letters, digits, hyphens).
fn srv_owner(port_name: &str, name: &Name) -> Option<Name> {
    let valid = !port_name.is_empty()
        && port_name.len() < 63
        && port_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !valid {
        return None;
    }
    let label = format!("_{}", port_name.to_ascii_lowercase());
    let prefix = Name::from_labels([label.as_bytes(), &b"_tcp"[..]]).ok()?;
    prefix.append_domain(name).ok()
}

/// Inserts `name` and every name between it and the apex, so that those answer NODATA.
fn insert_with_ancestors<'n>(
    nodes: &'n mut HashMap<LowerName, Node>,
    apex: &Name,
    name: &Name,
) -> &'n mut Node {
    let mut parent = name.base_name();
    while parent.num_labels() > apex.num_labels() {
        nodes.entry(LowerName::new(&parent)).or_default();
        parent = parent.base_name();
    }
    match nodes.entry(LowerName::new(name)) {
        Entry::Occupied(entry) => entry.into_mut(),
        Entry::Vacant(entry) => entry.insert(Node::default()),
    }
}

fn rrset(name: &Name, ttl: u32, records: impl IntoIterator<Item = RData>) -> Arc<RecordSet> {
    let mut records = records.into_iter().peekable();
    let rtype = records.peek().map_or(RecordType::NULL, RData::record_type);
    let mut set = RecordSet::with_ttl(name.clone(), rtype, ttl);
    for rdata in records {
        set.add_rdata(rdata);
    }
    Arc::new(set)
}

/// The locally served zone convention of RFC 6303 §3: `localhost.` as the name server and
/// `nobody.invalid.` as the contact; the zone is never delegated or transferred. The minimum
/// field is the negative-caching TTL (RFC 2308 §4), kept as short as positive answers.
fn soa_rrset(apex: &Name, ttl: u32, serial: u32) -> RecordSet {
    let soa = SOA::new(
        Name::from_labels([&b"localhost"[..]]).unwrap_or_else(|_| Name::root()),
        Name::from_labels([&b"nobody"[..], b"invalid"]).unwrap_or_else(|_| Name::root()),
        serial,
        3600,
        600,
        86400,
        ttl,
    );
    let mut set = RecordSet::with_ttl(apex.clone(), RecordType::SOA, ttl);
    set.add_rdata(RData::SOA(soa));
    set
}

fn ns_rrset(apex: &Name, ttl: u32) -> RecordSet {
    let localhost = Name::from_labels([&b"localhost"[..]]).unwrap_or_else(|_| Name::root());
    let mut set = RecordSet::with_ttl(apex.clone(), RecordType::NS, ttl);
    set.add_rdata(RData::NS(NS(localhost)));
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerd_types::Protocol;

    fn lower(s: &str) -> LowerName {
        LowerName::new(&Name::from_ascii(s).unwrap())
    }

    fn web() -> GlobalName {
        GlobalName {
            name: "Web.Shop.GLOBAL".into(),
            v4: Some(Ipv4Addr::new(10, 253, 0, 1)),
            v6: None,
            ports: vec![
                ServicePort {
                    name: "http".into(),
                    port: 80,
                    protocol: Protocol::Http,
                },
                ServicePort {
                    name: "http".into(),
                    port: 8080,
                    protocol: Protocol::Http,
                },
                ServicePort {
                    name: "grpc".into(),
                    port: 9090,
                    protocol: Protocol::Grpc,
                },
            ],
        }
    }

    #[test]
    fn names_ancestors_and_srv_owners_are_nodes() {
        let snap = Snapshot::build(&Zone { names: vec![web()] }, 5, 1);
        let node = &snap.nodes[&lower("web.shop.global.")];
        assert!(node.a.is_some() && node.aaaa.is_none() && node.srv.is_none());
        // Empty non-terminals: NODATA, not NXDOMAIN.
        for ent in ["shop.global.", "_tcp.web.shop.global."] {
            let n = &snap.nodes[&lower(ent)];
            assert!(n.a.is_none() && n.srv.is_none(), "{ent}");
        }
        let http = snap.nodes[&lower("_http._tcp.web.shop.global.")]
            .srv
            .as_ref()
            .unwrap();
        assert_eq!(http.records_count(), 2);
        assert_eq!(http.ttl(), 5);
        assert_eq!(snap.nodes.len(), 5);
        assert!(!snap.nodes.contains_key(&lower("global.")));
    }

    #[test]
    fn foreign_apex_and_duplicate_names_are_skipped() {
        let mut names = vec![web(), web()];
        for bad in ["web.shop.com", "global", "global.", "", "a..global"] {
            names.push(GlobalName {
                name: bad.into(),
                ..web()
            });
        }
        names.push(GlobalName {
            name: "db.shop.global".into(),
            ports: vec![ServicePort {
                name: "a.b".into(),
                port: 1,
                protocol: Protocol::Tcp,
            }],
            ..web()
        });
        let snap = Snapshot::build(&Zone { names }, 5, 1);
        // web's five nodes plus db.shop.global itself; the bad port name adds nothing.
        assert_eq!(snap.nodes.len(), 6);
    }

    #[test]
    fn soa_minimum_is_the_ttl() {
        let snap = Snapshot::build(&Zone::default(), 7, 42);
        let soa = snap.soa.records_without_rrsigs().next().unwrap();
        let RData::SOA(soa) = &soa.data else {
            panic!("not a SOA")
        };
        assert_eq!((soa.serial, soa.minimum), (42, 7));
    }
}
