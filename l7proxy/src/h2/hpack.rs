//! The header blocks the proxy sends (RFC 7541), encoded without state: fields that the static
//! table holds whole are indexed, every other field is a literal that is not indexed (names
//! from the static table where it has them), and no string is Huffman-coded. HAProxy's encoder
//! works the same way.
//!
//! h2's encoder, which the frame codec would use, keeps a dynamic table and Huffman-codes every
//! literal: for a proxy that hashes each field of two header blocks per request to look it up
//! in the table, moves the fields into it, and codes the strings bit by bit, about 2,400
//! instructions per block here — more than the proxy's whole HTTP/1.1 forwarding of a request
//! head. Without indexing, the blocks are larger on the wire (a `user-agent` goes whole every
//! time instead of as one byte), which between a node's proxy and its clients or the mesh's
//! endpoints costs less than the CPU it saves. And a block without state goes on any
//! connection as it is: a request's head is encoded once, when it arrives, and every attempt
//! on whichever endpoint sends the same bytes. Decoding stays h2's (its decoder takes any
//! encoding, with or without a dynamic table).

use bytes::{BufMut, BytesMut};
use h2::frame::Pseudo;
use http::{HeaderMap, StatusCode};

/// A dynamic table size update to 0 (§6.3): sent first in the block after the peer changed
/// SETTINGS_HEADER_TABLE_SIZE, which a decoder may require when the size went down (§4.2).
/// The table is never used, so 0 holds whatever the peer allows.
pub(crate) fn put_table_size_zero(dst: &mut BytesMut) {
    dst.put_u8(0x20);
}

/// Encodes a header block: the pseudo-header fields first, then `fields`.
pub(crate) fn encode(pseudo: &Pseudo, fields: &HeaderMap, dst: &mut BytesMut) {
    if let Some(method) = &pseudo.method {
        put_pseudo(dst, 2, method.as_str(), &[("GET", 2), ("POST", 3)]);
    }
    if let Some(scheme) = &pseudo.scheme {
        put_pseudo(dst, 6, scheme, &[("http", 6), ("https", 7)]);
    }
    if let Some(authority) = &pseudo.authority {
        put_literal(dst, 1, authority.as_ref(), false);
    }
    if let Some(path) = &pseudo.path {
        put_pseudo(dst, 4, path, &[("/", 4), ("/index.html", 5)]);
    }
    if let Some(protocol) = &pseudo.protocol {
        put_new_name(dst, b":protocol", protocol.as_str().as_bytes(), false);
    }
    if let Some(status) = pseudo.status {
        match status_index(status) {
            Some(index) => put_indexed(dst, index),
            None => put_literal(dst, 8, status.as_str().as_bytes(), false),
        }
    }
    for (name, value) in fields {
        let name = name.as_str();
        let value_bytes = value.as_bytes();
        match name_index(name) {
            Some(16) if value_bytes == b"gzip, deflate" => put_indexed(dst, 16),
            Some(index) => put_literal(dst, index, value_bytes, value.is_sensitive()),
            None => put_new_name(dst, name.as_bytes(), value_bytes, value.is_sensitive()),
        }
    }
}

/// A pseudo-header field: indexed when the static table holds it whole (`whole`: value and
/// index), else a literal with the static table's name at `name_index`.
fn put_pseudo(dst: &mut BytesMut, name_index: usize, value: &str, whole: &[(&str, usize)]) {
    match whole.iter().find(|(v, _)| *v == value) {
        Some(&(_, index)) => put_indexed(dst, index),
        None => put_literal(dst, name_index, value.as_bytes(), false),
    }
}

fn status_index(status: StatusCode) -> Option<usize> {
    Some(match status.as_u16() {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => return None,
    })
}

/// The static table's first entry with this name (RFC 7541 Appendix A).
fn name_index(name: &str) -> Option<usize> {
    Some(match name {
        "accept-charset" => 15,
        "accept-encoding" => 16,
        "accept-language" => 17,
        "accept-ranges" => 18,
        "accept" => 19,
        "access-control-allow-origin" => 20,
        "age" => 21,
        "allow" => 22,
        "authorization" => 23,
        "cache-control" => 24,
        "content-disposition" => 25,
        "content-encoding" => 26,
        "content-language" => 27,
        "content-length" => 28,
        "content-location" => 29,
        "content-range" => 30,
        "content-type" => 31,
        "cookie" => 32,
        "date" => 33,
        "etag" => 34,
        "expect" => 35,
        "expires" => 36,
        "from" => 37,
        "host" => 38,
        "if-match" => 39,
        "if-modified-since" => 40,
        "if-none-match" => 41,
        "if-range" => 42,
        "if-unmodified-since" => 43,
        "last-modified" => 44,
        "link" => 45,
        "location" => 46,
        "max-forwards" => 47,
        "proxy-authenticate" => 48,
        "proxy-authorization" => 49,
        "range" => 50,
        "referer" => 51,
        "refresh" => 52,
        "retry-after" => 53,
        "server" => 54,
        "set-cookie" => 55,
        "strict-transport-security" => 56,
        "transfer-encoding" => 57,
        "user-agent" => 58,
        "vary" => 59,
        "via" => 60,
        "www-authenticate" => 61,
        _ => return None,
    })
}

/// §6.1: a field the static table holds whole.
fn put_indexed(dst: &mut BytesMut, index: usize) {
    put_int(dst, 0x80, 7, index);
}

/// §6.2.2 (§6.2.3 when sensitive: never indexed, by intermediaries either): a literal value
/// with the name of a static table entry.
fn put_literal(dst: &mut BytesMut, name_index: usize, value: &[u8], sensitive: bool) {
    put_int(dst, if sensitive { 0x10 } else { 0 }, 4, name_index);
    put_string(dst, value);
}

/// The same with a literal name.
fn put_new_name(dst: &mut BytesMut, name: &[u8], value: &[u8], sensitive: bool) {
    dst.put_u8(if sensitive { 0x10 } else { 0 });
    put_string(dst, name);
    put_string(dst, value);
}

/// §5.2, without Huffman coding.
fn put_string(dst: &mut BytesMut, value: &[u8]) {
    put_int(dst, 0, 7, value.len());
    dst.put_slice(value);
}

/// §5.1: `value` in an integer with an N-bit prefix, after the first byte's `flags`.
fn put_int(dst: &mut BytesMut, flags: u8, prefix_bits: u32, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | max as u8);
    value -= max;
    while value >= 128 {
        dst.put_u8((value % 128) as u8 | 0x80);
        value /= 128;
    }
    dst.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use h2::frame::BytesStr;
    use http::Method;

    fn text(s: &'static str) -> BytesStr {
        BytesStr::try_from(Bytes::from_static(s.as_bytes())).unwrap()
    }

    #[test]
    fn integers_follow_rfc_7541_c1() {
        // C.1.1: 10 in a 5-bit prefix; C.1.2: 1337 in a 5-bit prefix; C.1.3: 42 at an octet.
        let mut dst = BytesMut::new();
        put_int(&mut dst, 0, 5, 10);
        assert_eq!(&dst[..], [0b0000_1010]);
        dst.clear();
        put_int(&mut dst, 0, 5, 1337);
        assert_eq!(&dst[..], [0b0001_1111, 0b1001_1010, 0b0000_1010]);
        dst.clear();
        put_int(&mut dst, 0, 8, 42);
        assert_eq!(&dst[..], [42]);
        // At the prefix's limit, the continuation carries 0.
        dst.clear();
        put_int(&mut dst, 0x80, 7, 127);
        assert_eq!(&dst[..], [0xff, 0]);
    }

    #[test]
    fn request_matches_rfc_7541_c2_and_c3_forms() {
        // C.3.1's first request without Huffman coding and without indexing: `:authority`
        // as a literal with an indexed name (0x01) instead of incremental indexing (0x41).
        let pseudo = Pseudo {
            method: Some(Method::GET),
            scheme: Some(text("http")),
            path: Some(text("/")),
            authority: Some(text("www.example.com")),
            ..Pseudo::default()
        };
        let mut dst = BytesMut::new();
        encode(&pseudo, &HeaderMap::new(), &mut dst);
        let mut expected = vec![0x82, 0x86, 0x01, 0x0f];
        expected.extend_from_slice(b"www.example.com");
        expected.push(0x84);
        assert_eq!(&dst[..], &expected[..]);
    }
}
