//! The precomputed path must say exactly what the catalog says.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use peerd_types::{Protocol, ServicePort};
use proptest::prelude::*;

use super::{Parsed, QueryHandler};
use crate::{GlobalName, Transport, Zone};

fn port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: name.into(),
        port,
        protocol: Protocol::Http,
    }
}

fn zone() -> Zone {
    Zone {
        names: vec![
            GlobalName {
                name: "web.shop.global".into(),
                v4: Some(Ipv4Addr::new(10, 253, 0, 1)),
                v6: Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
                ports: vec![port("http", 80), port("grpc", 9090)],
            },
            GlobalName {
                name: "east.web.shop.global".into(),
                v4: Some(Ipv4Addr::new(10, 253, 0, 2)),
                v6: None,
                ports: vec![port("http", 80)],
            },
            GlobalName {
                name: "many.shop.global".into(),
                v4: Some(Ipv4Addr::new(10, 253, 0, 3)),
                v6: None,
                ports: (0..100).map(|i| port("pg", 5000 + i)).collect(),
            },
        ],
    }
}

fn query(name: &str, rtype: RecordType, edns: Option<u16>, rd: bool) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 0x1234;
    message.metadata.recursion_desired = rd;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(size);
        message.set_edns(opt);
    }
    message.to_vec().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The catalog's answer, bypassing the fast path.
fn slow(
    handler: &QueryHandler,
    rt: &tokio::runtime::Runtime,
    packet: &[u8],
    t: Transport,
) -> Vec<u8> {
    let src = SocketAddr::from((Ipv4Addr::LOCALHOST, 5353));
    match handler.parse(packet, src, t) {
        Parsed::Query { request, .. } => rt.block_on(handler.answer(&request, t)),
        Parsed::Reply(reply) => reply,
        Parsed::Drop => panic!("a valid query was dropped"),
    }
}

/// Both paths agree; returns whether the fast path answered at all.
fn same_answer(
    handler: &QueryHandler,
    rt: &tokio::runtime::Runtime,
    packet: &[u8],
    t: Transport,
) -> bool {
    let Some(fast) = handler.fast_answer(packet, t) else {
        return false;
    };
    let fast = Message::from_vec(&fast).unwrap();
    let slow = Message::from_vec(&slow(handler, rt, packet, t)).unwrap();
    assert_eq!(fast.metadata, slow.metadata);
    assert_eq!(fast.queries, slow.queries);
    assert_eq!(fast.answers, slow.answers);
    assert_eq!(fast.authorities, slow.authorities);
    assert_eq!(fast.additionals, slow.additionals);
    assert_eq!(fast.edns, slow.edns);
    // Case-insensitive `Name` equality hides the question's case: compare it byte for byte.
    assert_eq!(
        fast.queries[0].name().to_string(),
        slow.queries[0].name().to_string()
    );
    true
}

#[test]
fn fast_path_matches_the_catalog() {
    let rt = runtime();
    let handler = QueryHandler::authoritative_only(&zone(), 5);
    let names = [
        "web.shop.global.",
        "WEB.Shop.Global.",
        "east.web.shop.global.",
        "_http._tcp.web.shop.global.",
        "_grpc._tcp.EAST.web.shop.global.",
        "_tcp.web.shop.global.",
        "shop.global.",
        "nope.shop.global.",
        "x.global.",
        "many.shop.global.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::TXT,
        RecordType::SOA,
    ];
    let mut fast = 0;
    for name in names {
        for rtype in types {
            for edns in [None, Some(512), Some(1232), Some(65_000)] {
                for t in [Transport::Udp, Transport::Tcp] {
                    fast += usize::from(same_answer(
                        &handler,
                        &rt,
                        &query(name, rtype, edns, true),
                        t,
                    ));
                }
            }
        }
    }
    assert_eq!(fast, names.len() * types.len() * 4 * 2);
}

#[test]
fn unusual_queries_take_the_catalog_path() {
    let handler = QueryHandler::authoritative_only(&zone(), 5);
    for packet in [
        query("global.", RecordType::SOA, None, true),
        query("web.shop.global.", RecordType::ANY, None, true),
        query("example.com.", RecordType::A, None, true),
        // 100 SRV records do not fit in 1232 bytes: the catalog path truncates.
        query(
            "_pg._tcp.many.shop.global.",
            RecordType::SRV,
            Some(1232),
            true,
        ),
    ] {
        assert!(handler.fast_answer(&packet, Transport::Udp).is_none());
    }
    let big = query("_pg._tcp.many.shop.global.", RecordType::SRV, None, true);
    assert!(handler.fast_answer(&big, Transport::Tcp).is_some());
}

proptest! {
    #[test]
    fn fast_path_matches_the_catalog_for_any_query(
        labels in prop::collection::vec(
            prop::sample::select(vec!["web", "WeB", "shop", "east", "_http", "_tcp", "x", "many"]),
            0..4,
        ),
        rtype in prop::sample::select(vec![1u16, 2, 5, 6, 12, 15, 16, 28, 33, 43, 46, 65, 99, 4000]),
        edns in prop::option::of(0u16..5000),
        rd: bool,
        tcp: bool,
    ) {
        let rt = runtime();
        let handler = QueryHandler::authoritative_only(&zone(), 5);
        let mut name = labels.join(".");
        name.push_str(if name.is_empty() { "global." } else { ".global." });
        let t = if tcp { Transport::Tcp } else { Transport::Udp };
        same_answer(&handler, &rt, &query(&name, RecordType::from(rtype), edns, rd), t);
    }
}

/// What a fuzzer would check: no panic, and any reply is a DNS message of a legal size.
fn survives(handler: &QueryHandler, rt: &tokio::runtime::Runtime, packet: &[u8]) {
    for t in [Transport::Udp, Transport::Tcp] {
        if let Some(reply) = rt.block_on(handler.handle(packet, t)) {
            assert!(reply.len() >= 12);
            assert!(t == Transport::Tcp || reply.len() <= 4096);
        }
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(packet in prop::collection::vec(any::<u8>(), 0..600)) {
        let rt = runtime();
        survives(&QueryHandler::authoritative_only(&zone(), 5), &rt, &packet);
    }

    /// Random bytes rarely get past the header; damaged real queries reach the name, type,
    /// class and OPT parsers of both paths.
    #[test]
    fn damaged_queries_never_panic(
        base in prop::sample::select(vec![
            ("web.shop.global.", 1u16, Some(1232u16)),
            ("_http._tcp.web.shop.global.", 33, None),
            ("_pg._tcp.many.shop.global.", 33, Some(512)),
            ("nope.global.", 28, Some(4096)),
            ("global.", 6, None),
        ]),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let rt = runtime();
        let (name, rtype, edns) = base;
        let mut packet = query(name, RecordType::from(rtype), edns, true);
        for (at, byte) in edits {
            let at = at.index(packet.len());
            packet[at] = byte;
        }
        if let Some(cut) = cut {
            packet.truncate(cut.index(packet.len() + 1));
        }
        survives(&QueryHandler::authoritative_only(&zone(), 5), &rt, &packet);
    }
}
