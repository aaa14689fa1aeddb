//! Connect failures, 5xx retries, and locality preference.

use std::sync::atomic::Ordering;

use l7proxy::{Protocol, Proxy, ProxyConfig};

use crate::support::*;

#[tokio::test]
async fn connect_failures_are_retried_transparently() {
    let b = backend("live").await;
    let _p = proxy(vec![service(
        "web.shop.global",
        "127.11.1.1",
        8080,
        Protocol::Http,
        &[(dead_addr(), local()), (b.addr, local())],
    )])
    .await;
    let mut failed = 0;
    for i in 0..100 {
        // Fresh and reused client connections, idempotent and not.
        let mut c = h1(addr("127.11.1.1:8080")).await;
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let (status, _, body) = send1(&mut c, request(method, "/", full("x"))).await;
        if status != 200 || body != "live" {
            failed += 1;
        }
    }
    assert_eq!(failed, 0);
    assert_eq!(b.state.requests(), 100);
}

#[tokio::test]
async fn every_endpoint_down_is_a_503_naming_the_reason() {
    let _p = proxy(vec![service(
        "web.shop.global",
        "127.11.2.1",
        8080,
        Protocol::Http,
        &[(dead_addr(), local())],
    )])
    .await;
    let mut c = h1(addr("127.11.2.1:8080")).await;
    let (status, headers, _) = get1(&mut c, "/").await;
    assert_eq!(status, 503);
    assert_eq!(headers["x-peerd-error"], "connect-failed");
}

#[tokio::test]
async fn server_errors_are_retried_for_get_but_not_for_post() {
    // The failing endpoint is the nearest, so every request tries it first.
    let bad = backend("bad").await;
    bad.state.status.store(503, Ordering::SeqCst);
    let good = backend("good").await;
    let endpoints = [
        (bad.addr, local()),
        (good.addr, locality("c3", "r2", "z9", "n9")),
    ];
    // Two names over the same endpoints: each has its own balancer state.
    let p = proxy(vec![
        service(
            "get.shop.global",
            "127.11.3.1",
            8080,
            Protocol::Http,
            &endpoints,
        ),
        service(
            "post.shop.global",
            "127.11.3.2",
            8080,
            Protocol::Http,
            &endpoints,
        ),
    ])
    .await;

    let mut c = h1(addr("127.11.3.2:8080")).await;
    for _ in 0..3 {
        let (status, _, body) = send1(&mut c, request("POST", "/", full("order"))).await;
        assert_eq!((status.as_u16(), &body[..]), (503, &b"bad"[..]));
    }
    assert_eq!(
        (bad.state.requests(), good.state.requests()),
        (3, 0),
        "no POST was retried"
    );

    let mut c = h1(addr("127.11.3.1:8080")).await;
    for _ in 0..3 {
        let (status, _, body) = get1(&mut c, "/").await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"good"[..]));
    }
    assert_eq!(
        (bad.state.requests(), good.state.requests()),
        (6, 3),
        "every GET was retried"
    );
    assert_metrics(
        &p,
        &[
            r#"retries_total{service="get.shop.global"} 3"#,
            r#"retries_total{service="post.shop.global"} 0"#,
            r#"requests_total{service="post.shop.global",cluster="c1",code="503"} 3"#,
        ],
    );
}

#[tokio::test]
async fn nearest_locality_takes_the_traffic() {
    let same_zone = backend("same-zone").await;
    let same_region = backend("same-region").await;
    let remote = backend("remote").await;
    let p = proxy(vec![service(
        "web.shop.global",
        "127.11.4.1",
        8080,
        Protocol::Http,
        &[
            (remote.addr, locality("c3", "r2", "z9", "n9")),
            (same_region.addr, locality("c2", "r1", "z2", "n3")),
            (same_zone.addr, locality("c1", "r1", "z1", "n2")),
        ],
    )])
    .await;
    let mut c = h1(addr("127.11.4.1:8080")).await;
    for _ in 0..1000 {
        assert_eq!(get1(&mut c, "/").await.0, 200);
    }
    let local_share = same_zone.state.requests() as f64 / 1000.0;
    assert!(
        local_share >= 0.99,
        "same zone got {local_share}, same region {}, remote {}",
        same_region.state.requests(),
        remote.state.requests()
    );
    let explained = p.explain("web.shop.global").unwrap();
    assert!(explained.ports[0].tier_shares.same_zone >= 0.99);
}

#[tokio::test]
async fn a_dead_local_endpoint_fails_over_to_the_next_tier() {
    let remote = backend("remote").await;
    let p = Proxy::new(local(), std::sync::Arc::new(l7proxy::TcpDialer));
    let failures = p
        .update(ProxyConfig {
            services: vec![service(
                "web.shop.global",
                "127.11.5.1",
                8080,
                Protocol::Http,
                &[
                    (dead_addr(), local()),
                    (remote.addr, locality("c3", "r2", "z9", "n9")),
                ],
            )],
        })
        .await;
    assert!(failures.is_empty());
    let mut c = h1(addr("127.11.5.1:8080")).await;
    for _ in 0..50 {
        let (status, _, body) = get1(&mut c, "/").await;
        assert_eq!((status.as_u16(), &body[..]), (200, &b"remote"[..]));
    }
    let text = metrics_text(&p);
    for needle in [
        r#"upstream_connect_failures_total{service="web.shop.global"} "#,
        r#"ejections_total{service="web.shop.global"} "#,
    ] {
        let line = text.lines().find(|l| l.starts_with(needle)).unwrap();
        let n: u64 = line[needle.len()..].parse().unwrap();
        assert!(n >= 1, "{line}");
    }
}
