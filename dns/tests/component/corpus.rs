//! The fuzz corpus (`fuzz/corpus/query/`) replayed through the fuzz target's entry point and
//! over a real socket.

use std::path::PathBuf;

use dns::{QueryHandler, Transport};
use hickory_proto::op::{Message, ResponseCode};

use std::time::Duration;

use hickory_proto::rr::RecordType;

use super::support::{Upstream, query, start, udp, udp_raw_within, zone};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/query");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn every_corpus_entry_gets_the_expected_kind_of_answer() {
    let handler = QueryHandler::authoritative_only(&zone(), 5);
    let entries = corpus();
    assert!(entries.len() >= 12, "only {} corpus entries", entries.len());
    let mut junk = 0;
    for (name, packet) in &entries {
        for transport in [Transport::Udp, Transport::Tcp] {
            let reply = handler.handle(packet, transport).await;
            let code = reply
                .as_deref()
                .map(|r| Message::from_vec(r).unwrap().metadata.response_code);
            if name.starts_with("valid-") {
                assert!(
                    matches!(code, Some(c) if c != ResponseCode::FormErr),
                    "{name}: {code:?}"
                );
            } else {
                junk += 1;
                assert!(
                    matches!(code, None | Some(ResponseCode::FormErr)),
                    "{name}: {code:?}"
                );
            }
        }
    }
    assert_eq!(handler.stats().malformed, junk);
}

#[tokio::test]
async fn the_corpus_over_udp_leaves_the_server_answering() {
    // A live upstream, so that forwarded entries are answered at once (REFUSED).
    let upstream = Upstream::start().await;
    let server = start(Some(upstream.addr)).await;
    let addr = server.local_addr();
    let entries = corpus();
    for (name, packet) in &entries {
        let wait = Duration::from_millis(if name.starts_with("valid-") {
            3000
        } else {
            200
        });
        let reply = udp_raw_within(addr, packet, wait).await;
        if name.starts_with("valid-") {
            assert!(reply.is_some(), "{name} got no answer");
        }
    }
    let reply = udp(addr, &query("web.shop.global.", RecordType::A, None)).await;
    assert_eq!(reply.answers.len(), 1);
    let valid = entries
        .iter()
        .filter(|(n, _)| n.starts_with("valid-"))
        .count() as u64;
    let stats = server.stats();
    assert_eq!(stats.malformed, entries.len() as u64 - valid);
}
