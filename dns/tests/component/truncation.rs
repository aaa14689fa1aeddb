//! Large answers: truncated over UDP, whole over TCP.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::support::{dig, query, start, tcp, udp};

const BIG: &str = "_pg._tcp.many.shop.global.";

#[tokio::test]
async fn big_answers_set_tc_over_udp_and_come_whole_over_tcp() {
    let server = start(None).await;
    let addr = server.local_addr();

    // No EDNS: 512 bytes. A small EDNS size: that size. Either way, TC and only the question,
    // with OPT when the client sent it, so that it retries over TCP.
    for edns in [None, Some(512), Some(1232)] {
        let reply = udp(addr, &query(BIG, RecordType::SRV, edns)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.metadata.truncation, "{edns:?}: {reply}");
        assert!(reply.answers.is_empty());
        assert_eq!(reply.queries.len(), 1);
        assert_eq!(reply.edns.is_some(), edns.is_some());
    }
    // A client that takes 4096 bytes gets all 100 records in one datagram.
    let reply = udp(addr, &query(BIG, RecordType::SRV, Some(4096))).await;
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 100);

    let reply = tcp(addr, &query(BIG, RecordType::SRV, None)).await;
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 100);
    assert_eq!(server.stats().global_answers, 5);
}

#[tokio::test]
async fn dig_sees_tc_and_falls_back_to_tcp() {
    let server = start(None).await;
    let addr = server.local_addr();
    let Some(out) = dig(addr, &["+ignore", "+bufsize=1232", BIG, "SRV"]).await else {
        return;
    };
    assert!(out.contains("flags: qr aa tc rd ra;"), "{out}");
    let Some(out) = dig(addr, &["+tcp", BIG, "SRV"]).await else {
        return;
    };
    assert!(out.contains("ANSWER: 100,"), "{out}");
    // Plain dig retries over TCP by itself.
    let Some(out) = dig(addr, &[BIG, "SRV"]).await else {
        return;
    };
    assert!(out.contains("ANSWER: 100,"), "{out}");
}
