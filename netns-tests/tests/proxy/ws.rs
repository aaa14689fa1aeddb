//! Just enough WebSocket (RFC 6455) for an echo through the proxy: the opening handshake with
//! `Sec-WebSocket-Accept` (§4.2.2), and frames with 7-, 16- and 64-bit lengths, masked from
//! client to server (§5.2, §5.3).

use std::convert::Infallible;

use anyhow::{Result, bail};
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::endpoint::Body;

/// The GUID every accept key is derived with (§1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Opcodes (§5.2).
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// `Sec-WebSocket-Key` of a WebSocket upgrade request.
pub fn upgrade_key<B>(req: &Request<B>) -> Option<String> {
    let upgrade = req.headers().get(http::header::UPGRADE)?;
    if !upgrade.as_bytes().eq_ignore_ascii_case(b"websocket") {
        return None;
    }
    let key = req.headers().get("sec-websocket-key")?.to_str().ok()?;
    Some(key.to_owned())
}

/// The value of `Sec-WebSocket-Accept` for `key`.
pub fn accept_key(key: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{GUID}").as_bytes(),
    );
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// The server's `101 Switching Protocols` for `key`, naming the endpoint in `x-endpoint`.
pub fn switching_protocols(key: &str, identity: &str) -> Response<Body> {
    let mut r = Response::new(
        Empty::<Bytes>::new()
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = HeaderValue::from_str(&accept_key(key)) {
        h.insert("sec-websocket-accept", v);
    }
    if let Ok(v) = HeaderValue::from_str(identity) {
        h.insert("x-endpoint", v);
    }
    r
}

/// The server side: echoes data frames, answers pings, and a close with a close.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) -> Result<()> {
    loop {
        let (opcode, payload) = read_frame(&mut io).await?;
        match opcode {
            CLOSE => {
                write_frame(&mut io, CLOSE, &payload, None).await?;
                return Ok(());
            }
            PING => write_frame(&mut io, PONG, &payload, None).await?,
            _ => write_frame(&mut io, opcode, &payload, None).await?,
        }
    }
}

/// Writes one final frame; `mask` is required from clients (§5.3).
pub async fn write_frame<S: AsyncWrite + Unpin>(
    io: &mut S,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Result<()> {
    let mut out = vec![0x80 | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    io.write_all(&out).await?;
    Ok(())
}

/// Reads one frame (fragmentation is not used here); unmasks it.
pub async fn read_frame<S: AsyncRead + Unpin>(io: &mut S) -> Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await?;
    if head[0] & 0x80 == 0 {
        bail!("fragmented frame");
    }
    let len = match head[1] & 0x7f {
        126 => u64::from(io.read_u16().await?),
        127 => io.read_u64().await?,
        n => u64::from(n),
    };
    if len > 16 << 20 {
        bail!("frame of {len} bytes");
    }
    let mask = if head[1] & 0x80 != 0 {
        let mut key = [0u8; 4];
        io.read_exact(&mut key).await?;
        Some(key)
    } else {
        None
    };
    let mut payload = vec![0u8; len as usize];
    io.read_exact(&mut payload).await?;
    if let Some(key) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Ok((head[0] & 0x0f, payload))
}
