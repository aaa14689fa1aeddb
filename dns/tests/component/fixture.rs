//! The zone every component test serves, shared with the fuzz target
//! (`fuzz/fuzz_targets/query.rs` includes this file), so that the seed corpus replayed by
//! `corpus.rs` meets the names it was written for. Depends on `dns` and `peerd-types` only.

use std::net::Ipv4Addr;

use dns::{GlobalName, Zone};
use peerd_types::{Protocol, ServicePort};

fn port(name: &str, port: u16) -> ServicePort {
    ServicePort {
        name: name.into(),
        port,
        protocol: Protocol::Http,
    }
}

/// `web.shop.global` (v4, v6, http + grpc), `east.web.shop.global` (v4, http) and
/// `many.shop.global` (v4, 100 ports all named `pg`: a large SRV answer).
pub fn zone() -> Zone {
    Zone {
        names: vec![
            GlobalName {
                name: "web.shop.global".into(),
                v4: Some(Ipv4Addr::new(10, 253, 0, 1)),
                v6: Some("fd00:253::1".parse().unwrap()),
                ports: vec![port("http", 80), port("grpc", 9090)],
            },
            GlobalName {
                name: "east.web.shop.global.".into(),
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
    }
}
