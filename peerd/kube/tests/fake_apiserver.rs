//! `KubeSource` against the loopback fake API server, through a client built from the
//! kubeconfig file the fake writes: the first view, later changes within 1 s, a compaction
//! (410) in between, a missing ServiceExport CRD, and the status write-back.

use std::time::Duration;

use peerd_kube::fake::{FakeApiServer, fixture};
use peerd_kube::{EXPORT_CONDITION, KubeSource, NodeView, Options};
use serde_json::{Value, json};
use tokio::time::timeout;

const FIXTURES: &[&str] = &[
    "node-east-1",
    "node-east-2-legacy",
    "service-web",
    "service-api",
    "endpointslice-web-v4",
    "endpointslice-web-v6",
    "endpointslice-api",
    "serviceexport-web-v1alpha1",
];

async fn server_with_fixtures() -> FakeApiServer {
    let server = FakeApiServer::start().await.unwrap();
    for name in FIXTURES {
        server.apply(fixture(name).unwrap()).unwrap();
    }
    server
}

/// A client from the kubeconfig file, as `KUBECONFIG=FILE` gives it to the daemon.
async fn client_from_file(server: &FakeApiServer, dir: &tempfile::TempDir) -> kube::Client {
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// Waits until `source`'s view satisfies `done`, or fails after `limit`.
async fn wait_for(
    source: &KubeSource,
    limit: Duration,
    done: impl Fn(&Option<NodeView>) -> bool,
) -> Option<NodeView> {
    let mut changes = source.changes();
    let result = timeout(limit, async {
        loop {
            let view = source.view();
            if done(&view) {
                return view;
            }
            changes.changed().await.unwrap();
        }
    })
    .await;
    match result {
        Ok(view) => view,
        Err(_) => panic!(
            "no matching view within {limit:?}; last: {:#?}",
            source.view()
        ),
    }
}

/// A new exported service `cart` with one ready endpoint on `node`.
fn cart(node: &str, address: &str) -> [Value; 3] {
    [
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "cart", "namespace": "shop", "labels": {"app": "cart"}},
            "spec": {"clusterIP": "10.96.7.7", "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "appProtocol": "http"}],
                     "selector": {"app": "cart"}, "type": "ClusterIP"},
            "status": {"loadBalancer": {}}
        }),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": "cart-abcde", "namespace": "shop", "generateName": "cart-",
                         "labels": {"kubernetes.io/service-name": "cart", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "endpoints": [{"addresses": [address], "conditions": {"ready": true, "serving": true, "terminating": false}, "nodeName": node, "zone": "us-east-1a"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]
        }),
        json!({
            "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
            "metadata": {"name": "cart", "namespace": "shop", "generation": 1}
        }),
    ]
}

#[tokio::test]
async fn source_from_a_kubeconfig_sees_the_cluster_and_later_changes_within_a_second() {
    let server = server_with_fixtures().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client_from_file(&server, &dir).await;
    let source = KubeSource::start(client, "east-1".into()).await.unwrap();

    let expected = server.expected_view("east-1");
    assert!(
        expected.as_ref().is_some_and(|v| v.exports.len() == 2),
        "{expected:#?}"
    );
    let view = wait_for(&source, Duration::from_secs(5), |v| v.is_some()).await;
    assert_eq!(view, expected);
    assert_eq!(source.exports(), expected.unwrap().exports);

    // an object added later shows up within 1 s
    for object in cart("east-1", "10.1.1.30") {
        server.apply(object).unwrap();
    }
    let view = wait_for(&source, Duration::from_secs(1), |v| {
        v.as_ref()
            .is_some_and(|v| v.exports.iter().any(|e| e.key.name == "cart"))
    })
    .await;
    assert_eq!(view, server.expected_view("east-1"));

    // a compaction expires every watch; changes made meanwhile are not lost
    let service_lists = || {
        let is_list =
            |r: &String| r.starts_with("GET /api/v1/services?") && !r.contains("watch=true");
        server.requests().iter().filter(|r| is_list(r)).count()
    };
    assert_eq!(service_lists(), 1);
    server.expire_watches();
    server
        .delete(
            "multicluster.x-k8s.io/v1alpha1",
            "ServiceExport",
            Some("shop"),
            "web",
        )
        .unwrap();
    let mut node = fixture("node-east-1").unwrap();
    node["metadata"]["labels"]["topology.kubernetes.io/zone"] = json!("us-east-1c");
    server.apply(node).unwrap();
    let mut api = fixture("service-api").unwrap();
    api["metadata"]["labels"]["peerd.io/export"] = json!("false");
    server.apply(api).unwrap();
    let expected = server.expected_view("east-1");
    let view = wait_for(&source, Duration::from_secs(5), |v| *v == expected).await;
    let view = view.unwrap();
    assert_eq!(view.zone, "us-east-1c");
    let names: Vec<&str> = view.exports.iter().map(|e| e.key.name.as_str()).collect();
    assert_eq!(names, ["cart"], "web lost its ServiceExport, api its label");
    assert_eq!(
        service_lists(),
        2,
        "the 410 made the watcher list services again"
    );
}

#[tokio::test]
async fn without_the_service_export_crd_labelled_services_are_still_exported() {
    let server = server_with_fixtures().await;
    server.set_missing("serviceexports", true);
    let source = KubeSource::start(server.client().await.unwrap(), "east-1".into())
        .await
        .unwrap();
    let view = wait_for(&source, Duration::from_secs(5), |v| v.is_some())
        .await
        .unwrap();
    let names: Vec<&str> = view.exports.iter().map(|e| e.key.name.as_str()).collect();
    assert_eq!(names, ["api"], "only the labelled service");
    // the CRD gets installed: the watcher's retries pick it up
    server.set_missing("serviceexports", false);
    let view = wait_for(&source, Duration::from_secs(10), |v| {
        v.as_ref().is_some_and(|v| v.exports.len() == 2)
    })
    .await;
    assert_eq!(view, server.expected_view("east-1"));
}

#[tokio::test]
async fn status_write_back_marks_service_exports_from_one_node() {
    let server = server_with_fixtures().await;
    server
        .apply(json!({
            "apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
            "metadata": {"name": "ghost", "namespace": "shop", "generation": 1}
        }))
        .unwrap();
    let mut options = Options::new("east-1");
    options.write_status = true;
    let writer = KubeSource::start_with(server.client().await.unwrap(), options.clone())
        .await
        .unwrap();
    // east-2 is not the elected writer (east-1 sorts first among endpoint nodes)
    options.node_name = "east-2".into();
    let _other = KubeSource::start_with(server.client().await.unwrap(), options)
        .await
        .unwrap();
    wait_for(&writer, Duration::from_secs(5), |v| v.is_some()).await;

    let condition = |name: &str| -> Option<Value> {
        let o = server.get(
            "multicluster.x-k8s.io/v1alpha1",
            "ServiceExport",
            Some("shop"),
            name,
        )?;
        o["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == EXPORT_CONDITION)
            .cloned()
    };
    timeout(Duration::from_secs(5), async {
        while condition("web").is_none() || condition("ghost").is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("conditions written");
    let web = condition("web").unwrap();
    assert_eq!(
        (web["status"].as_str(), web["reason"].as_str()),
        (Some("True"), Some("Exported"))
    );
    assert_eq!(
        web["message"],
        "exported to the peerd mesh as web.shop.global"
    );
    let ghost = condition("ghost").unwrap();
    assert_eq!(
        (ghost["status"].as_str(), ghost["reason"].as_str()),
        (Some("False"), Some("ServiceNotFound"))
    );
    // other controllers' conditions are kept
    let web = server
        .get(
            "multicluster.x-k8s.io/v1alpha1",
            "ServiceExport",
            Some("shop"),
            "web",
        )
        .unwrap();
    assert!(
        web["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Valid")
    );
}

#[tokio::test]
async fn bootstrap_reads_the_node_and_its_secret() {
    use peerd_kube::bootstrap::{NodeCredentials, fetch_node, fetch_node_secret, render};
    let server = server_with_fixtures().await;
    let client = server.client().await.unwrap();
    let node = fetch_node(&client, "east-2").await.unwrap();
    assert_eq!(
        render(
            "${NODE_NAME} ${POD_CIDRS} ${OVERLAY_ADDRESS} [${ZONE}]",
            &node
        )
        .unwrap(),
        "east-2 [\"10.1.2.0/24\"] 10.1.2.254 []"
    );
    let missing = fetch_node(&client, "west-9").await.unwrap_err().to_string();
    assert!(missing.contains("west-9"), "{missing}");

    assert_eq!(
        fetch_node_secret(&client, "peerd-node-east-2")
            .await
            .unwrap(),
        None
    );
    // base64 of "CERT" and "KEY"
    server
        .apply(
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "peerd-node-east-2", "namespace": "default"},
        "data": {"node.pem": "Q0VSVA==", "node.key": "S0VZ"}}),
        )
        .unwrap();
    assert_eq!(
        fetch_node_secret(&client, "peerd-node-east-2")
            .await
            .unwrap(),
        Some(NodeCredentials {
            cert_pem: b"CERT".to_vec(),
            key_pem: b"KEY".to_vec()
        })
    );
    server
        .apply(
            json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "half", "namespace": "default"}, "data": {"node.pem": "Q0VSVA=="}}),
        )
        .unwrap();
    let err = fetch_node_secret(&client, "half")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(err, "secret half has no node.key");
}

/// In a cluster the client speaks HTTPS: building its rustls config must find the ring
/// provider (kube's `ring` feature; no aws-lc in the graph) without any set-up by the daemon.
#[tokio::test]
async fn an_https_client_builds_with_the_ring_provider() {
    let kubeconfig = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n\
        contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: abc\n";
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).expect("an HTTPS client");
}

/// A listener the caller bound (as an end-to-end test binds one inside a network namespace)
/// serves the same API: the kubeconfig names its address, and a source sees the cluster.
#[tokio::test]
async fn a_server_on_a_caller_bound_listener_serves_lists_and_watches() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = FakeApiServer::start_on(listener).await.unwrap();
    assert_eq!(server.addr(), addr);
    assert!(
        server
            .kubeconfig()
            .contains(&format!("server: http://{addr}\n"))
    );
    for name in FIXTURES {
        server.apply(fixture(name).unwrap()).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let client = client_from_file(&server, &dir).await;
    let source = KubeSource::start(client, "east-1".into()).await.unwrap();
    let view = wait_for(&source, Duration::from_secs(5), |v| v.is_some()).await;
    assert_eq!(view, server.expected_view("east-1"));
    server
        .delete(
            "multicluster.x-k8s.io/v1alpha1",
            "ServiceExport",
            Some("shop"),
            "web",
        )
        .unwrap();
    wait_for(&source, Duration::from_secs(2), |v| {
        v.as_ref()
            .is_some_and(|v| v.exports.iter().all(|e| e.key.name != "web"))
    })
    .await;
}
