//! Precomputed `.global` answers for the common query shape, so that the usual A/AAAA/SRV
//! question costs one hash lookup and one copy instead of a trip through the catalog.
//!
//! The common shape: a standard query, one IN question with an uncompressed name, nothing but
//! an optional EDNS(0) OPT record after it. Everything else (including ANY, the apex, names
//! outside `global.`, answers that would be truncated) takes the catalog path, which
//! `handler::tests` checks gives the same answers.
//!
//! Each answer is encoded once, per update, by hickory for the lower-cased question; at query
//! time the client's question is copied over it (same length, so compression pointers into it
//! stay valid) and the header is written fresh.

use std::collections::HashMap;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, Record, RecordSet, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

const HEADER_LEN: usize = 12;
/// `\x06global\x00`: the last label and the root.
const GLOBAL_SUFFIX: &[u8] = b"\x06global\x00";
const CLASS_IN: u16 = 1;
const TYPE_OPT: u16 = 41;
/// The OPT record we append: root name, type, payload size, TTL (all zero), no options.
const OPT_LEN: usize = 11;

/// Answers for every `.global` name, keyed by the lower-cased wire name.
#[derive(Debug, Default)]
pub(crate) struct FastZone {
    nodes: HashMap<Box<[u8]>, FastNode>,
    /// The SOA record after its owner name (type, class, TTL, RDATA); the owner is written as
    /// a pointer to the `global.` at the end of the question.
    soa_tail: Box<[u8]>,
}

/// Answer sections, after the question, for one name.
#[derive(Debug, Default)]
pub(crate) struct FastNode {
    pub a: Option<Body>,
    pub aaaa: Option<Body>,
    pub srv: Option<Body>,
}

/// The sections after the question, and their record counts.
#[derive(Debug)]
pub(crate) struct Body {
    counts: [u16; 3],
    bytes: Box<[u8]>,
}

/// What [`FastZone::answer`] decided, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Answer,
    NoData,
    NxDomain,
}

/// The parts of a query the fast path needs.
struct Question {
    /// End of QTYPE and QCLASS, i.e. where the question ends.
    end: usize,
    qtype: u16,
    /// The client's EDNS payload size, if it sent OPT.
    edns: Option<u16>,
}

impl FastZone {
    pub fn new(soa: &RecordSet) -> Self {
        // The SOA alone, encoded for the apex: `\x06global\x00` then the rest of the record.
        let mut message = Message::new(0, MessageType::Response, OpCode::Query);
        message.add_authorities(soa.records_without_rrsigs().cloned());
        let tail = message
            .to_vec()
            .ok()
            .and_then(|bytes| bytes.get(HEADER_LEN + GLOBAL_SUFFIX.len()..).map(Box::from))
            .unwrap_or_default();
        Self {
            nodes: HashMap::new(),
            soa_tail: tail,
        }
    }

    pub fn insert(&mut self, name: &Name, node: FastNode) {
        if let Ok(wire) = name.to_bytes() {
            self.nodes.insert(wire.into_boxed_slice(), node);
        }
    }

    /// The answer to `packet`, or `None` when the catalog path must answer it. `ra` sets the
    /// recursion-available flag; `max` is the transport's size limit.
    pub fn answer(
        &self,
        packet: &[u8],
        ra: bool,
        max: impl Fn(Option<u16>) -> usize,
    ) -> Option<(Vec<u8>, Outcome)> {
        let question = parse(packet)?;
        let qname = packet.get(HEADER_LEN..question.end - 4)?;
        let mut lower = [0u8; 255];
        let lower = lower.get_mut(..qname.len())?;
        lower.copy_from_slice(qname);
        lower.make_ascii_lowercase();
        if !is_below_global(lower) {
            return None;
        }
        let qtype = fast_type(question.qtype)?;
        let (body, outcome) = match self.nodes.get(&*lower) {
            Some(node) => match qtype {
                FastType::A => node.a.as_ref(),
                FastType::Aaaa => node.aaaa.as_ref(),
                FastType::Srv => node.srv.as_ref(),
                FastType::Other => None,
            }
            .map_or((None, Outcome::NoData), |b| (Some(b), Outcome::Answer)),
            None => (None, Outcome::NxDomain),
        };
        // NXDOMAIN is RCODE 3; NODATA and answers are NOERROR.
        let rcode = if outcome == Outcome::NxDomain { 3 } else { 0 };

        let opt = usize::from(question.edns.is_some());
        let body_len = body.map_or(2 + self.soa_tail.len(), |b| b.bytes.len());
        let len = question.end + body_len + opt * OPT_LEN;
        if len > max(question.edns) {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        // ID; QR, opcode 0, AA, RD copied; RA, CD copied, RCODE (RFC 1035 §4.1.1).
        out.extend_from_slice(packet.get(..2)?);
        let flags = packet.get(2..4)?;
        let (rd, cd) = (flags[0] & 0x01, flags[1] & 0x10);
        out.push(0x80 | 0x04 | rd);
        out.push(if ra { 0x80 } else { 0 } | cd | rcode);
        let [an, ns, ar] = body.map_or([0, 1, 0], |b| b.counts);
        for count in [1, an, ns, ar + opt as u16] {
            out.extend_from_slice(&count.to_be_bytes());
        }
        out.extend_from_slice(packet.get(HEADER_LEN..question.end)?);
        match body {
            Some(body) => out.extend_from_slice(&body.bytes),
            None => {
                // Negative answers carry the SOA (RFC 2308 §3), owned by `global.`: the last
                // eight bytes of the question name.
                let global_at = u16::try_from(question.end - 4 - GLOBAL_SUFFIX.len()).ok()?;
                out.extend_from_slice(&(0xC000 | global_at).to_be_bytes());
                out.extend_from_slice(&self.soa_tail);
            }
        }
        if let Some(payload) = question.edns {
            // Same as the catalog: advertise the client's size, at least 512, version 0.
            out.extend_from_slice(&[0, 0, TYPE_OPT as u8]);
            out.extend_from_slice(&payload.max(512).to_be_bytes());
            out.extend_from_slice(&[0; 6]);
        }
        Some((out, outcome))
    }
}

/// Encodes the response to `name`/`qtype` with `answers` and `additionals`, and keeps what
/// follows the question.
pub(crate) fn body(
    name: &Name,
    qtype: RecordType,
    answers: &RecordSet,
    additionals: &[&RecordSet],
) -> Option<Body> {
    let mut message = Message::new(0, MessageType::Response, OpCode::Query);
    message.add_query(Query::query(name.clone(), qtype));
    message.add_answers(answers.records_without_rrsigs().cloned());
    let glue: Vec<Record> = additionals
        .iter()
        .flat_map(|set| set.records_without_rrsigs().cloned())
        .collect();
    message.add_additionals(glue);
    let bytes = message.to_vec().ok()?;
    let question_end = HEADER_LEN + name.to_bytes().ok()?.len() + 4;
    let count = |at: usize| Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
    Some(Body {
        counts: [count(6)?, count(8)?, count(10)?],
        bytes: bytes.get(question_end..)?.into(),
    })
}

enum FastType {
    A,
    Aaaa,
    Srv,
    /// A data type the name has no records of: NODATA.
    Other,
}

/// Meta and special types (OPT, TSIG, AXFR, ANY, ...) and class-like oddities go the slow way.
fn fast_type(qtype: u16) -> Option<FastType> {
    match qtype {
        1 => Some(FastType::A),
        28 => Some(FastType::Aaaa),
        33 => Some(FastType::Srv),
        0 | TYPE_OPT | 128..=255 => None,
        _ => Some(FastType::Other),
    }
}

/// Strictly below `global.`: at least one label before it.
fn is_below_global(name: &[u8]) -> bool {
    name.len() > GLOBAL_SUFFIX.len() && name.ends_with(GLOBAL_SUFFIX) && last_label_is_global(name)
}

/// `ends_with` alone would accept `\x07xglobal\x00`-like tails split across labels.
fn last_label_is_global(name: &[u8]) -> bool {
    let mut at = 0;
    let mut last = 0;
    while let Some(&len) = name.get(at) {
        if len == 0 {
            break;
        }
        last = at;
        at += 1 + usize::from(len);
    }
    name.get(last..) == Some(GLOBAL_SUFFIX)
}

/// The common query shape, or `None`.
fn parse(packet: &[u8]) -> Option<Question> {
    let header = packet.get(..HEADER_LEN)?;
    let word = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    // QR = 0, OPCODE = 0 (query), TC = 0.
    if header[2] & 0xFA != 0 {
        return None;
    }
    let (qd, an, ns, ar) = (word(4), word(6), word(8), word(10));
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    // An uncompressed name (a question has nothing earlier to point to), at most 255 bytes.
    let mut at = HEADER_LEN;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len & 0xC0 != 0 || at - HEADER_LEN + 1 + len > 255 {
            return None;
        }
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    let field = |at: usize| Some(u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]));
    let qtype = field(at)?;
    if field(at + 2)? != CLASS_IN {
        return None;
    }
    let end = at + 4;
    let edns = if ar == 1 {
        Some(parse_opt(packet, end)?)
    } else {
        None
    };
    (ar == 1 || end == packet.len()).then_some(Question { end, qtype, edns })
}

/// An OPT record (RFC 6891 §6.1.2) that ends the packet exactly: root owner, version 0,
/// well-formed options. Returns the payload size.
fn parse_opt(packet: &[u8], at: usize) -> Option<u16> {
    let opt = packet.get(at..)?;
    let field = |i: usize| Some(u16::from_be_bytes([*opt.get(i)?, *opt.get(i + 1)?]));
    if *opt.first()? != 0 || field(1)? != TYPE_OPT || *opt.get(6)? != 0 {
        return None;
    }
    let rdlen = usize::from(field(9)?);
    let mut options = opt.get(11..)?;
    if options.len() != rdlen {
        return None;
    }
    while !options.is_empty() {
        let len = usize::from(u16::from_be_bytes([*options.get(2)?, *options.get(3)?]));
        options = options.get(4 + len..)?;
    }
    field(3)
}
