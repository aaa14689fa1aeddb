//! The optional access log: one entry per request (or TCP connection), handed to a caller's sink
//! once the response headers are sent (or the connection is set up or refused).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::sync::{read, write};

/// Where access log entries go; see [`crate::Proxy::set_access_log`].
pub type AccessLogSink = Box<dyn Fn(&AccessLogEntry) + Send + Sync>;

/// One request or connection, serializable (JSON with [`AccessLogEntry::to_json`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessLogEntry {
    /// When the response headers were sent, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The global name.
    pub service: String,
    /// The client's address.
    pub client: SocketAddr,
    /// `HTTP/1.1`, `HTTP/2` or `tcp`.
    pub protocol: &'static str,
    /// Request method (empty for TCP).
    pub method: String,
    /// Request authority (`Host` or `:authority`), if any.
    pub authority: String,
    /// Request path (empty for TCP).
    pub path: String,
    /// Response status (0 for TCP).
    pub status: u16,
    /// The endpoint that answered (or took the connection), if any.
    pub upstream: Option<SocketAddr>,
    /// The endpoint's cluster, if any.
    pub cluster: Option<String>,
    /// The endpoint's tier (`same-node`, `same-zone`, `same-region`, `remote`), if any.
    pub tier: Option<&'static str>,
    /// Attempts made, connection attempts included.
    pub attempts: u32,
    /// Time to the response headers (or the upstream connection), in milliseconds.
    pub duration_ms: f64,
    /// The proxy's error reason (`x-peerd-error`), when the proxy answered itself.
    pub error: Option<&'static str>,
}

impl AccessLogEntry {
    /// The entry as one line of JSON.
    pub fn to_json(&self) -> String {
        // Serializing plain strings and numbers cannot fail; keep a line regardless.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// The request fields an entry needs, taken before the request is consumed.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) method: String,
    pub(crate) authority: String,
    pub(crate) path: String,
}

impl Summary {
    /// The fields of a request parsed into `http` types.
    pub(crate) fn of<B>(req: &http::Request<B>) -> Self {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        Self {
            method: req.method().to_string(),
            authority,
            path: req.uri().path().to_owned(),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Milliseconds with a fraction.
pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The sink holder: a read-mostly slot.
#[derive(Default)]
pub(crate) struct AccessLog {
    sink: std::sync::RwLock<Option<Arc<AccessLogSink>>>,
    enabled: std::sync::atomic::AtomicBool,
}

impl AccessLog {
    pub(crate) fn set(&self, sink: Option<AccessLogSink>) {
        let enabled = sink.is_some();
        *write(&self.sink) = sink.map(Arc::new);
        self.enabled
            .store(enabled, std::sync::atomic::Ordering::Release);
    }

    /// Whether a sink is set: callers skip building entries otherwise.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn log(&self, entry: &AccessLogEntry) {
        let sink = read(&self.sink).clone();
        if let Some(sink) = sink {
            sink(entry);
        }
    }
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("enabled", &self.enabled())
            .finish()
    }
}
