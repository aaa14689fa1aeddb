//! Fixtures and a small DNS client.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dns::{DnsConfig, DnsServer};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;

pub use super::fixture::zone;

pub const TTL: u32 = 7;
const WAIT: Duration = Duration::from_secs(3);

/// A server for `zone()` that forwards to `upstream` (default: a loopback port nobody
/// answers, so nothing can leave the host).
pub async fn start(upstream: Option<SocketAddr>) -> DnsServer {
    let config = DnsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: vec![upstream.unwrap_or_else(|| "127.0.0.1:9".parse().unwrap())],
        ttl: TTL,
    };
    DnsServer::start(config, zone()).await.unwrap()
}

/// A hickory-server authority for `example.test.` on loopback that remembers every name it is
/// asked.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    _server: Server<Recording>,
}

struct Recording {
    catalog: Catalog,
    seen: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl RequestHandler for Recording {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let names = request.queries.queries().iter();
        let names: Vec<String> = names.map(|q| q.name().to_string()).collect();
        self.seen.lock().unwrap().extend(names);
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

impl Upstream {
    pub async fn start() -> Self {
        let origin = Name::from_ascii("example.test.").unwrap();
        let name = |s: &str| Name::from_ascii(s).unwrap();
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let soa = SOA::new(
            name("ns.example.test."),
            name("admin.example.test."),
            1,
            60,
            60,
            60,
            30,
        );
        for record in [
            Record::from_rdata(origin.clone(), 300, RData::SOA(soa)),
            Record::from_rdata(
                name("www.example.test."),
                300,
                RData::A(A::new(192, 0, 2, 10)),
            ),
            Record::from_rdata(
                name("alias.example.test."),
                300,
                RData::CNAME(CNAME(name("www.example.test."))),
            ),
        ] {
            assert!(zone.upsert_mut(record, 1));
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut server = Server::new(Recording {
            catalog,
            seen: seen.clone(),
        });
        // The same port for UDP and TCP; the port UDP got may be taken for TCP (another test's
        // connection): then another pair.
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            match TcpListener::bind(udp.local_addr().unwrap()).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => panic!("{e}"),
            }
        };
        let addr = udp.local_addr().unwrap();
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        Self {
            addr,
            seen,
            _server: server,
        }
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

pub fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(size);
        message.set_edns(opt);
    }
    message
}

/// One query over UDP; the response must carry the query's ID.
pub async fn udp(server: SocketAddr, message: &Message) -> Message {
    udp_within(server, message, WAIT).await
}

/// One query over UDP, waiting up to `wait`.
pub async fn udp_within(server: SocketAddr, message: &Message, wait: Duration) -> Message {
    let reply = udp_raw_within(server, &message.to_vec().unwrap(), wait)
        .await
        .expect("no UDP answer");
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, message.metadata.id);
    reply
}

/// Sends bytes over UDP and waits up to `WAIT` for one datagram back.
pub async fn udp_raw(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    udp_raw_within(server, packet, WAIT).await
}

/// Sends bytes over UDP and waits up to `wait` for one datagram back.
pub async fn udp_raw_within(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, server).await.unwrap();
    let mut buf = vec![0; 65_535];
    let (len, _) = timeout(wait, socket.recv_from(&mut buf)).await.ok()?.ok()?;
    buf.truncate(len);
    Some(buf)
}

/// One query over a fresh TCP connection.
pub async fn tcp(server: SocketAddr, message: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let reply = tcp_exchange(&mut stream, &message.to_vec().unwrap())
        .await
        .expect("no TCP answer");
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, message.metadata.id);
    reply
}

/// Writes one length-prefixed message and reads one back; `None` if the server closed.
pub async fn tcp_exchange(stream: &mut TcpStream, packet: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(packet.len()).unwrap();
    stream.write_all(&len.to_be_bytes()).await.ok()?;
    stream.write_all(packet).await.ok()?;
    let len = timeout(WAIT, stream.read_u16()).await.ok()?.ok()?;
    let mut reply = vec![0; usize::from(len)];
    timeout(WAIT, stream.read_exact(&mut reply))
        .await
        .ok()?
        .ok()?;
    Some(reply)
}

pub fn ipv4s(records: &[Record]) -> Vec<Ipv4Addr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

pub fn ipv6s(records: &[Record]) -> Vec<Ipv6Addr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::AAAA(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// A negative answer: `code`, no answers, and the `global.` SOA (TTL and minimum = `TTL`).
pub fn assert_negative(reply: &Message, code: ResponseCode) {
    assert_eq!(reply.metadata.response_code, code, "{reply}");
    assert!(reply.metadata.authoritative);
    assert!(reply.answers.is_empty(), "{reply}");
    assert_eq!(reply.authorities.len(), 1, "{reply}");
    let soa = &reply.authorities[0];
    assert_eq!(soa.name, Name::from_ascii("global.").unwrap());
    assert_eq!(soa.ttl, TTL);
    let RData::SOA(data) = &soa.data else {
        panic!("not a SOA: {soa}")
    };
    assert_eq!(data.minimum, TTL);
}

/// `dig`, or `None` (and a loud note) when it is not installed; under `CI=true` that fails.
/// Runs off the runtime's threads: the server under test answers on them.
pub async fn dig(server: SocketAddr, args: &[&str]) -> Option<String> {
    let mut all = vec![
        format!("@{}", server.ip()),
        "-p".into(),
        server.port().to_string(),
        "+time=2".into(),
        "+tries=1".into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let output =
        tokio::task::spawn_blocking(move || std::process::Command::new("dig").args(&all).output())
            .await
            .unwrap();
    match output {
        Ok(out) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Err(error) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED: dig is not available ({error}); install bind9-dnsutils");
            None
        }
        Err(error) => panic!("dig is required under CI=true: {error}"),
    }
}
