//! Malformed and random packets: answered FORMERR or dropped, always counted, and the server
//! keeps answering.

use std::net::SocketAddr;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::support::{query, start, tcp, tcp_exchange, udp, udp_raw, udp_raw_within};

/// Deterministic pseudo-random bytes (xorshift64*): the same junk on every run.
struct Junk(u64);

impl Junk {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn packet(&mut self, max: u64) -> Vec<u8> {
        let len = self.next() % max;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Hand-made bad queries: each is counted once.
fn crafted() -> Vec<Vec<u8>> {
    let header = |flags: [u8; 2], counts: [u16; 4]| {
        let mut h = vec![0xAB, 0xCD, flags[0], flags[1]];
        for c in counts {
            h.extend_from_slice(&c.to_be_bytes());
        }
        h
    };
    let question = |name: &[u8]| [name, &[0, 1, 0, 1]].concat();
    vec![
        vec![],
        vec![0x12],
        vec![0; 11],
        // A question count with no question.
        header([1, 0], [1, 0, 0, 0]),
        // No question at all: FORMERR (RFC 9619).
        header([1, 0], [0, 0, 0, 0]),
        // Two questions.
        [
            header([1, 0], [2, 0, 0, 0]),
            question(b"\x01a\x06global\x00"),
            question(b"\x01b\x06global\x00"),
        ]
        .concat(),
        // A label running past the end.
        [header([1, 0], [1, 0, 0, 0]), b"\x3fweb".to_vec()].concat(),
        // A compression pointer to itself.
        [header([1, 0], [1, 0, 0, 0]), vec![0xC0, 12, 0, 1, 0, 1]].concat(),
        // A response, even a well-formed one, is never answered.
        [
            header([0x81, 0x80], [1, 0, 0, 0]),
            question(b"\x03web\x04shop\x06global\x00"),
        ]
        .concat(),
        // Claims an answer record that is not there.
        [
            header([1, 0], [1, 1, 0, 0]),
            question(b"\x03web\x04shop\x06global\x00"),
        ]
        .concat(),
        // Two OPT records (RFC 6891 §6.1.1: FORMERR).
        [
            header([1, 0], [1, 0, 0, 2]),
            question(b"\x03web\x04shop\x06global\x00"),
            vec![0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0],
            vec![0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0],
        ]
        .concat(),
    ]
}

async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let len = stream.read_u16().await.ok()?;
    let mut frame = vec![0; usize::from(len)];
    stream.read_exact(&mut frame).await.ok()?;
    Some(frame)
}

/// A query answers, which also proves every earlier datagram has been read.
async fn still_answers(addr: SocketAddr) {
    let reply = udp(addr, &query("web.shop.global.", RecordType::A, None)).await;
    assert_eq!(reply.answers.len(), 1);
}

#[tokio::test]
async fn malformed_udp_is_formerr_or_a_counted_drop() {
    let server = start(None).await;
    let addr = server.local_addr();
    let packets = crafted();
    for packet in &packets {
        let answerable = packet.len() >= 12 && packet[2] & 0x80 == 0;
        if answerable {
            let reply = udp_raw(addr, packet).await.expect("no FORMERR");
            let reply = Message::from_vec(&reply).unwrap();
            assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
            assert_eq!(reply.metadata.id, 0xABCD);
        } else {
            let wait = std::time::Duration::from_millis(200);
            assert!(udp_raw_within(addr, packet, wait).await.is_none());
        }
        still_answers(addr).await;
    }
    assert_eq!(server.stats().malformed, packets.len() as u64);
}

#[tokio::test]
async fn random_udp_junk_is_counted_and_does_not_stop_the_server() {
    let server = start(None).await;
    let addr = server.local_addr();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut junk = Junk(0x5EED_1234_ABCD_0001);
    let mut sent = 0;
    for _ in 0..20 {
        // Batches small enough for the socket buffer, so none is lost before it is counted.
        for _ in 0..50 {
            socket.send_to(&junk.packet(700), addr).await.unwrap();
            sent += 1;
        }
        still_answers(addr).await;
    }
    let stats = server.stats();
    assert_eq!(stats.malformed, sent);
    assert_eq!(stats.global_answers, 20);
}

#[tokio::test]
async fn malformed_tcp_is_formerr_or_a_closed_connection_and_counted() {
    let server = start(None).await;
    let addr = server.local_addr();
    let valid = query("web.shop.global.", RecordType::A, None)
        .to_vec()
        .unwrap();

    // FORMERR, then the same connection keeps working.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let packets: Vec<_> = crafted()
        .into_iter()
        .filter(|p| p.len() >= 12 && p[2] & 0x80 == 0)
        .collect();
    for packet in &packets {
        let reply = tcp_exchange(&mut stream, packet)
            .await
            .expect("connection closed");
        assert_eq!(
            Message::from_vec(&reply).unwrap().metadata.response_code,
            ResponseCode::FormErr
        );
    }
    assert!(tcp_exchange(&mut stream, &valid).await.is_some());
    let mut counted = packets.len() as u64;

    // Random frames on one connection, then a zero-length frame, which ends it.
    let mut junk = Junk(0xDEAD_BEEF_0000_0042);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for _ in 0..200 {
        let mut packet = junk.packet(300);
        packet.push(0xFF); // never empty: that would end the connection early
        let len = u16::try_from(packet.len()).unwrap();
        stream
            .write_all(&[&len.to_be_bytes()[..], &packet].concat())
            .await
            .unwrap();
        counted += 1;
    }
    // Skip the FORMERRs queued for the junk until the valid query's answer.
    let id = Message::from_vec(&valid).unwrap().metadata.id;
    let mut reply = tcp_exchange(&mut stream, &valid).await;
    while let Some(message) = reply.as_deref().map(|r| Message::from_vec(r).unwrap()) {
        if message.metadata.id == id && message.answers.len() == 1 {
            break;
        }
        reply = read_frame(&mut stream).await;
    }
    assert!(reply.is_some(), "the connection closed before answering");
    assert!(tcp_exchange(&mut stream, &[]).await.is_none());
    counted += 1;

    // A frame cut short by the client closing.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&[0, 40, 1, 2, 3]).await.unwrap();
    drop(stream);

    // A client that stalls mid-frame holds only its own connection.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(&[0, 40, 1]).await.unwrap();
    let reply = tcp(addr, &query("east.web.shop.global.", RecordType::A, None)).await;
    assert_eq!(reply.answers.len(), 1);
    still_answers(addr).await;

    // The cut frame is counted once the server has seen the close.
    for _ in 0..100 {
        if server.stats().malformed == counted + 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(server.stats().malformed, counted + 1);
    drop(stalled);
}

#[tokio::test]
async fn an_oversized_datagram_is_counted_not_answered() {
    let server = start(None).await;
    let addr = server.local_addr();
    // A valid-looking query padded past the receive buffer: it arrives cut.
    let mut packet = query("web.shop.global.", RecordType::A, None)
        .to_vec()
        .unwrap();
    packet.resize(9000, 0);
    let wait = std::time::Duration::from_millis(200);
    assert!(udp_raw_within(addr, &packet, wait).await.is_none());
    still_answers(addr).await;
    assert_eq!(server.stats().malformed, 1);
}
