//! What `.global` names answer.

use std::net::Ipv4Addr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, RecordType};

use super::support::{TTL, assert_negative, dig, ipv4s, ipv6s, query, start, tcp, udp};

#[tokio::test]
async fn plain_and_cluster_names_answer_their_vips() {
    let server = start(None).await;
    let addr = server.local_addr();

    let reply = udp(addr, &query("web.shop.global.", RecordType::A, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative && !reply.metadata.truncation);
    assert_eq!(ipv4s(&reply.answers), [Ipv4Addr::new(10, 253, 0, 1)]);
    assert!(reply.answers.iter().all(|r| r.ttl == TTL));

    let reply = udp(addr, &query("web.shop.global.", RecordType::AAAA, None)).await;
    assert_eq!(
        ipv6s(&reply.answers),
        ["fd00:253::1".parse::<std::net::Ipv6Addr>().unwrap()]
    );

    let reply = udp(addr, &query("east.web.shop.global.", RecordType::A, None)).await;
    assert_eq!(ipv4s(&reply.answers), [Ipv4Addr::new(10, 253, 0, 2)]);
    // No IPv6 VIP for the cluster-pinned name: NODATA, not an error.
    let reply = udp(
        addr,
        &query("east.web.shop.global.", RecordType::AAAA, None),
    )
    .await;
    assert_negative(&reply, ResponseCode::NoError);

    // The same over TCP.
    let reply = tcp(addr, &query("east.web.shop.global.", RecordType::A, None)).await;
    assert_eq!(ipv4s(&reply.answers), [Ipv4Addr::new(10, 253, 0, 2)]);

    let stats = server.stats();
    assert_eq!((stats.global_answers, stats.global_nodata), (4, 1));
    assert_eq!((stats.forwarded, stats.malformed), (0, 0));
}

#[tokio::test]
async fn names_are_case_insensitive_and_the_question_keeps_its_case() {
    let server = start(None).await;
    let reply = udp(
        server.local_addr(),
        &query("WeB.sHoP.GLOBAL.", RecordType::A, Some(1232)),
    )
    .await;
    assert_eq!(ipv4s(&reply.answers), [Ipv4Addr::new(10, 253, 0, 1)]);
    assert_eq!(reply.queries[0].name().to_string(), "WeB.sHoP.GLOBAL.");
}

#[tokio::test]
async fn srv_lists_the_ports_with_the_service_as_target() {
    let server = start(None).await;
    let addr = server.local_addr();
    let reply = udp(
        addr,
        &query("_http._tcp.web.shop.global.", RecordType::SRV, None),
    )
    .await;
    assert_eq!(reply.answers.len(), 1);
    let RData::SRV(srv) = &reply.answers[0].data else {
        panic!("{reply}")
    };
    assert_eq!((srv.priority, srv.port), (0, 80));
    assert!(srv.weight <= 1);
    assert_eq!(srv.target, Name::from_ascii("web.shop.global.").unwrap());
    // The target's addresses come along as additional data.
    assert_eq!(ipv4s(&reply.additionals), [Ipv4Addr::new(10, 253, 0, 1)]);
    assert_eq!(ipv6s(&reply.additionals).len(), 1);

    let reply = udp(
        addr,
        &query("_grpc._tcp.web.shop.global.", RecordType::SRV, None),
    )
    .await;
    let RData::SRV(srv) = &reply.answers[0].data else {
        panic!("{reply}")
    };
    assert_eq!(srv.port, 9090);

    let reply = udp(
        addr,
        &query("_http._tcp.east.web.shop.global.", RecordType::SRV, None),
    )
    .await;
    let RData::SRV(srv) = &reply.answers[0].data else {
        panic!("{reply}")
    };
    assert_eq!(
        (srv.port, srv.target.to_string().as_str()),
        (8080, "east.web.shop.global.")
    );

    // A port the service does not have.
    let reply = udp(
        addr,
        &query("_smtp._tcp.web.shop.global.", RecordType::SRV, None),
    )
    .await;
    assert_negative(&reply, ResponseCode::NXDomain);
}

#[tokio::test]
async fn wrong_types_get_nodata_and_unknown_names_nxdomain_with_the_soa() {
    let server = start(None).await;
    let addr = server.local_addr();
    for (name, rtype) in [
        ("web.shop.global.", RecordType::TXT),
        ("web.shop.global.", RecordType::MX),
        ("web.shop.global.", RecordType::SRV),
        ("_http._tcp.web.shop.global.", RecordType::A),
        // Names with something below them exist (RFC 8020): NODATA.
        ("shop.global.", RecordType::A),
        ("_tcp.web.shop.global.", RecordType::SRV),
    ] {
        let reply = udp(addr, &query(name, rtype, None)).await;
        assert_negative(&reply, ResponseCode::NoError);
    }
    for name in [
        "db.shop.global.",
        "x.global.",
        "web.shop.cluster.local.global.",
        "a.b.c.web.shop.global.",
    ] {
        let reply = udp(addr, &query(name, RecordType::A, None)).await;
        assert_negative(&reply, ResponseCode::NXDomain);
    }
    let stats = server.stats();
    assert_eq!(
        (stats.global_nodata, stats.global_nxdomain, stats.forwarded),
        (6, 4, 0)
    );
}

#[tokio::test]
async fn the_apex_answers_soa_and_ns() {
    let server = start(None).await;
    let addr = server.local_addr();
    let reply = udp(addr, &query("global.", RecordType::SOA, None)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    let RData::SOA(soa) = &reply.answers[0].data else {
        panic!("{reply}")
    };
    assert_eq!(soa.minimum, TTL);
    assert_eq!(soa.mname.to_string(), "localhost.");
    // RFC 6303 style: the zone's NS comes along in the authority section.
    assert!(
        matches!(&reply.authorities[0].data, RData::NS(ns) if ns.0.to_string() == "localhost.")
    );

    let reply = udp(addr, &query("GLOBAL.", RecordType::NS, None)).await;
    assert!(matches!(&reply.answers[0].data, RData::NS(_)), "{reply}");
    let reply = udp(addr, &query("global.", RecordType::A, None)).await;
    assert_negative(&reply, ResponseCode::NoError);
}

#[tokio::test]
async fn edns_queries_get_an_opt_record_back_and_plain_ones_do_not() {
    let server = start(None).await;
    let addr = server.local_addr();
    for (name, rtype) in [
        ("web.shop.global.", RecordType::A),
        ("nope.global.", RecordType::A),
        ("global.", RecordType::SOA),
    ] {
        let reply = udp(addr, &query(name, rtype, Some(1232))).await;
        let edns = reply.edns.as_ref().expect("no OPT in the answer");
        assert_eq!(edns.version(), 0);
        assert!(edns.max_payload() >= 512);
        let reply = udp(addr, &query(name, rtype, None)).await;
        assert!(reply.edns.is_none());
    }
    // An EDNS version we do not speak: BADVERS (RFC 6891 §6.1.3).
    let mut message = query("web.shop.global.", RecordType::A, Some(1232));
    if let Some(edns) = message.edns.as_mut() {
        edns.set_version(1);
    }
    let reply = udp(addr, &message).await;
    // 16 is BADVERS with EDNS (and BADSIG in TSIG, which is how hickory names it).
    assert_eq!(u16::from(reply.metadata.response_code), 16);
}

#[tokio::test]
async fn hickory_resolver_and_dig_see_the_same_names() {
    use hickory_resolver::TokioResolver;
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;

    let server = start(None).await;
    let addr = server.local_addr();
    let mut udp_conn = ConnectionConfig::udp();
    udp_conn.port = addr.port();
    let ns = NameServerConfig::new(addr.ip(), true, vec![udp_conn]);
    let config = ResolverConfig::from_name_servers(vec![ns]);
    let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .build()
        .unwrap();
    let ips = resolver.lookup_ip("web.shop.global.").await.unwrap();
    assert!(ips.iter().any(|ip| ip == Ipv4Addr::new(10, 253, 0, 1)));
    let srv = resolver
        .srv_lookup("_http._tcp.east.web.shop.global.")
        .await
        .unwrap();
    let ports: Vec<u16> = srv
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.port),
            _ => None,
        })
        .collect();
    assert_eq!(ports, [8080]);
    assert!(resolver.lookup_ip("missing.shop.global.").await.is_err());

    let Some(out) = dig(addr, &["+short", "east.web.shop.global", "A"]).await else {
        return;
    };
    assert_eq!(out.trim(), "10.253.0.2");
    let Some(out) = dig(addr, &["nope.shop.global", "A"]).await else {
        return;
    };
    assert!(
        out.contains("status: NXDOMAIN") && out.contains("flags: qr aa"),
        "{out}"
    );
    assert!(out.contains("IN\tSOA\tlocalhost. nobody.invalid."), "{out}");
}

#[tokio::test]
async fn zone_transfers_are_refused() {
    let server = start(None).await;
    for name in ["global.", "example.com."] {
        let reply = tcp(server.local_addr(), &query(name, RecordType::AXFR, None)).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{name}"
        );
        assert!(reply.answers.is_empty());
    }
}
