//! Names outside `global.` go to the upstream; `.global` names never do.

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RData, RecordType};
use tokio::net::UdpSocket;

use super::support::{Upstream, assert_negative, ipv4s, query, start, tcp, udp, udp_within};

#[tokio::test]
async fn ordinary_names_are_answered_by_the_upstream() {
    let upstream = Upstream::start().await;
    let server = start(Some(upstream.addr)).await;
    let addr = server.local_addr();

    let reply = udp(addr, &query("www.example.test.", RecordType::A, None)).await;
    assert_eq!(ipv4s(&reply.answers), [Ipv4Addr::new(192, 0, 2, 10)]);
    assert!(reply.metadata.recursion_available && !reply.metadata.authoritative);
    // CNAME chains come back whole.
    let reply = tcp(
        addr,
        &query("alias.example.test.", RecordType::A, Some(1232)),
    )
    .await;
    assert!(matches!(reply.answers[0].data, RData::CNAME(_)), "{reply}");
    assert_eq!(ipv4s(&reply.answers), [Ipv4Addr::new(192, 0, 2, 10)]);
    let reply = udp(addr, &query("nothing.example.test.", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);

    // A second ask comes from the cache.
    let asked = upstream.seen().len();
    let reply = udp(addr, &query("WWW.example.test.", RecordType::A, None)).await;
    assert_eq!(ipv4s(&reply.answers), [Ipv4Addr::new(192, 0, 2, 10)]);
    assert_eq!(upstream.seen().len(), asked);

    let stats = server.stats();
    assert_eq!((stats.forwarded, stats.forward_errors), (4, 0));
}

#[tokio::test]
async fn global_names_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let server = start(Some(upstream.addr)).await;
    let addr = server.local_addr();

    let names = [
        "web.shop.global.",
        "WEB.SHOP.GLOBAL.",
        "unknown.shop.global.",
        "x.global.",
        "global.",
        "web.shop.svc.cluster.local.global.",
        "_http._tcp.web.shop.global.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::TXT,
        RecordType::ANY,
        RecordType::NS,
    ];
    for name in names {
        for rtype in types {
            udp(addr, &query(name, rtype, None)).await;
            tcp(addr, &query(name, rtype, Some(1232))).await;
        }
    }
    let mut chaos = query("x.global.", RecordType::TXT, None);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(
        udp(addr, &chaos).await.metadata.response_code,
        ResponseCode::Refused
    );
    let reply = udp(addr, &query("unknown.shop.global.", RecordType::A, None)).await;
    assert_negative(&reply, ResponseCode::NXDomain);
    // Something did reach the upstream in between, so the fence is tested with a live path.
    udp(addr, &query("www.example.test.", RecordType::A, None)).await;

    let seen = upstream.seen();
    assert_eq!(seen, ["www.example.test."], "the upstream saw {seen:?}");
    let stats = server.stats();
    assert_eq!(stats.forwarded, 1);
    assert_eq!(
        stats.global_answers + stats.global_nodata + stats.global_nxdomain,
        2 * 42 + 1
    );
}

#[tokio::test]
async fn queries_without_recursion_desired_are_refused_not_forwarded() {
    let upstream = Upstream::start().await;
    let server = start(Some(upstream.addr)).await;
    let mut message = query("www.example.test.", RecordType::A, None);
    message.metadata.recursion_desired = false;
    let reply = udp(server.local_addr(), &message).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert!(upstream.seen().is_empty());
    // `.global` answers do not need recursion.
    let mut message = query("web.shop.global.", RecordType::A, None);
    message.metadata.recursion_desired = false;
    assert_eq!(udp(server.local_addr(), &message).await.answers.len(), 1);
    assert_eq!(server.stats().refused, 1);
}

#[tokio::test]
async fn a_dead_upstream_is_a_counted_servfail_and_global_still_answers() {
    // A port that was free a moment ago: nothing answers there.
    let dead = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let server = start(Some(dead)).await;
    let addr = server.local_addr();
    let message = query("www.example.test.", RecordType::A, None);
    let reply = udp_within(addr, &message, Duration::from_secs(8)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    let reply = udp(addr, &query("web.shop.global.", RecordType::A, None)).await;
    assert_eq!(reply.answers.len(), 1);
    let stats = server.stats();
    assert_eq!((stats.forwarded, stats.forward_errors), (1, 1));
}
