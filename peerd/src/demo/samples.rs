//! The demo's sample endpoints, one set per node on 127.0.0.1: an HTTP/1.1 service that says
//! which node answered, and a gRPC greeter (unary, h2c) that does the same. Each can be stopped
//! and started again to show failover.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::setup::NodePlan;

/// The response header naming the node that served a request.
pub const SERVED_BY: &str = "x-peerd-demo-node";

/// The running sample endpoints, by node name.
#[derive(Default)]
pub struct Samples {
    running: HashMap<String, Vec<JoinHandle<()>>>,
}

impl Samples {
    /// Starts `plan`'s endpoints.
    pub async fn start(&mut self, plan: &NodePlan) -> Result<()> {
        let who = format!(
            "{} (cluster {}, zone {})",
            plan.name, plan.cluster, plan.zone
        );
        let mut tasks = vec![serve(plan.web_port, who.clone(), false).await?];
        if let Some(port) = plan.grpc_port {
            tasks.push(serve(port, who, true).await?);
        }
        self.running.insert(plan.name.clone(), tasks);
        Ok(())
    }

    /// Stops `node`'s endpoints: their ports refuse connections from now on.
    pub fn stop(&mut self, node: &str) {
        for task in self.running.remove(node).unwrap_or_default() {
            task.abort();
        }
    }
}

impl Drop for Samples {
    fn drop(&mut self) {
        for task in self.running.values().flatten() {
            task.abort();
        }
    }
}

async fn serve(port: u16, who: String, grpc: bool) -> Result<JoinHandle<()>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for a sample endpoint (port busy? try --base-port)")
    })?;
    Ok(tokio::spawn(async move {
        // Connections belong to the accept loop's task set: aborting the loop closes them too.
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let who = who.clone();
            connections.spawn(async move {
                let io = TokioIo::new(stream);
                let service = hyper::service::service_fn(move |req| {
                    let who = who.clone();
                    async move { Ok::<_, Infallible>(answer(req, &who, grpc).await) }
                });
                if grpc {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .with_upgrades()
                        .await;
                }
            });
            while connections.try_join_next().is_some() {}
        }
    }))
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(req: Request<Incoming>, who: &str, grpc: bool) -> Response<Body> {
    let served_by = HeaderValue::from_str(who.split(' ').next().unwrap_or(who))
        .unwrap_or(HeaderValue::from_static("?"));
    if !grpc {
        let mut response =
            Response::new(Full::new(Bytes::from(format!("hello from {who}\n"))).boxed());
        response.headers_mut().insert(SERVED_BY, served_by);
        return response;
    }
    // gRPC unary: one length-prefixed message in, a greeting out, then `grpc-status` trailers.
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let name = body
        .get(5..)
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let reply = format!("hello {name}, from {who}");
    let mut frame = BytesMut::with_capacity(5 + reply.len());
    frame.put_u8(0);
    frame.put_u32(reply.len() as u32);
    frame.put_slice(reply.as_bytes());
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = [Frame::data(frame.freeze()), Frame::trailers(trailers)];
    let stream = futures_util::stream::iter(frames.map(Ok::<_, Infallible>));
    let mut response = Response::new(StreamBody::new(stream).boxed());
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert(SERVED_BY, served_by);
    response
}
