//! Minimal IP packet helpers: reading addresses from inner packets and building small UDP
//! packets (for tests and probes). Not a general packet parser.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The source address of an IPv4 or IPv6 packet, if the header is long enough.
pub fn src_addr(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            Some(Ipv4Addr::from(<[u8; 4]>::try_from(&packet[12..16]).ok()?).into())
        }
        6 if packet.len() >= 40 => {
            Some(Ipv6Addr::from(<[u8; 16]>::try_from(&packet[8..24]).ok()?).into())
        }
        _ => None,
    }
}

/// The destination address of an IPv4 or IPv6 packet, if the header is long enough.
pub fn dst_addr(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            Some(Ipv4Addr::from(<[u8; 4]>::try_from(&packet[16..20]).ok()?).into())
        }
        6 if packet.len() >= 40 => {
            Some(Ipv6Addr::from(<[u8; 16]>::try_from(&packet[24..40]).ok()?).into())
        }
        _ => None,
    }
}

/// Builds a UDP packet with valid IP and UDP checksums. `src` and `dst` must be the same family;
/// returns `None` otherwise or when the payload does not fit in one packet.
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let udp_len = u16::try_from(8 + payload.len()).ok()?;
    let mut udp = Vec::with_capacity(udp_len as usize);
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + udp.len()).ok()?;
            let mut pseudo = Vec::with_capacity(12);
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&udp_len.to_be_bytes());
            let sum = match checksum(&[&pseudo, &udp]) {
                0 => 0xffff,
                sum => sum,
            };
            udp[6..8].copy_from_slice(&sum.to_be_bytes());
            let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let hsum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&hsum.to_be_bytes());
            ip.extend_from_slice(&udp);
            Some(ip)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut pseudo = Vec::with_capacity(40);
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&u32::from(udp_len).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
            let sum = match checksum(&[&pseudo, &udp]) {
                0 => 0xffff,
                sum => sum,
            };
            udp[6..8].copy_from_slice(&sum.to_be_bytes());
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&udp_len.to_be_bytes());
            ip.extend_from_slice(&[17, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            ip.extend_from_slice(&udp);
            Some(ip)
        }
        _ => None,
    }
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &byte in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, byte])),
                None => odd = Some(byte),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_packets_carry_their_addresses_and_valid_checksums() {
        let src: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.2:2000".parse().unwrap();
        let p = udp_packet(src, dst, b"hello").unwrap();
        assert_eq!(p.len(), 20 + 8 + 5);
        assert_eq!(src_addr(&p), Some(src.ip()));
        assert_eq!(dst_addr(&p), Some(dst.ip()));
        // A correct header sums to zero.
        assert_eq!(checksum(&[&p[..20]]), 0);

        let src6: SocketAddr = "[fd00::1]:1000".parse().unwrap();
        let dst6: SocketAddr = "[fd00::2]:2000".parse().unwrap();
        let p6 = udp_packet(src6, dst6, b"hello").unwrap();
        assert_eq!(p6.len(), 40 + 8 + 5);
        assert_eq!(src_addr(&p6), Some(src6.ip()));
        assert_eq!(dst_addr(&p6), Some(dst6.ip()));
        assert!(udp_packet(src, dst6, b"x").is_none());
    }

    #[test]
    fn short_or_unknown_packets_have_no_addresses() {
        assert_eq!(src_addr(&[]), None);
        assert_eq!(dst_addr(&[0x45; 10]), None);
        assert_eq!(src_addr(&[0x10; 60]), None);
    }
}
