//! Fuzzes the query path from raw bytes: the fast path, the parser, the catalog and the
//! encoder, over both transports. `cargo +nightly fuzz run query` from `dns/`; the seed corpus
//! in `corpus/query/` is replayed on stable by `tests/component/corpus.rs`.

#![no_main]

use std::sync::OnceLock;

use dns::{QueryHandler, Transport};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/component/fixture.rs"]
mod fixture;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    handler: QueryHandler,
}

/// The same names as the component tests (their `fixture.rs`, shared).
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let zone = fixture::zone();
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
