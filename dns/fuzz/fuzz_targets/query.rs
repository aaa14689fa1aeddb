//! Fuzzes the query path from raw bytes: the fast path, the parser, the catalog and the
//! encoder, over both transports. `cargo +nightly fuzz run query` from `dns/`; the seed corpus
//! in `corpus/query/` is replayed on stable by `tests/component/corpus.rs`.

#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use dns::{GlobalName, QueryHandler, Transport, Zone};
use libfuzzer_sys::fuzz_target;
use peerd_types::{Protocol, ServicePort};

struct Fixture {
    runtime: tokio::runtime::Runtime,
    handler: QueryHandler,
}

/// The same names as the component tests: plain, cluster-pinned, and one with 100 ports.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let port = |name: &str, port| ServicePort {
            name: name.into(),
            port,
            protocol: Protocol::Http,
        };
        let zone = Zone {
            names: vec![
                GlobalName {
                    name: "web.shop.global".into(),
                    v4: Some(Ipv4Addr::new(10, 253, 0, 1)),
                    v6: Some("fd00:253::1".parse().unwrap()),
                    ports: vec![port("http", 80), port("grpc", 9090)],
                },
                GlobalName {
                    name: "east.web.shop.global".into(),
                    v4: Some(Ipv4Addr::new(10, 253, 0, 2)),
                    v6: None,
                    ports: vec![port("http", 8080)],
                },
                GlobalName {
                    name: "many.shop.global".into(),
                    v4: Some(Ipv4Addr::new(10, 253, 0, 3)),
                    v6: None,
                    ports: (0..100).map(|i| port("pg", 5000 + i)).collect(),
                },
            ],
        };
        Fixture {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
            // No upstream: names outside `.global` get SERVFAIL without touching the network.
            handler: QueryHandler::authoritative_only(&zone, 5),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    for transport in [Transport::Udp, Transport::Tcp] {
        if let Some(reply) = fixture
            .runtime
            .block_on(fixture.handler.handle(data, transport))
        {
            // A UDP answer never exceeds what the client can take (4096 at most).
            assert!(transport == Transport::Tcp || reply.len() <= 4096);
            assert!(reply.len() >= 12);
        }
    }
});
