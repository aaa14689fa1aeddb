//! Errors on the wire, timeouts, metrics, the access log and `explain`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use l7proxy::{Policy, Protocol};

use crate::support::*;

fn grpc_request(path: &str) -> Request<TestBody> {
    Request::builder()
        .method("POST")
        .uri(format!("http://grpc.shop.global{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(&b"\0\0\0\0\0"[..]))
        .unwrap()
}

#[tokio::test]
async fn no_endpoint_is_503_for_http_and_unavailable_for_grpc() {
    let _p = proxy(vec![
        service("web.shop.global", "127.14.1.1", 8080, Protocol::Http, &[]),
        service("grpc.shop.global", "127.14.1.2", 9090, Protocol::Grpc, &[]),
    ])
    .await;
    let mut c = h1(addr("127.14.1.1:8080")).await;
    let (status, headers, _) = get1(&mut c, "/").await;
    assert_eq!(status, 503);
    assert_eq!(headers["x-peerd-error"], "no-endpoint");

    let mut g = h2(addr("127.14.1.2:9090")).await;
    let response = g.send_request(grpc_request("/svc/Method")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "14");
    assert_eq!(response.headers()["x-peerd-error"], "no-endpoint");
}

#[tokio::test]
async fn timeouts_are_504_and_deadline_exceeded() {
    let slow = backend("slow").await;
    let mut per_try = service(
        "web.shop.global",
        "127.14.2.1",
        8080,
        Protocol::Http,
        &[(slow.addr, local())],
    );
    per_try.policy = Policy {
        try_timeout: Duration::from_millis(100),
        max_attempts: 1,
        ..Policy::default()
    };
    let mut overall = service(
        "all.shop.global",
        "127.14.2.2",
        8080,
        Protocol::Http,
        &[(slow.addr, local())],
    );
    overall.policy = Policy {
        request_timeout: Duration::from_millis(150),
        ..Policy::default()
    };
    let mut grpc = service(
        "grpc.shop.global",
        "127.14.2.3",
        9090,
        Protocol::Grpc,
        &[(slow.addr, local())],
    );
    grpc.policy = per_try.policy.clone();
    let _p = proxy(vec![per_try, overall, grpc]).await;

    let mut c = h1(addr("127.14.2.1:8080")).await;
    let (status, headers, _) = get1(&mut c, "/delay/2000").await;
    assert_eq!(status, 504);
    assert_eq!(headers["x-peerd-error"], "try-timeout");

    let mut c = h1(addr("127.14.2.2:8080")).await;
    let (status, headers, _) = get1(&mut c, "/delay/2000").await;
    assert_eq!(status, 504);
    assert_eq!(headers["x-peerd-error"], "request-timeout");

    let mut g = h2(addr("127.14.2.3:9090")).await;
    let response = g.send_request(grpc_request("/delay/2000")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "4");
}

#[tokio::test]
async fn metrics_access_log_and_explain() {
    let a = backend("a").await;
    let p = proxy(vec![
        service(
            "web.shop.global",
            "127.14.3.1",
            8080,
            Protocol::Http,
            &[(a.addr, local()), (dead_addr(), local())],
        ),
        service("none.shop.global", "127.14.3.2", 8080, Protocol::Http, &[]),
    ])
    .await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    p.set_access_log(Some(Box::new(move |entry| {
        sink.lock().unwrap().push(entry.to_json())
    })));

    let mut c = h1(addr("127.14.3.1:8080")).await;
    for _ in 0..10 {
        assert_eq!(get1(&mut c, "/").await.0, 200);
    }
    let mut c = h1(addr("127.14.3.2:8080")).await;
    assert_eq!(get1(&mut c, "/").await.0, 503);

    assert_metrics(
        &p,
        &[
            r#"requests_total{service="web.shop.global",cluster="c1",code="200"} 10"#,
            r#"requests_total{service="none.shop.global",cluster="",code="503"} 1"#,
            r#"request_duration_seconds_bucket{le="#,
            r#"retries_total{service="web.shop.global"}"#,
            r#"ejections_total{service="web.shop.global"}"#,
            r#"active_connections{service="web.shop.global"} 1"#,
            r#"upstream_connect_failures_total{service="web.shop.global"}"#,
        ],
    );

    let log = log.lock().unwrap();
    assert_eq!(log.len(), 11);
    let first: serde_json::Value = serde_json::from_str(&log[0]).unwrap();
    assert_eq!(first["service"], "web.shop.global");
    assert_eq!(first["status"], 200);
    assert_eq!(first["upstream"], a.addr.to_string());
    assert_eq!(first["method"], "GET");
    let last: serde_json::Value = serde_json::from_str(&log[10]).unwrap();
    assert_eq!(last["error"], "no-endpoint");

    let explained = p.explain("web.shop.global").unwrap();
    assert_eq!(explained.ports.len(), 1);
    assert_eq!(explained.ports[0].endpoints.len(), 2);
    assert_eq!(explained.ports[0].protocol, "http");
    let json = serde_json::to_value(&explained).unwrap();
    assert!(json["ports"][0]["endpoints"][0]["tier"].is_string());
    assert!(p.explain("nope.shop.global").is_none());
}
