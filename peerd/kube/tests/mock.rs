//! `KubeSource` over a `tower_test` mock API: scripted LIST and WATCH answers shaped like a
//! real API server's (typed lists without per-item apiVersion/kind, metadata-only lists for
//! ServiceExports, NDJSON watch events with rising resourceVersions), including watch errors
//! and `410 Gone`, after which the watcher must relist and lose nothing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use peerd_kube::fake::{expected_view, fixture};
use peerd_kube::{KubeSource, NodeView};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

/// One scripted answer.
enum Step {
    /// A LIST answered with these objects at this resourceVersion.
    List(u64, Vec<Value>),
    /// A WATCH answered with these events (type, object), then end of stream.
    Watch(Vec<(&'static str, Value)>),
    /// A WATCH answered with HTTP 200 and an ERROR event carrying `410 Expired`, as a real API
    /// server does when the resourceVersion was compacted away.
    WatchGone,
    /// An HTTP error status (with a Status body).
    Fail(u16),
}

/// What the mock saw: (resource, is watch, path and query, accept header).
type Seen = Arc<Mutex<Vec<(String, bool, String, String)>>>;

/// Serves `script` (per resource: nodes, services, endpointslices, serviceexports) and then
/// leaves every further request pending, as a watch with nothing to say.
fn serve(
    handle: Handle<Request<Body>, Response<Body>>,
    script: Vec<(&'static str, Vec<Step>)>,
) -> Seen {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let mut script: BTreeMap<&str, VecDeque<Step>> =
        script.into_iter().map(|(r, s)| (r, s.into())).collect();
    tokio::spawn(async move {
        let mut handle = std::pin::pin!(handle);
        let mut pending: Vec<SendResponse<Response<Body>>> = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let uri = request.uri().to_string();
            let path = request.uri().path();
            let resource = path.rsplit('/').next().unwrap_or_default().to_owned();
            let watch = uri.contains("watch=true");
            let accept = request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            log.lock()
                .unwrap()
                .push((resource.clone(), watch, uri.clone(), accept.clone()));
            let step = script
                .get_mut(resource.as_str())
                .and_then(VecDeque::pop_front);
            let meta_only = accept.contains("as=PartialObjectMetadata");
            match step {
                None => pending.push(send),
                Some(Step::List(rv, items)) => {
                    assert!(!watch, "expected a LIST for {resource}, got {uri}");
                    send.send_response(ok(list_body(&resource, rv, items, meta_only)));
                }
                Some(Step::Watch(events)) => {
                    assert!(watch, "expected a WATCH for {resource}, got {uri}");
                    let body: String = events
                        .into_iter()
                        .map(|(kind, o)| {
                            let o = if meta_only { metadata_only(o) } else { o };
                            format!("{}\n", json!({"type": kind, "object": o}))
                        })
                        .collect();
                    send.send_response(ok(body));
                }
                Some(Step::WatchGone) => {
                    assert!(watch, "expected a WATCH for {resource}, got {uri}");
                    let gone = json!({"type": "ERROR", "object": status_body(410, "Expired",
                        "too old resource version: 20 (45)")});
                    send.send_response(ok(format!("{gone}\n")));
                }
                Some(Step::Fail(code)) => {
                    let body = status_body(code, "InternalError", "etcdserver: request timed out");
                    let mut response = Response::new(Body::from(body.to_string().into_bytes()));
                    *response.status_mut() = StatusCode::from_u16(code).unwrap();
                    send.send_response(response);
                }
            }
        }
        drop(pending);
    });
    seen
}

fn ok(body: String) -> Response<Body> {
    Response::new(Body::from(body.into_bytes()))
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn metadata_only(mut o: Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"].take()})
}

fn list_body(resource: &str, rv: u64, items: Vec<Value>, meta_only: bool) -> String {
    let (api_version, kind) = match resource {
        _ if meta_only => ("meta.k8s.io/v1", "PartialObjectMetadataList"),
        "nodes" => ("v1", "NodeList"),
        "services" => ("v1", "ServiceList"),
        "endpointslices" => ("discovery.k8s.io/v1", "EndpointSliceList"),
        other => panic!("unexpected list of {other}"),
    };
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            if meta_only {
                return metadata_only(o);
            }
            let map = o.as_object_mut().unwrap();
            map.remove("apiVersion");
            map.remove("kind");
            o
        })
        .collect();
    json!({"apiVersion": api_version, "kind": kind,
           "metadata": {"resourceVersion": rv.to_string()}, "items": items})
    .to_string()
}

/// A fixture at resourceVersion `rv`.
fn at(name: &str, rv: u64) -> Value {
    let mut o = fixture(name).unwrap_or_else(|| panic!("no fixture {name}"));
    o["metadata"]["resourceVersion"] = json!(rv.to_string());
    o
}

async fn wait_for(source: &KubeSource, expected: &Option<NodeView>) {
    let mut changes = source.changes();
    let waited = tokio::time::timeout(Duration::from_secs(120), async {
        while source.view() != *expected {
            changes.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "view never matched\n got: {:#?}\nwant: {expected:#?}",
        source.view()
    );
}

fn watches_of(seen: &Seen, resource: &str) -> Vec<String> {
    let seen = seen.lock().unwrap();
    seen.iter()
        .filter(|(r, w, _, _)| r == resource && *w)
        .map(|(_, _, uri, _)| uri.clone())
        .collect()
}

fn lists_of(seen: &Seen, resource: &str) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(r, w, _, _)| r == resource && !*w)
        .count()
}

#[tokio::test(start_paused = true)]
async fn list_then_watch_applies_added_modified_deleted_in_resource_version_order() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let mut web_one_port = at("service-web", 22);
    web_one_port["spec"]["ports"]
        .as_array_mut()
        .unwrap()
        .remove(1);
    let mut v4_all_ready = at("endpointslice-web-v4", 33);
    v4_all_ready["endpoints"][2]["conditions"] =
        json!({"ready": true, "serving": true, "terminating": false});
    let seen = serve(
        handle,
        vec![
            ("nodes", vec![Step::List(10, vec![at("node-east-1", 10)])]),
            (
                "services",
                vec![
                    Step::List(20, vec![at("service-web", 20)]),
                    Step::Watch(vec![
                        ("ADDED", at("service-api", 21)),
                        ("MODIFIED", web_one_port.clone()),
                    ]),
                    Step::Watch(vec![("DELETED", at("service-api", 25))]),
                ],
            ),
            (
                "endpointslices",
                vec![
                    Step::List(30, vec![at("endpointslice-web-v4", 30)]),
                    Step::Watch(vec![
                        ("ADDED", at("endpointslice-web-v6", 31)),
                        ("ADDED", at("endpointslice-api", 32)),
                        ("MODIFIED", v4_all_ready.clone()),
                    ]),
                ],
            ),
            (
                "serviceexports",
                vec![Step::List(40, vec![at("serviceexport-web-v1alpha1", 40)])],
            ),
        ],
    );
    let client = kube::Client::new(service, "default");
    let source = KubeSource::start(client, "east-1".into()).await.unwrap();

    let last = [
        at("node-east-1", 10),
        web_one_port,
        v4_all_ready,
        at("endpointslice-web-v6", 31),
        at("endpointslice-api", 32),
        at("serviceexport-web-v1alpha1", 40),
    ];
    let expected = expected_view("east-1", &last);
    wait_for(&source, &expected).await;
    let view = expected.unwrap();
    assert_eq!(view.exports.len(), 1, "api was deleted: {view:#?}");
    let web = &view.exports[0];
    assert_eq!(web.ports.len(), 1, "the MODIFIED web has one port");
    assert!(
        web.endpoints.iter().all(|e| e.ready),
        "the MODIFIED slice made 10.1.1.12 ready"
    );

    // every re-watch resumes from the last resourceVersion seen
    tokio::time::sleep(Duration::from_secs(1)).await;
    let watches = watches_of(&seen, "services");
    assert!(watches.len() >= 3, "{watches:#?}");
    for (uri, rv) in watches.iter().zip(["20", "22", "25"]) {
        assert!(
            uri.contains(&format!("resourceVersion={rv}")),
            "{uri} should resume from {rv}"
        );
    }
    // selectors: this node only; slices that belong to a Service; ServiceExports by metadata
    let seen = seen.lock().unwrap();
    let first = |r: &str| seen.iter().find(|s| s.0 == r).unwrap().clone();
    assert!(
        first("nodes")
            .2
            .contains("fieldSelector=metadata.name%3Deast-1"),
        "{:?}",
        first("nodes")
    );
    assert!(
        first("endpointslices")
            .2
            .contains("labelSelector=kubernetes.io%2Fservice-name")
    );
    assert!(
        first("serviceexports")
            .2
            .starts_with("/apis/multicluster.x-k8s.io/v1alpha1/serviceexports?")
    );
    assert!(
        first("serviceexports")
            .3
            .contains("as=PartialObjectMetadataList")
    );
}

#[tokio::test(start_paused = true)]
async fn watch_errors_and_410_gone_relist_without_losing_anything() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let seen = serve(
        handle,
        vec![
            ("nodes", vec![Step::List(10, vec![at("node-east-1", 10)])]),
            (
                "services",
                vec![
                    Step::List(20, vec![at("service-web", 20)]),
                    // compacted while we were away: api was created in between
                    Step::WatchGone,
                    Step::List(50, vec![at("service-web", 20), at("service-api", 45)]),
                ],
            ),
            (
                "endpointslices",
                vec![
                    Step::List(30, vec![at("endpointslice-web-v4", 30)]),
                    Step::Fail(500),
                    Step::Watch(vec![("ADDED", at("endpointslice-web-v6", 31))]),
                    Step::WatchGone,
                    // the relist brings the slice created during the gap; v6 is still there
                    Step::List(
                        60,
                        vec![
                            at("endpointslice-web-v4", 30),
                            at("endpointslice-web-v6", 31),
                            at("endpointslice-api", 55),
                        ],
                    ),
                ],
            ),
            (
                "serviceexports",
                vec![
                    Step::Fail(503),
                    Step::List(40, vec![at("serviceexport-web-v1alpha1", 40)]),
                ],
            ),
        ],
    );
    let client = kube::Client::new(service, "default");
    let source = KubeSource::start(client, "east-1".into()).await.unwrap();

    let all = [
        at("node-east-1", 10),
        at("service-web", 20),
        at("service-api", 45),
        at("endpointslice-web-v4", 30),
        at("endpointslice-web-v6", 31),
        at("endpointslice-api", 55),
        at("serviceexport-web-v1alpha1", 40),
    ];
    let expected = expected_view("east-1", &all);
    assert_eq!(expected.as_ref().map(|v| v.exports.len()), Some(2));
    wait_for(&source, &expected).await;

    assert_eq!(
        lists_of(&seen, "services"),
        2,
        "410 Gone made the watcher relist services"
    );
    assert_eq!(
        lists_of(&seen, "endpointslices"),
        2,
        "410 Gone made the watcher relist slices"
    );
    let watches = watches_of(&seen, "endpointslices");
    assert!(
        watches[0].contains("resourceVersion=30") && watches[1].contains("resourceVersion=30"),
        "a failed watch start is retried from the same version: {watches:#?}"
    );
    assert!(watches[2].contains("resourceVersion=31"), "{watches:#?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let watches = watches_of(&seen, "endpointslices");
    assert!(
        watches[3].contains("resourceVersion=60"),
        "after the relist: {watches:#?}"
    );
    assert_eq!(source.view(), expected, "nothing changed after settling");
}

#[tokio::test(start_paused = true)]
async fn no_view_is_published_before_every_initial_list_is_done() {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    // slices never answer: a partial view would export no endpoints and drop traffic
    let _seen = serve(
        handle,
        vec![
            ("nodes", vec![Step::List(10, vec![at("node-east-1", 10)])]),
            (
                "services",
                vec![Step::List(20, vec![at("service-web", 20)])],
            ),
            (
                "serviceexports",
                vec![Step::List(40, vec![at("serviceexport-web-v1alpha1", 40)])],
            ),
        ],
    );
    let source = KubeSource::start(kube::Client::new(service, "default"), "east-1".into())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(source.view(), None);
    assert_eq!(*source.changes().borrow(), 0);
    assert!(
        KubeSource::start(
            kube::Client::new(mock::pair::<Request<Body>, Response<Body>>().0, "default"),
            String::new()
        )
        .await
        .is_err(),
        "an empty node name is refused"
    );
}
