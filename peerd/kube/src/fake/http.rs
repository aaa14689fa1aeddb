//! The fake's HTTP side: routing, LIST, GET, WATCH as chunked NDJSON, status PATCH.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::{KINDS, KindInfo, Shared};

type Body = BoxBody<Bytes, Infallible>;

pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `/api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]]` or `/apis/GROUP/VERSION/...`.
struct Route {
    kind: &'static KindInfo,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Option<Self> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segs.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
            _ => (None, rest),
        };
        let (plural, name, subresource) = match rest {
            [p] => (*p, None, None),
            [p, n] => (*p, Some(*n), None),
            [p, n, s] => (*p, Some(*n), Some(*s)),
            _ => return None,
        };
        let kind = KINDS
            .iter()
            .find(|k| k.group == group && k.plural == plural && k.versions.contains(&version))?;
        Some(Self {
            kind,
            version: version.to_owned(),
            namespace,
            name: name.map(str::to_owned),
            subresource: subresource.map(str::to_owned),
        })
    }

    fn api_version(&self) -> String {
        match self.kind.group {
            "" => self.version.clone(),
            g => format!("{g}/{}", self.version),
        }
    }
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if let Ok(mut log) = shared.requests.lock() {
        log.push(format!("{} {}", req.method(), req.uri()));
    }
    let Some(route) = Route::parse(req.uri().path()) else {
        return status(
            404,
            "NotFound",
            format!(
                "the server could not find the requested resource ({})",
                req.uri().path()
            ),
        );
    };
    if shared.lock().missing.contains(route.kind.plural) {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        );
    }
    let query = Query::parse(req.uri().query().unwrap_or(""));
    let meta_only = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("as=PartialObjectMetadata"));
    let view = View {
        route: &route,
        meta_only,
    };
    match (req.method(), &route.name) {
        (&Method::GET, None) if query.watch => watch(shared, &view, &query),
        (&Method::GET, None) => list(shared, &view, &query),
        (&Method::GET, Some(name)) => match get(shared, &route, name) {
            Some(o) => json_response(StatusCode::OK, &view.render(o, false)),
            None => not_found(&route, name),
        },
        (&Method::PATCH, Some(name)) if route.subresource.as_deref() == Some("status") => {
            let Ok(body) = req.into_body().collect().await else {
                return status(400, "BadRequest", "unreadable body".into());
            };
            match patch_status(shared, &route, name, &body.to_bytes()) {
                Ok(o) => json_response(StatusCode::OK, &view.render(o, false)),
                Err(r) => *r,
            }
        }
        _ => status(
            405,
            "MethodNotAllowed",
            "the fake API server does not support this".into(),
        ),
    }
}

/// How objects are rendered for one request.
struct View<'a> {
    route: &'a Route,
    meta_only: bool,
}

impl View<'_> {
    /// Items of typed lists of built-in kinds carry no apiVersion/kind, as from a real server.
    fn render(&self, mut object: Value, in_list: bool) -> Value {
        if self.meta_only {
            return json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object["metadata"].take(),
            });
        }
        let builtin = !self.route.kind.group.contains(".x-k8s.io");
        if in_list && builtin {
            if let Some(map) = object.as_object_mut() {
                map.remove("apiVersion");
                map.remove("kind");
            }
        } else {
            object["apiVersion"] = json!(self.route.api_version());
        }
        object
    }

    fn list_types(&self) -> (String, String) {
        if self.meta_only {
            ("meta.k8s.io/v1".into(), "PartialObjectMetadataList".into())
        } else {
            (
                self.route.api_version(),
                format!("{}List", self.route.kind.kind),
            )
        }
    }
}

fn list(shared: &Shared, view: &View<'_>, query: &Query) -> Response<Body> {
    let st = shared.lock();
    let items: Vec<Value> = st
        .objects
        .get(view.route.kind.plural)
        .into_iter()
        .flat_map(|m| m.values())
        .filter(|o| query.matches(o, view.route.namespace.as_deref()))
        .map(|o| view.render(o.clone(), true))
        .collect();
    let (api_version, kind) = view.list_types();
    let body = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": { "resourceVersion": st.rv.to_string() },
        "items": items,
    });
    json_response(StatusCode::OK, &body)
}

fn get(shared: &Shared, route: &Route, name: &str) -> Option<Value> {
    let key = (route.namespace.clone().unwrap_or_default(), name.to_owned());
    shared
        .lock()
        .objects
        .get(route.kind.plural)?
        .get(&key)
        .cloned()
}

/// Server-side apply of `status.conditions`, merged by `type` (the CRD's list-map key).
fn patch_status(
    shared: &Shared,
    route: &Route,
    name: &str,
    body: &[u8],
) -> Result<Value, Box<Response<Body>>> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| Box::new(status(400, "BadRequest", format!("patch is not JSON: {e}"))))?;
    let mut object = get(shared, route, name).ok_or_else(|| Box::new(not_found(route, name)))?;
    let patched = patch
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let conditions = &mut object["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    if let Some(list) = conditions.as_array_mut() {
        for c in patched {
            match list.iter_mut().find(|o| o["type"] == c["type"]) {
                Some(old) => *old = c,
                None => list.push(c),
            }
        }
    }
    shared
        .apply(object)
        .map_err(|e| Box::new(status(422, "Invalid", e.to_string())))
}

/// A watch: every change after `resourceVersion` that matches, as NDJSON, until the client
/// goes away, `timeoutSeconds` pass, or a compaction expires it (`ERROR` 410).
fn watch(shared: &Arc<Shared>, view: &View<'_>, query: &Query) -> Response<Body> {
    let mut changed = shared.changed.subscribe();
    let mut last = query.resource_version.unwrap_or_else(|| shared.lock().rv);
    let route = Route {
        kind: view.route.kind,
        version: view.route.version.clone(),
        namespace: view.route.namespace.clone(),
        name: None,
        subresource: None,
    };
    let meta_only = view.meta_only;
    let query = query.clone();
    let timeout = Duration::from_secs(query.timeout_seconds.unwrap_or(1800));
    let shared = Arc::clone(shared);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let view = View {
            route: &route,
            meta_only,
        };
        let mut deadline = std::pin::pin!(tokio::time::sleep(timeout));
        loop {
            let lines = {
                let st = shared.lock();
                if last < st.compacted {
                    None
                } else {
                    let lines: Vec<Value> = st
                        .log
                        .iter()
                        .filter(|c| c.rv > last && c.kind.plural == route.kind.plural)
                        .filter_map(|c| event(c, &query, &view))
                        .collect();
                    last = last.max(st.rv);
                    Some(lines)
                }
            };
            let Some(lines) = lines else {
                let body = status_body(410, "Expired", "too old resource version".into());
                let _ = tx
                    .send(line(&json!({"type": "ERROR", "object": body})))
                    .await;
                return;
            };
            for e in lines {
                if tx.send(line(&e)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                () = &mut deadline => return,
                () = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The watch event for one change as seen through the request's selectors: an object that
/// starts matching is ADDED, one that stops matching is DELETED.
fn event(change: &super::Change, query: &Query, view: &View<'_>) -> Option<Value> {
    let ns = view.route.namespace.as_deref();
    let before = change.old.as_ref().filter(|o| query.matches(o, ns));
    let after = change.new.as_ref().filter(|o| query.matches(o, ns));
    let (kind, object) = match (before, after) {
        (None, Some(n)) => ("ADDED", n.clone()),
        (Some(_), Some(n)) => ("MODIFIED", n.clone()),
        (Some(o), None) => {
            let mut gone = change.new.clone().unwrap_or_else(|| o.clone());
            gone["metadata"]["resourceVersion"] = json!(change.rv.to_string());
            ("DELETED", gone)
        }
        (None, None) => return None,
    };
    Some(json!({"type": kind, "object": view.render(object, false)}))
}

/// The query parameters the fake understands.
#[derive(Debug, Clone, Default)]
struct Query {
    watch: bool,
    resource_version: Option<u64>,
    timeout_seconds: Option<u64>,
    labels: Vec<LabelTerm>,
    fields: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum LabelTerm {
    Exists(String),
    Absent(String),
    Equals(String, String),
    Differs(String, String),
}

impl Query {
    fn parse(raw: &str) -> Self {
        let mut q = Self::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v);
            match k {
                "watch" => q.watch = v == "true" || v == "1",
                "resourceVersion" => q.resource_version = v.parse().ok().filter(|rv| *rv > 0),
                "timeoutSeconds" => q.timeout_seconds = v.parse().ok(),
                "labelSelector" => q.labels = v.split(',').filter_map(label_term).collect(),
                "fieldSelector" => {
                    q.fields = v
                        .split(',')
                        .filter_map(|t| t.split_once('='))
                        .map(|(a, b)| (a.trim_end_matches('=').to_owned(), b.to_owned()))
                        .collect();
                }
                _ => {}
            }
        }
        q
    }

    fn matches(&self, object: &Value, namespace: Option<&str>) -> bool {
        let meta = &object["metadata"];
        if namespace.is_some_and(|ns| meta["namespace"].as_str() != Some(ns)) {
            return false;
        }
        let label = |k: &str| meta["labels"][k].as_str();
        let labels_ok = self.labels.iter().all(|t| match t {
            LabelTerm::Exists(k) => label(k).is_some(),
            LabelTerm::Absent(k) => label(k).is_none(),
            LabelTerm::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelTerm::Differs(k, v) => label(k) != Some(v.as_str()),
        });
        labels_ok
            && self.fields.iter().all(|(f, v)| match f.as_str() {
                "metadata.name" => meta["name"].as_str() == Some(v.as_str()),
                "metadata.namespace" => meta["namespace"].as_str() == Some(v.as_str()),
                _ => true,
            })
    }
}

fn label_term(t: &str) -> Option<LabelTerm> {
    let t = t.trim();
    if t.is_empty() {
        return None;
    }
    Some(if let Some((k, v)) = t.split_once("!=") {
        LabelTerm::Differs(k.to_owned(), v.to_owned())
    } else if let Some((k, v)) = t.split_once('=') {
        LabelTerm::Equals(k.to_owned(), v.trim_start_matches('=').to_owned())
    } else if let Some(k) = t.strip_prefix('!') {
        LabelTerm::Absent(k.to_owned())
    } else {
        LabelTerm::Exists(t.to_owned())
    })
}

/// Percent-decoding of a query value (`+` is a space, as form encoding writes it).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn line(value: &Value) -> Bytes {
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn status_body(code: u16, reason: &str, message: String) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn status(code: u16, reason: &str, message: String) -> Response<Body> {
    let sc = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(sc, &status_body(code, reason, message))
}

fn not_found(route: &Route, name: &str) -> Response<Body> {
    let what = match route.kind.group {
        "" => route.kind.plural.to_owned(),
        g => format!("{}.{g}", route.kind.plural),
    };
    status(404, "NotFound", format!("{what} \"{name}\" not found"))
}
