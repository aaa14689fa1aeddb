//! The WireGuard cross-platform userspace API (<https://www.wireguard.com/xplatform/>): the
//! text protocol `wg show` and `wg set` speak to wireguard-go over
//! `/var/run/wireguard/<interface>.sock`. This module parses and answers it against a
//! [`Node`]; the caller owns the socket.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use ipnet::IpNet;

use crate::key::{PresharedKey, PrivateKey, PublicKey};
use crate::node::Node;
use crate::peer::PeerConfig;

/// Largest request accepted, in bytes (a few thousand peers' worth of `set` lines).
pub const MAX_REQUEST: usize = 4 << 20;

/// A request, once its operation line has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `get=1`
    Get,
    /// `set=1` followed by `key=value` lines.
    Set(Vec<(String, String)>),
}

/// Why a request failed: a message and the negative errno wireguard-go would send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UapiError {
    /// What was wrong, for logs.
    pub message: String,
    /// The value sent as `errno=` (negative, like wireguard-go).
    pub errno: i32,
}

impl UapiError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            errno: -libc_einval(),
        }
    }
}

const fn libc_einval() -> i32 {
    22
}

/// Interface settings that live outside the [`Node`] (the socket is the caller's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InterfaceSettings {
    /// The UDP listen port.
    pub listen_port: u16,
    /// The firewall mark on outgoing packets (0: none).
    pub fwmark: u32,
}

/// Interface-level changes a `set` asked for that the caller must carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetOutcome {
    /// `listen_port=` was given.
    pub listen_port: Option<u16>,
    /// `fwmark=` was given.
    pub fwmark: Option<u32>,
    /// Peers or allowed IPs changed (routes may need reprogramming).
    pub peers_changed: bool,
}

/// Parses the lines of one request (without the terminating empty line).
pub fn parse_request(text: &str) -> Result<Request, UapiError> {
    let mut lines = text.lines();
    match lines.next() {
        Some("get=1") => Ok(Request::Get),
        Some("set=1") => {
            let mut pairs = Vec::new();
            for line in lines.filter(|l| !l.is_empty()) {
                let (key, value) = line
                    .split_once('=')
                    .ok_or_else(|| UapiError::invalid(format!("line without '=': {line:?}")))?;
                pairs.push((key.to_owned(), value.to_owned()));
            }
            Ok(Request::Set(pairs))
        }
        Some(other) => Err(UapiError::invalid(format!("unknown operation {other:?}"))),
        None => Err(UapiError::invalid("empty request")),
    }
}

/// Answers `get=1` as wireguard-go does, ending with `errno=0` and the empty line.
pub fn format_get(node: &Node, settings: InterfaceSettings, now: Instant) -> String {
    let wall = SystemTime::now();
    let mut out = String::new();
    let _ = writeln!(out, "private_key={}", node.private_key().to_hex());
    let _ = writeln!(out, "listen_port={}", settings.listen_port);
    if settings.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", settings.fwmark);
    }
    for peer in node.peers() {
        let _ = writeln!(out, "public_key={}", peer.public_key.to_hex());
        if let Some(psk) = peer.preshared_key {
            let _ = writeln!(out, "preshared_key={}", hex(&psk.0));
        }
        let _ = writeln!(out, "protocol_version=1");
        if let Some(endpoint) = peer.endpoint {
            let _ = writeln!(out, "endpoint={endpoint}");
        }
        let (sec, nsec) = peer
            .last_handshake
            .and_then(|at| wall.checked_sub(now.saturating_duration_since(at)))
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()));
        let _ = writeln!(out, "last_handshake_time_sec={sec}");
        let _ = writeln!(out, "last_handshake_time_nsec={nsec}");
        let _ = writeln!(out, "tx_bytes={}", peer.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", peer.rx_bytes);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            peer.persistent_keepalive.unwrap_or(0)
        );
        for net in &peer.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
    out.push_str("errno=0\n\n");
    out
}

/// Applies `set=1` pairs to `node`. Changes are applied in order, as wireguard-go does: an
/// error stops at the offending line and leaves earlier changes in place.
pub fn apply_set(
    node: &mut Node,
    pairs: &[(String, String)],
    now: Instant,
) -> Result<SetOutcome, UapiError> {
    let mut outcome = SetOutcome::default();
    let mut peer: Option<PendingPeer> = None;
    for (key, value) in pairs {
        let key = key.as_str();
        if key == "public_key" {
            if let Some(done) = peer.take() {
                done.commit(node, now, &mut outcome)?;
            }
            let public_key = PublicKey::from_hex(value)
                .map_err(|e| UapiError::invalid(format!("public_key: {e}")))?;
            peer = Some(PendingPeer::new(node, public_key));
            continue;
        }
        match peer.as_mut() {
            None => apply_interface_key(node, key, value, &mut outcome)?,
            Some(p) => p.apply(key, value)?,
        }
    }
    if let Some(done) = peer.take() {
        done.commit(node, now, &mut outcome)?;
    }
    Ok(outcome)
}

fn apply_interface_key(
    node: &mut Node,
    key: &str,
    value: &str,
    outcome: &mut SetOutcome,
) -> Result<(), UapiError> {
    match key {
        "private_key" => {
            let key = PrivateKey::from_hex(value)
                .map_err(|e| UapiError::invalid(format!("private_key: {e}")))?;
            node.set_private_key(key);
            outcome.peers_changed = true;
        }
        "listen_port" => outcome.listen_port = Some(parse_num(key, value)?),
        "fwmark" => outcome.fwmark = Some(parse_num(key, value)?),
        "replace_peers" if value == "true" => {
            node.clear_peers();
            outcome.peers_changed = true;
        }
        _ => return Err(UapiError::invalid(format!("unknown interface key {key:?}"))),
    }
    Ok(())
}

/// A peer block being read: the first `public_key=` line up to the next one.
struct PendingPeer {
    config: PeerConfig,
    exists: bool,
    remove: bool,
    update_only: bool,
}

impl PendingPeer {
    fn new(node: &Node, public_key: PublicKey) -> Self {
        let existing = node
            .peer_id(&public_key)
            .and_then(|id| node.peer_status(id));
        let config = match &existing {
            Some(s) => PeerConfig {
                public_key,
                preshared_key: s.preshared_key,
                endpoint: s.endpoint,
                allowed_ips: s.allowed_ips.clone(),
                persistent_keepalive: s.persistent_keepalive,
            },
            None => PeerConfig::new(public_key),
        };
        Self {
            config,
            exists: existing.is_some(),
            remove: false,
            update_only: false,
        }
    }

    fn apply(&mut self, key: &str, value: &str) -> Result<(), UapiError> {
        match key {
            "remove" if value == "true" => self.remove = true,
            "update_only" if value == "true" => self.update_only = true,
            "preshared_key" => {
                let psk = PresharedKey::from_hex(value)
                    .map_err(|e| UapiError::invalid(format!("preshared_key: {e}")))?;
                self.config.preshared_key = (psk.0 != [0; 32]).then_some(psk);
            }
            "endpoint" => {
                let endpoint: SocketAddr = value.parse().map_err(|_| {
                    UapiError::invalid(format!("endpoint {value:?} is not ip:port"))
                })?;
                self.config.endpoint = Some(endpoint);
            }
            "persistent_keepalive_interval" => {
                let secs: u16 = parse_num(key, value)?;
                self.config.persistent_keepalive = (secs > 0).then_some(secs);
            }
            "replace_allowed_ips" if value == "true" => self.config.allowed_ips.clear(),
            "allowed_ip" => {
                let net: IpNet = value.parse().map_err(|_| {
                    UapiError::invalid(format!("allowed_ip {value:?} is not a prefix"))
                })?;
                let net = net.trunc();
                if !self.config.allowed_ips.contains(&net) {
                    self.config.allowed_ips.push(net);
                }
            }
            "protocol_version" if value == "1" => {}
            _ => {
                return Err(UapiError::invalid(format!(
                    "unknown peer key {key:?}={value:?}"
                )));
            }
        }
        Ok(())
    }

    fn commit(
        self,
        node: &mut Node,
        now: Instant,
        outcome: &mut SetOutcome,
    ) -> Result<(), UapiError> {
        if self.remove {
            outcome.peers_changed |= node.remove_peer(&self.config.public_key);
            return Ok(());
        }
        if self.update_only && !self.exists {
            return Ok(());
        }
        if self.config.public_key == node.public_key() {
            // wireguard-go silently ignores a peer with the interface's own key.
            return Ok(());
        }
        node.upsert_peer(self.config, now)
            .map_err(|e| UapiError::invalid(e.to_string()))?;
        outcome.peers_changed = true;
        Ok(())
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, UapiError> {
    value
        .parse()
        .map_err(|_| UapiError::invalid(format!("{key}: {value:?} is not a valid number")))
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(node: &mut Node, text: &str) -> Result<SetOutcome, UapiError> {
        match parse_request(text)? {
            Request::Set(pairs) => apply_set(node, &pairs, Instant::now()),
            Request::Get => panic!("not a set"),
        }
    }

    #[test]
    fn set_then_get_round_trips_a_peer() {
        let now = Instant::now();
        let mut node = Node::new(PrivateKey::generate(), now);
        let peer = PrivateKey::generate().public_key();
        let outcome = set(
            &mut node,
            &format!(
                "set=1\nlisten_port=51999\npublic_key={}\nendpoint=[2001:db8::1]:51820\n\
                 persistent_keepalive_interval=25\nreplace_allowed_ips=true\n\
                 allowed_ip=10.9.0.0/16\nallowed_ip=fd09::1/64\nprotocol_version=1\n",
                peer.to_hex()
            ),
        )
        .unwrap();
        assert_eq!(outcome.listen_port, Some(51999));
        assert!(outcome.peers_changed);
        let text = format_get(
            &node,
            InterfaceSettings {
                listen_port: 51999,
                fwmark: 0,
            },
            now,
        );
        assert!(text.starts_with(&format!(
            "private_key={}\nlisten_port=51999\n",
            node.private_key().to_hex()
        )));
        for line in [
            format!("public_key={}", peer.to_hex()),
            "endpoint=[2001:db8::1]:51820".into(),
            "persistent_keepalive_interval=25".into(),
            "allowed_ip=10.9.0.0/16".into(),
            "allowed_ip=fd09::/64".into(),
            "last_handshake_time_sec=0".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(text.ends_with("errno=0\n\n"));

        // update_only for an unknown peer does nothing; remove removes.
        let other = PrivateKey::generate().public_key();
        set(
            &mut node,
            &format!(
                "set=1\npublic_key={}\nupdate_only=true\nallowed_ip=10.8.0.0/16\n",
                other.to_hex()
            ),
        )
        .unwrap();
        assert_eq!(node.peers().len(), 1);
        set(
            &mut node,
            &format!("set=1\npublic_key={}\nremove=true\n", peer.to_hex()),
        )
        .unwrap();
        assert!(node.peers().is_empty());
    }

    #[test]
    fn bad_requests_get_errors_not_panics() {
        let mut node = Node::new(PrivateKey::generate(), Instant::now());
        for bad in [
            "",
            "hello=1",
            "set=1\nnonsense",
            "set=1\nprivate_key=zz",
            "set=1\nlisten_port=70000",
            "set=1\nwhat=ever",
            &format!("set=1\npublic_key={}\nendpoint=nowhere", "11".repeat(32)),
            &format!(
                "set=1\npublic_key={}\nallowed_ip=10.0.0.0/40",
                "11".repeat(32)
            ),
        ] {
            let result = parse_request(bad).and_then(|r| match r {
                Request::Set(pairs) => apply_set(&mut node, &pairs, Instant::now()).map(|_| ()),
                Request::Get => Ok(()),
            });
            let err = result.expect_err(bad);
            assert_eq!(err.errno, -22, "{bad}");
        }
    }
}
