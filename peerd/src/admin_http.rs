//! The admin HTTP listener (`[admin] metrics`): Prometheus `/metrics`, and `/healthz` and
//! `/readyz` for Kubernetes probes. Read-only; bind it to loopback or the node address.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::daemon::Daemon;

/// Binds the listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ([admin] metrics)"))
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, daemon: Arc<Daemon>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let daemon = daemon.clone();
                async move { Ok::<_, Infallible>(respond(&daemon, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(daemon: &Daemon, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics(daemon),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => match daemon.ready() {
            Ok(()) => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    peer: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// Prometheus text for the node, its tunnels, the mesh, DNS and the proxy. Built per scrape
/// from the same snapshots `peerd status` shows.
fn metrics(daemon: &Daemon) -> String {
    let status = daemon.status_snapshot();
    let mut registry = Registry::with_prefix("peerd");
    let rx = Family::<PeerLabels, Counter>::default();
    let tx = Family::<PeerLabels, Counter>::default();
    let handshake = Family::<PeerLabels, Gauge>::default();
    let drops = Family::<DropLabels, Counter>::default();
    for p in &status.peers {
        let peer = PeerLabels {
            peer: if p.name.is_empty() {
                p.public_key.clone()
            } else {
                format!("{}/{}", p.cluster, p.name)
            },
        };
        rx.get_or_create(&peer).inc_by(p.rx_bytes);
        tx.get_or_create(&peer).inc_by(p.tx_bytes);
        handshake
            .get_or_create(&peer)
            .set(p.last_handshake_unix as i64);
        for (reason, n) in &p.drops {
            drops
                .get_or_create(&DropLabels {
                    peer: peer.peer.clone(),
                    reason: reason.clone(),
                })
                .inc_by(*n);
        }
    }
    for (reason, n) in &status.node.drops {
        drops
            .get_or_create(&DropLabels {
                peer: String::new(),
                reason: reason.clone(),
            })
            .inc_by(*n);
    }
    registry.register("peer_rx_bytes", "WireGuard bytes received from a peer", rx);
    registry.register("peer_tx_bytes", "WireGuard bytes sent to a peer", tx);
    registry.register(
        "peer_last_handshake_seconds",
        "Unix time of the last handshake",
        handshake,
    );
    registry.register(
        "drops",
        "Packets dropped, by peer (empty: none) and reason",
        drops,
    );
    if let Some(mesh) = &status.node.mesh {
        let nodes = Family::<KindLabels, Gauge>::default();
        for (state, n) in &mesh.nodes {
            nodes
                .get_or_create(&KindLabels {
                    kind: state.clone(),
                })
                .set(*n as i64);
        }
        let rejected = Family::<KindLabels, Counter>::default();
        for (reason, n) in &mesh.rejected {
            rejected
                .get_or_create(&KindLabels {
                    kind: reason.clone(),
                })
                .inc_by(*n);
        }
        let bytes = Family::<KindLabels, Counter>::default();
        bytes
            .get_or_create(&KindLabels { kind: "rx".into() })
            .inc_by(mesh.rx_bytes);
        bytes
            .get_or_create(&KindLabels { kind: "tx".into() })
            .inc_by(mesh.tx_bytes);
        registry.register("mesh_nodes", "Mesh nodes by membership state", nodes);
        registry.register(
            "mesh_records_rejected",
            "Records refused, by reason",
            rejected,
        );
        registry.register(
            "mesh_control_bytes",
            "Control-plane bytes by direction",
            bytes,
        );
    }
    if let Some(dns) = daemon.dns_stats() {
        let queries = Family::<KindLabels, Counter>::default();
        for (kind, n) in [
            ("global_answer", dns.global_answers),
            ("global_nodata", dns.global_nodata),
            ("global_nxdomain", dns.global_nxdomain),
            ("forwarded", dns.forwarded),
            ("forward_error", dns.forward_errors),
            ("malformed", dns.malformed),
            ("refused", dns.refused),
            ("dropped", dns.dropped),
        ] {
            queries
                .get_or_create(&KindLabels { kind: kind.into() })
                .inc_by(n);
        }
        registry.register("dns_queries", "DNS queries by outcome", queries);
    }
    let mut out = String::new();
    if encode(&mut out, &registry).is_err() {
        out.clear();
    }
    // Strip the trailing `# EOF` so other sections can follow, then end the exposition once.
    if let Some(stripped) = out.strip_suffix("# EOF\n") {
        out.truncate(stripped.len());
    }
    daemon.encode_proxy_metrics(&mut out);
    out.push_str("# EOF\n");
    out
}
