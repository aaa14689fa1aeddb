//! The query path from bytes to bytes, independent of sockets: parse, hand to the hickory
//! [`Catalog`], encode with the transport's size limit. The server's UDP and TCP loops, the
//! fuzz target and the corpus test all enter here.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use hickory_proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_proto::rr::{LowerName, Name, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponse};
use tracing::trace;

use crate::authority::GlobalZone;
use crate::forward::{Forwarder, build_resolver};
use crate::stats::{Counters, DnsStats, bump};
use crate::zone::{Zone, apex};
use crate::{DnsError, Transport};

/// Largest UDP answer sent even when a client advertises more (the EDNS ceiling most servers
/// use); larger answers are truncated and the client retries over TCP.
const MAX_UDP_PAYLOAD: u16 = 4096;
/// RFC 1035 §4.2.1: without EDNS a UDP message is at most 512 bytes.
const MIN_UDP_PAYLOAD: u16 = 512;

/// The transport-independent query path: `global.` answered from the current [`Zone`], every
/// other name forwarded. Cheap to share (`Arc`) between tasks.
pub struct QueryHandler {
    catalog: Catalog,
    global: Arc<GlobalZone>,
    global_origin: LowerName,
    stats: Arc<Counters>,
    /// Recursion available: set in every response when there is an upstream to forward to.
    ra: bool,
}

/// A packet after the first look.
pub(crate) enum Parsed {
    /// A query; `local` is true when it is answered from the zone without any I/O.
    Query { request: Box<Request>, local: bool },
    /// Not a usable query, but with a header to answer FORMERR to.
    Reply(Vec<u8>),
    /// Nothing to answer (too short, or itself a response).
    Drop,
}

impl QueryHandler {
    /// A handler that serves `zone` with records of `ttl` seconds and does not forward: every
    /// other name gets SERVFAIL (counted as a forward error). For tests and fuzzing.
    pub fn authoritative_only(zone: &Zone, ttl: u32) -> Self {
        let stats = Arc::new(Counters::default());
        let forwarder = Forwarder::new(None, stats.clone());
        Self::assemble(zone, ttl, forwarder, stats, false)
    }

    /// A handler that forwards names outside `global.` to `upstreams` (none: SERVFAIL).
    pub(crate) fn new(zone: &Zone, ttl: u32, upstreams: &[SocketAddr]) -> Result<Self, DnsError> {
        let stats = Arc::new(Counters::default());
        let resolver = match upstreams {
            [] => None,
            _ => Some(build_resolver(upstreams)?),
        };
        let ra = resolver.is_some();
        let forwarder = Forwarder::new(resolver, stats.clone());
        Ok(Self::assemble(zone, ttl, forwarder, stats, ra))
    }

    fn assemble(
        zone: &Zone,
        ttl: u32,
        forwarder: Forwarder,
        stats: Arc<Counters>,
        ra: bool,
    ) -> Self {
        let global = Arc::new(GlobalZone::new(zone, ttl, stats.clone()));
        let global_origin = LowerName::new(&apex());
        let mut catalog = Catalog::new();
        catalog.upsert(global_origin.clone(), vec![global.clone()]);
        catalog.upsert(LowerName::new(&Name::root()), vec![Arc::new(forwarder)]);
        Self {
            catalog,
            global,
            global_origin,
            stats,
            ra,
        }
    }

    /// Answers one DNS message as received on `transport` (without TCP's length prefix).
    /// `None` means the packet is dropped; either way, junk is counted in [`DnsStats::malformed`].
    pub async fn handle(&self, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let src = SocketAddr::from((Ipv4Addr::LOCALHOST, 53));
        self.respond(packet, src, transport).await
    }

    /// [`QueryHandler::handle`] for a message from `src`: the fast path, else the catalog.
    pub(crate) async fn respond(
        &self,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        if let Some(reply) = self.fast_answer(packet, transport) {
            return Some(reply);
        }
        match self.parse(packet, src, transport) {
            Parsed::Query { request, .. } => Some(self.answer(&request, transport).await),
            Parsed::Reply(reply) => Some(reply),
            Parsed::Drop => None,
        }
    }

    /// Replaces the `.global` names.
    pub fn update(&self, zone: &Zone) {
        self.global.replace(zone);
    }

    /// The counters so far.
    pub fn stats(&self) -> DnsStats {
        self.stats.snapshot()
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.stats
    }

    /// The precomputed `.global` answer, when the packet has the common shape.
    pub(crate) fn fast_answer(&self, packet: &[u8], transport: Transport) -> Option<Vec<u8>> {
        self.global.fast_answer(packet, self.ra, |edns| {
            usize::from(size_limit(transport, edns))
        })
    }

    pub(crate) fn parse(&self, packet: &[u8], src: SocketAddr, transport: Transport) -> Parsed {
        let protocol = match transport {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        };
        let request = match Request::from_bytes(packet.to_vec(), src, protocol) {
            Ok(request) => request,
            Err(error) => {
                trace!(%src, %error, "malformed packet");
                bump(&self.stats.malformed);
                return formerr(packet).map_or(Parsed::Drop, Parsed::Reply);
            }
        };
        // Never answer a response: that is how reflection loops start.
        if request.metadata.message_type == MessageType::Response {
            bump(&self.stats.malformed);
            return Parsed::Drop;
        }
        let queries = request.queries.queries();
        if queries.len() != 1 {
            // The catalog answers FORMERR (RFC 9619: exactly one question).
            bump(&self.stats.malformed);
        }
        let local = queries
            .first()
            .is_none_or(|q| self.global_origin.zone_of(q.name()));
        Parsed::Query {
            request: Box::new(request),
            local,
        }
    }

    pub(crate) async fn answer(&self, request: &Request, transport: Transport) -> Vec<u8> {
        let edns = request.edns.as_ref().map(Edns::max_payload);
        let capture = Capture {
            max_size: size_limit(transport, edns),
            ra: self.ra,
            out: Arc::default(),
        };
        let info = self
            .catalog
            .handle_request::<_, TokioTime>(request, capture.clone())
            .await;
        let encoded = capture
            .out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match encoded {
            Some(bytes) if !info.truncation => bytes,
            Some(_) => truncated(request, &info),
            None => servfail(request.metadata.id).1,
        }
    }
}

/// Receives the catalog's response and encodes it within the transport's size limit.
#[derive(Clone)]
struct Capture {
    max_size: u16,
    ra: bool,
    out: Arc<Mutex<Option<Vec<u8>>>>,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut response = response;
        // Answers from `global.` say whether this server also recurses (it forwards).
        response.metadata_mut().recursion_available |= self.ra;
        let id = response.metadata().id;
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(self.max_size);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(error) => {
                trace!(%error, "response did not encode");
                let (header, servfail) = servfail(id);
                bytes = servfail;
                ResponseInfo::from(header)
            }
        };
        *self.out.lock().unwrap_or_else(PoisonError::into_inner) = Some(bytes);
        Ok(info)
    }
}

/// The largest response for `transport`, given the client's EDNS payload size if it sent one.
fn size_limit(transport: Transport, edns: Option<u16>) -> u16 {
    match transport {
        Transport::Udp => edns.map_or(MIN_UDP_PAYLOAD, |size| {
            size.clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
        }),
        Transport::Tcp => u16::MAX,
    }
}

/// A response that did not fit: hickory keeps whatever records fitted, possibly without the
/// OPT record. Send the question alone with TC set instead, plus OPT when the client used EDNS
/// (RFC 6891 §7), so the client retries over TCP (RFC 7766 §5).
fn truncated(request: &Request, info: &ResponseInfo) -> Vec<u8> {
    let mut message = Message::new(info.id, MessageType::Response, info.op_code);
    message.metadata = **info;
    message.metadata.truncation = true;
    for query in request.queries.queries() {
        message.add_query(query.original().clone());
    }
    if let Some(edns) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(edns.max_payload().max(MIN_UDP_PAYLOAD));
        message.set_edns(ours);
    }
    message.to_vec().unwrap_or_else(|_| servfail(info.id).1)
}

/// FORMERR for a packet whose header is readable and which is a query; `None` otherwise.
fn formerr(packet: &[u8]) -> Option<Vec<u8>> {
    let header = header_of(packet)?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    let mut message = Message::new(header.metadata.id, MessageType::Response, OpCode::Query);
    message.metadata = Metadata::response_from_request(&header.metadata);
    message.metadata.response_code = ResponseCode::FormErr;
    message.to_vec().ok()
}

/// A bare SERVFAIL header (twelve bytes), for when a response cannot be encoded.
fn servfail(id: u16) -> (Header, Vec<u8>) {
    let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    let mut bytes = Vec::with_capacity(12);
    // Twelve bytes into an unbounded buffer: emitting a header cannot fail.
    let _ = header.emit(&mut BinEncoder::new(&mut bytes));
    (header, bytes)
}

fn header_of(packet: &[u8]) -> Option<Header> {
    Header::read(&mut BinDecoder::new(packet)).ok()
}

#[cfg(test)]
mod tests;
