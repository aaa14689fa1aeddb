//! Every error the proxy itself answers with, and the one place that maps them to the wire
//! (after linkerd2-proxy's `errors/respond.rs`).
//!
//! Each [`ProxyError`] is classified by the side at fault ([`ErrorSide`]) and by whether another
//! endpoint could have served the request ([`ProxyError::retryable`]). On the wire:
//!
//! | error | HTTP | gRPC (`HTTP 200`, trailers-only) | TCP |
//! |---|---|---|---|
//! | malformed request | 400 | — | — |
//! | oversize request headers | 431 | — | — |
//! | request body unreadable | 400 | INTERNAL (13) | — |
//! | no endpoint | 503 | UNAVAILABLE (14) | reset |
//! | every connect attempt failed | 503 | UNAVAILABLE (14) | reset |
//! | upstream reset or protocol error | 502 | UNAVAILABLE (14) | — |
//! | per-try or overall timeout | 504 | DEADLINE_EXCEEDED (4) | — |
//!
//! Every response made here carries `x-peerd-error: <reason>` so that clients and operators can
//! tell a proxy's answer from the application's.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use tokio::net::TcpStream;

use crate::body::RespBody;

/// Header naming the reason of every response the proxy makes itself.
pub const ERROR_HEADER: &str = "x-peerd-error";

/// Which side of the proxy caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorSide {
    /// The client sent something the proxy cannot serve.
    Downstream,
    /// The endpoints failed or could not be reached.
    Upstream,
    /// The proxy itself (configuration, resources).
    Internal,
}

/// An error the proxy answers a request (or connection) with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The request could not be parsed.
    #[error("malformed request")]
    BadRequest,
    /// The request headers exceed the proxy's limit.
    #[error("request headers exceed {limit} bytes")]
    HeadersTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The client's request body broke off or was malformed while the proxy buffered or
    /// forwarded it.
    #[error("request body could not be read")]
    RequestBody,
    /// The service has no endpoint that could take the request.
    #[error("no endpoint available")]
    NoEndpoint,
    /// Every attempt to connect to an endpoint failed.
    #[error("could not connect to an endpoint ({attempts} attempts)")]
    ConnectFailed {
        /// Connection attempts made.
        attempts: u32,
    },
    /// The endpoint closed or reset the connection before the response headers.
    #[error("upstream reset the request")]
    UpstreamReset,
    /// The endpoint answered with something that is not valid HTTP.
    #[error("upstream protocol error")]
    UpstreamProtocol,
    /// One attempt got no response headers within the per-try timeout.
    #[error("upstream did not answer within the per-try timeout")]
    TryTimeout,
    /// The request got no response headers within the overall timeout.
    #[error("request timed out")]
    RequestTimeout,
}

impl ProxyError {
    /// The side at fault.
    pub fn side(&self) -> ErrorSide {
        match self {
            Self::BadRequest | Self::HeadersTooLarge { .. } | Self::RequestBody => {
                ErrorSide::Downstream
            }
            Self::NoEndpoint
            | Self::ConnectFailed { .. }
            | Self::UpstreamReset
            | Self::UpstreamProtocol
            | Self::TryTimeout
            | Self::RequestTimeout => ErrorSide::Upstream,
        }
    }

    /// Whether another endpoint might serve the same request: the proxy retries these
    /// (connect failures always; the others for replayable idempotent requests, within budget).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::ConnectFailed { .. }
                | Self::UpstreamReset
                | Self::UpstreamProtocol
                | Self::TryTimeout
        )
    }

    /// The short reason sent in `x-peerd-error` and the access log.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest => "bad-request",
            Self::HeadersTooLarge { .. } => "headers-too-large",
            Self::RequestBody => "request-body",
            Self::NoEndpoint => "no-endpoint",
            Self::ConnectFailed { .. } => "connect-failed",
            Self::UpstreamReset => "upstream-reset",
            Self::UpstreamProtocol => "upstream-protocol",
            Self::TryTimeout => "try-timeout",
            Self::RequestTimeout => "request-timeout",
        }
    }

    /// The HTTP status answered to non-gRPC requests.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::BadRequest | Self::RequestBody => StatusCode::BAD_REQUEST,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::NoEndpoint | Self::ConnectFailed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamReset | Self::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            Self::TryTimeout | Self::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The gRPC status code answered to gRPC requests.
    pub fn grpc_status(&self) -> u8 {
        const INTERNAL: u8 = 13;
        const UNAVAILABLE: u8 = 14;
        const DEADLINE_EXCEEDED: u8 = 4;
        match self {
            Self::BadRequest | Self::HeadersTooLarge { .. } | Self::RequestBody => INTERNAL,
            Self::NoEndpoint
            | Self::ConnectFailed { .. }
            | Self::UpstreamReset
            | Self::UpstreamProtocol => UNAVAILABLE,
            Self::TryTimeout | Self::RequestTimeout => DEADLINE_EXCEEDED,
        }
    }

    /// Classifies a failed upstream exchange (after the connection was set up).
    pub(crate) fn from_upstream(error: &hyper::Error) -> Self {
        if caused_by_client_body(error) {
            Self::RequestBody
        } else if error.is_parse() || error.is_parse_status() || error.is_user() {
            Self::UpstreamProtocol
        } else if error.is_timeout() {
            Self::TryTimeout
        } else {
            Self::UpstreamReset
        }
    }
}

/// Whether the client's request body, not the endpoint, made an upstream exchange fail.
fn caused_by_client_body(error: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if e.is::<crate::body::ClientBodyError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The response for a request the proxy answers itself. gRPC requests get a trailers-only
/// response (HTTP 200 with `grpc-status`), as gRPC clients expect.
pub(crate) fn respond(error: &ProxyError, grpc: bool) -> Response<RespBody> {
    let (head, body) = response_parts(error, grpc);
    head.map(|()| RespBody::full(body))
}

/// [`respond`] for HTTP/2: no `connection` field (HTTP/2 has none); an empty body for gRPC.
pub(crate) fn respond_h2(error: &ProxyError, grpc: bool) -> (Response<()>, Bytes) {
    let (mut head, body) = response_parts(error, grpc);
    head.headers_mut().remove(CONNECTION);
    (head, body)
}

fn response_parts(error: &ProxyError, grpc: bool) -> (Response<()>, Bytes) {
    let reason = HeaderValue::from_static(error.reason());
    let mut response = Response::new(());
    let headers = response.headers_mut();
    if grpc {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(error.grpc_status())),
        );
        if let Ok(message) = HeaderValue::from_str(&error.to_string()) {
            headers.insert("grpc-message", message);
        }
        headers.insert(ERROR_HEADER, reason);
        return (response, Bytes::new());
    }
    let body = Bytes::from(format!("peerd: {error}\n"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(ERROR_HEADER, reason);
    if error.side() == ErrorSide::Downstream {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    *response.status_mut() = error.http_status();
    (response, body)
}

/// The same response as raw HTTP/1.1 bytes, for errors found before hyper owns the connection
/// (the first request head is checked by [`crate::detect`]) and on the HTTP/1.1 fast path.
/// `close`: the response says the connection closes after it.
pub(crate) fn respond_raw_h1(error: &ProxyError, close: bool) -> Vec<u8> {
    let status = error.http_status();
    let body = format!("peerd: {error}\n");
    format!(
        "HTTP/1.1 {} {}\r\n{ERROR_HEADER}: {}\r\ncontent-type: text/plain\r\n\
         content-length: {}\r\n{}\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        error.reason(),
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    )
    .into_bytes()
}

/// Ends an opaque TCP connection the proxy cannot serve with a reset, so that the client sees
/// a failure rather than an orderly (and misleading) end of stream.
pub(crate) fn reset_tcp(stream: &TcpStream, error: &ProxyError) {
    tracing::debug!(reason = error.reason(), "resetting downstream connection");
    if let Err(e) = stream.set_zero_linger() {
        tracing::debug!(error = %e, "cannot set SO_LINGER; closing instead");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_reason_a_status_and_a_grpc_code() {
        let all = [
            ProxyError::BadRequest,
            ProxyError::HeadersTooLarge { limit: 65536 },
            ProxyError::RequestBody,
            ProxyError::NoEndpoint,
            ProxyError::ConnectFailed { attempts: 2 },
            ProxyError::UpstreamReset,
            ProxyError::UpstreamProtocol,
            ProxyError::TryTimeout,
            ProxyError::RequestTimeout,
        ];
        for e in all {
            let r = respond(&e, false);
            assert_eq!(r.status(), e.http_status());
            assert_eq!(r.headers()[ERROR_HEADER], e.reason());
            let g = respond(&e, true);
            assert_eq!(g.status(), StatusCode::OK);
            assert_eq!(
                g.headers()["grpc-status"],
                e.grpc_status().to_string().as_str()
            );
            let raw = String::from_utf8(respond_raw_h1(&e, true)).unwrap();
            assert!(raw.starts_with(&format!("HTTP/1.1 {}", e.http_status().as_str())));
            assert!(raw.contains(&format!("{ERROR_HEADER}: {}\r\n", e.reason())));
        }
        assert_eq!(ProxyError::NoEndpoint.http_status(), 503);
        assert_eq!(ProxyError::TryTimeout.grpc_status(), 4);
        assert_eq!(ProxyError::UpstreamReset.http_status(), 502);
        assert!(!ProxyError::BadRequest.retryable());
    }
}
