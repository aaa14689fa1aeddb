//! Configuration updates: endpoints and listeners come and go.

use l7proxy::{Protocol, ProxyConfig};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn removed_endpoints_stop_getting_traffic() {
    let a = backend("a").await;
    let b = backend("b").await;
    let svc = |endpoints: &[_]| {
        service(
            "web.shop.global",
            "127.12.1.1",
            8080,
            Protocol::Http,
            endpoints,
        )
    };
    let p = proxy(vec![svc(&[(a.addr, local())])]).await;
    let mut c = h1(addr("127.12.1.1:8080")).await;
    for _ in 0..10 {
        assert_eq!(&get1(&mut c, "/").await.2[..], b"a");
    }
    assert!(
        p.update(ProxyConfig {
            services: vec![svc(&[(a.addr, local()), (b.addr, local())])]
        })
        .await
        .is_empty()
    );
    for _ in 0..20 {
        assert_eq!(get1(&mut c, "/").await.0, 200);
    }

    assert!(
        p.update(ProxyConfig {
            services: vec![svc(&[(b.addr, local())])]
        })
        .await
        .is_empty()
    );
    let before = a.state.requests();
    // The open client connection and new ones alike.
    let mut fresh = h1(addr("127.12.1.1:8080")).await;
    for _ in 0..25 {
        assert_eq!(&get1(&mut c, "/").await.2[..], b"b");
        assert_eq!(&get1(&mut fresh, "/").await.2[..], b"b");
    }
    assert_eq!(a.state.requests(), before);
    let explained = p.explain("web.shop.global").unwrap();
    assert_eq!(explained.ports[0].endpoints.len(), 1);
}

#[tokio::test]
async fn listeners_are_added_and_removed() {
    let a = backend("a").await;
    let web = service(
        "web.shop.global",
        "127.12.2.1",
        8080,
        Protocol::Http,
        &[(a.addr, local())],
    );
    let api = service(
        "api.shop.global",
        "127.12.2.2",
        8081,
        Protocol::Http,
        &[(a.addr, local())],
    );
    let p = proxy(vec![web.clone()]).await;
    assert!(TcpStream::connect("127.12.2.2:8081").await.is_err());
    let mut kept = h1(addr("127.12.2.1:8080")).await;
    assert_eq!(get1(&mut kept, "/").await.0, 200);

    assert!(
        p.update(ProxyConfig {
            services: vec![web.clone(), api]
        })
        .await
        .is_empty()
    );
    let mut c = h1(addr("127.12.2.2:8081")).await;
    assert_eq!(get1(&mut c, "/").await.0, 200);
    assert!(p.explain("api.shop.global").is_some());

    assert!(p.update(ProxyConfig { services: vec![] }).await.is_empty());
    assert!(TcpStream::connect("127.12.2.1:8080").await.is_err());
    assert!(TcpStream::connect("127.12.2.2:8081").await.is_err());
    assert!(p.explain("web.shop.global").is_none());
    // Connections open before the listener closed may finish their business.
    assert_eq!(get1(&mut c, "/").await.0, 200);

    assert!(
        p.update(ProxyConfig {
            services: vec![web]
        })
        .await
        .is_empty()
    );
    let mut again = h1(addr("127.12.2.1:8080")).await;
    assert_eq!(get1(&mut again, "/").await.0, 200);
    assert_eq!(p.listening(), vec![addr("127.12.2.1:8080")]);
}

#[tokio::test]
async fn bind_failures_and_duplicates_are_reported_and_the_rest_applies() {
    let a = backend("a").await;
    let taken = std::net::TcpListener::bind("127.12.3.1:8080").unwrap();
    let p = l7proxy::Proxy::new(local(), std::sync::Arc::new(l7proxy::TcpDialer));
    let failures = p
        .update(ProxyConfig {
            services: vec![
                service(
                    "taken.shop.global",
                    "127.12.3.1",
                    8080,
                    Protocol::Http,
                    &[(a.addr, local())],
                ),
                service(
                    "ok.shop.global",
                    "127.12.3.2",
                    8080,
                    Protocol::Http,
                    &[(a.addr, local())],
                ),
                service(
                    "dup.shop.global",
                    "127.12.3.2",
                    8080,
                    Protocol::Http,
                    &[(a.addr, local())],
                ),
            ],
        })
        .await;
    let addrs: Vec<_> = failures.iter().map(|(a, _)| a.to_string()).collect();
    assert_eq!(addrs, ["127.12.3.2:8080", "127.12.3.1:8080"]);
    let mut c = h1(addr("127.12.3.2:8080")).await;
    assert_eq!(get1(&mut c, "/").await.2, "a");
    drop(taken);
}
