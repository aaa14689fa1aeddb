//! Start, update, stop.

use std::net::Ipv4Addr;

use dns::{DnsConfig, DnsError, DnsServer, GlobalName, Zone};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use super::support::{assert_negative, ipv4s, query, start, udp, zone};

fn soa_serial(reply: &hickory_proto::op::Message) -> u32 {
    match &reply.answers[0].data {
        RData::SOA(soa) => soa.serial,
        other => panic!("not a SOA: {other}"),
    }
}

#[tokio::test]
async fn an_update_is_visible_to_the_next_query() {
    let server = start(None).await;
    let addr = server.local_addr();
    let serial = soa_serial(&udp(addr, &query("global.", RecordType::SOA, None)).await);
    assert_negative(
        &udp(addr, &query("api.shop.global.", RecordType::A, None)).await,
        ResponseCode::NXDomain,
    );

    let mut next = zone();
    next.names.push(GlobalName {
        name: "api.shop.global".into(),
        v4: Some(Ipv4Addr::new(10, 253, 0, 9)),
        v6: None,
        ports: vec![],
    });
    next.names.retain(|n| n.name != "many.shop.global");
    server.update(next);

    let reply = udp(addr, &query("api.shop.global.", RecordType::A, None)).await;
    assert_eq!(ipv4s(&reply.answers), [Ipv4Addr::new(10, 253, 0, 9)]);
    assert_negative(
        &udp(addr, &query("many.shop.global.", RecordType::A, None)).await,
        ResponseCode::NXDomain,
    );
    let changed = soa_serial(&udp(addr, &query("global.", RecordType::SOA, None)).await);
    assert!(changed > serial);

    server.update(Zone::default());
    assert_negative(
        &udp(addr, &query("web.shop.global.", RecordType::A, None)).await,
        ResponseCode::NXDomain,
    );
}

#[tokio::test]
async fn updates_while_queries_run_never_lose_an_answer() {
    let server = std::sync::Arc::new(start(None).await);
    let addr = server.local_addr();
    let updater = {
        let server = server.clone();
        tokio::spawn(async move {
            for i in 0..200u16 {
                let mut next = zone();
                next.names[0].v4 = Some(Ipv4Addr::new(10, 253, 1, (i % 250) as u8));
                server.update(next);
                tokio::task::yield_now().await;
            }
        })
    };
    for _ in 0..200 {
        let reply = udp(addr, &query("web.shop.global.", RecordType::A, None)).await;
        assert_eq!(reply.answers.len(), 1);
    }
    updater.await.unwrap();
}

#[tokio::test]
async fn a_busy_port_is_a_clear_error_and_shutdown_frees_it() {
    let server = start(None).await;
    let addr = server.local_addr();
    let config = DnsConfig {
        upstream: vec!["127.0.0.1:9".parse().unwrap()],
        ..DnsConfig::new(addr)
    };
    let error = DnsServer::start(config.clone(), zone())
        .await
        .err()
        .expect("bound twice");
    assert!(matches!(error, DnsError::PortBusy { .. }), "{error:?}");
    assert!(error.to_string().contains("busy"), "{error}");

    server.shutdown().await;
    let again = DnsServer::start(config, zone())
        .await
        .expect("port still held after shutdown");
    assert_eq!(again.local_addr(), addr);
    assert_eq!(
        udp(addr, &query("web.shop.global.", RecordType::A, None))
            .await
            .answers
            .len(),
        1
    );
}
