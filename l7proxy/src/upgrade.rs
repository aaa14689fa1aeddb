//! HTTP/1.1 `Upgrade` (WebSocket and the like): the request goes upstream on a connection of its
//! own; when the endpoint answers `101 Switching Protocols`, the two upgraded byte streams are
//! joined and copied both ways until either side closes.

use http::Request;
use http::header::{CONNECTION, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Whether the request asks to switch protocols (RFC 9110 §7.8).
pub(crate) fn requested<B>(req: &Request<B>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.headers().contains_key(UPGRADE)
        && req.headers().get_all(CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Copies between the client's and the endpoint's upgraded connections once both are ready.
pub(crate) fn splice(downstream: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "upgrade failed");
                return;
            }
        };
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((to_up, to_down)) => tracing::trace!(to_up, to_down, "upgraded connection closed"),
            Err(error) => tracing::debug!(%error, "upgraded connection failed"),
        }
    });
}
