//! The pure view over stores filled the way reflectors fill them, from API-shaped fixtures.

use k8s_openapi::api::discovery::v1::EndpointConditions;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;

use super::*;
use crate::export::{ExportVersion, export_resource};

fn fixture<T: DeserializeOwned>(text: &str) -> T {
    serde_json::from_str(text).expect("fixture parses into the k8s-openapi type")
}

fn east1() -> Node {
    fixture(include_str!("../../fixtures/node-east-1.json"))
}
fn east2() -> Node {
    fixture(include_str!("../../fixtures/node-east-2-legacy.json"))
}
fn web() -> Service {
    fixture(include_str!("../../fixtures/service-web.json"))
}
fn api() -> Service {
    fixture(include_str!("../../fixtures/service-api.json"))
}
fn web_v4() -> EndpointSlice {
    fixture(include_str!("../../fixtures/endpointslice-web-v4.json"))
}
fn web_v6() -> EndpointSlice {
    fixture(include_str!("../../fixtures/endpointslice-web-v6.json"))
}
fn api_slice() -> EndpointSlice {
    fixture(include_str!("../../fixtures/endpointslice-api.json"))
}
fn web_export() -> ExportObject {
    fixture(include_str!(
        "../../fixtures/serviceexport-web-v1alpha1.json"
    ))
}
fn api_export_v1beta1() -> ExportObject {
    fixture(include_str!(
        "../../fixtures/serviceexport-api-v1beta1.json"
    ))
}

/// A writer after an initial list of `objects`, as a reflector leaves it.
fn listed<K>(writer: &mut Writer<K>, objects: Vec<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    writer.apply_watcher_event(&Event::Init);
    for o in objects {
        writer.apply_watcher_event(&Event::InitApply(o));
    }
    writer.apply_watcher_event(&Event::InitDone);
}

/// Stores for one cluster, with their writers to apply later events.
struct World {
    nodes: Writer<Node>,
    services: Writer<Service>,
    slices: Writer<EndpointSlice>,
    exports: Writer<ExportObject>,
}

impl World {
    fn new(
        nodes: Vec<Node>,
        services: Vec<Service>,
        slices: Vec<EndpointSlice>,
        exports: Vec<ExportObject>,
    ) -> Self {
        let mut w = Self {
            nodes: Writer::default(),
            services: Writer::default(),
            slices: Writer::default(),
            exports: Writer::new(export_resource(ExportVersion::V1alpha1)),
        };
        listed(&mut w.nodes, nodes);
        listed(&mut w.services, services);
        listed(&mut w.slices, slices);
        listed(&mut w.exports, exports);
        w
    }

    /// The default cluster: two nodes, web (ServiceExport) and api (label), three slices.
    fn shop() -> Self {
        Self::new(
            vec![east1(), east2()],
            vec![web(), api()],
            vec![web_v4(), web_v6(), api_slice()],
            vec![web_export()],
        )
    }

    fn view(&self, node: &str) -> Option<NodeView> {
        node_view(
            node,
            &self.nodes.as_reader(),
            &self.services.as_reader(),
            &self.slices.as_reader(),
            &self.exports.as_reader(),
        )
    }

    fn export(&self, node: &str, name: &str) -> Option<ServiceExport> {
        self.view(node)?
            .exports
            .into_iter()
            .find(|e| e.key.name == name)
    }
}

fn ep(address: &str, ports: &[(&str, u16)], ready: bool) -> Endpoint {
    Endpoint {
        address: address.parse().unwrap(),
        ports: ports.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect(),
        ready,
    }
}

fn conditions(
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> Option<EndpointConditions> {
    Some(EndpointConditions {
        ready,
        serving,
        terminating,
    })
}

#[test]
fn dual_stack_node_gives_both_pod_cidrs_locality_and_addresses_in_order() {
    let view = World::shop().view("east-1").unwrap();
    assert_eq!(view.name, "east-1");
    assert_eq!(
        (view.region.as_str(), view.zone.as_str()),
        ("us-east", "us-east-1a")
    );
    assert_eq!(
        view.pod_cidrs,
        [
            "10.1.1.0/24".parse::<IpNet>().unwrap(),
            "fd00:10:1:1::/64".parse().unwrap()
        ]
    );
    let addresses: Vec<String> = view.addresses.iter().map(ToString::to_string).collect();
    assert_eq!(
        addresses,
        ["172.18.0.3", "fc00:f853:ccd:e793::3", "203.0.113.7"]
    );
}

#[test]
fn single_stack_node_falls_back_to_pod_cidr_and_missing_labels_give_empty_locality() {
    let view = World::shop().view("east-2").unwrap();
    assert_eq!(view.pod_cidrs, ["10.1.2.0/24".parse::<IpNet>().unwrap()]);
    assert_eq!((view.region.as_str(), view.zone.as_str()), ("", ""));
    assert_eq!(view.addresses, ["172.18.0.4".parse::<IpAddr>().unwrap()]);
    // an empty podCIDRs list also falls back, and garbage CIDRs are skipped
    let mut node = east2();
    let spec = node.spec.as_mut().unwrap();
    spec.pod_cidrs = Some(Vec::new());
    spec.pod_cidr = Some("not-a-cidr".into());
    let w = World::new(vec![node], vec![], vec![], vec![]);
    assert_eq!(w.view("east-2").unwrap().pod_cidrs, []);
}

#[test]
fn unknown_node_has_no_view() {
    assert_eq!(World::shop().view("west-1"), None);
    assert_eq!(
        World::new(vec![], vec![web()], vec![web_v4()], vec![web_export()]).view("east-1"),
        None
    );
}

#[test]
fn exports_carry_this_nodes_endpoints_with_ports_from_service_and_slices() {
    let view = World::shop().view("east-1").unwrap();
    let keys: Vec<String> = view.exports.iter().map(|e| e.key.to_string()).collect();
    assert_eq!(keys, ["api.shop", "web.shop"]);
    let web = &view.exports[1];
    assert_eq!(
        web.ports,
        [
            ServicePort {
                name: "http".into(),
                port: 80,
                protocol: Protocol::Http
            },
            ServicePort {
                name: "grpc".into(),
                port: 9090,
                protocol: Protocol::Grpc
            },
        ],
        "the UDP port is left out"
    );
    let both = [("http", 8080), ("grpc", 9090)];
    assert_eq!(
        web.endpoints,
        [
            ep("10.1.1.10", &both, true),
            ep("10.1.1.11", &both, true), // nil ready and serving mean true
            ep("10.1.1.12", &both, false),
            ep("fd00:10:1:1::10", &both, true),
        ],
        "10.1.2.10 runs on east-2 and is not exported by east-1"
    );
}

#[test]
fn each_node_exports_only_its_own_endpoints_and_nothing_without_them() {
    let w = World::shop();
    let web = w.export("east-2", "web").unwrap();
    assert_eq!(
        web.endpoints,
        [ep("10.1.2.10", &[("http", 8080), ("grpc", 9090)], true)]
    );
    assert_eq!(
        w.export("east-2", "api"),
        None,
        "api has no endpoint on east-2"
    );
}

#[test]
fn named_and_numeric_target_ports_come_from_the_slice() {
    // web's http targets the named port "http", grpc the number 9090: the slice resolves both.
    let mut slice = web_v4();
    let ports = slice.ports.as_mut().unwrap();
    ports[0].port = Some(8081);
    ports[1].port = None; // a named target port no pod of this slice defines
    let w = World::new(vec![east1()], vec![web()], vec![slice], vec![web_export()]);
    let web = w.export("east-1", "web").unwrap();
    assert_eq!(web.endpoints[0], ep("10.1.1.10", &[("http", 8081)], true));
    // the unnamed port of api: "" in the slice, port-443 in the mesh
    let api = World::shop().export("east-1", "api").unwrap();
    assert_eq!(
        api.ports,
        [ServicePort {
            name: "port-443".into(),
            port: 443,
            protocol: Protocol::Http2
        }]
    );
    assert_eq!(api.endpoints[0].ports, [("port-443".to_owned(), 8443)]);
}

#[test]
fn endpoint_conditions_decide_readiness() {
    // (ready, serving, terminating) of one endpoint on east-1, with a ready one on east-2
    let cases = [
        ((None, None, None), true),
        ((Some(true), None, None), true),
        ((Some(true), Some(true), Some(false)), true),
        ((Some(false), None, None), false),
        ((Some(false), Some(true), Some(false)), false),
        ((Some(false), Some(true), Some(true)), false), // not draining: east-2 is ready
        ((Some(false), Some(false), Some(true)), false),
        ((None, Some(false), Some(true)), true), // nil ready means ready, whatever the rest says
    ];
    for ((ready, serving, terminating), expected) in cases {
        let mut slice = web_v4();
        slice
            .endpoints
            .retain(|e| ["10.1.1.10", "10.1.2.10"].contains(&e.addresses[0].as_str()));
        slice.endpoints[0].conditions = conditions(ready, serving, terminating);
        let w = World::new(vec![east1()], vec![web()], vec![slice], vec![web_export()]);
        let got = w.export("east-1", "web").unwrap().endpoints[0].ready;
        assert_eq!(
            got, expected,
            "ready={ready:?} serving={serving:?} terminating={terminating:?}"
        );
    }
}

#[test]
fn draining_services_fall_back_to_serving_terminating_endpoints_cluster_wide() {
    // api: one serving+terminating and one terminating-only endpoint on east-1, none ready
    let w = World::shop();
    let draining = w.export("east-1", "api").unwrap();
    assert_eq!(
        draining.endpoints,
        [
            ep("10.1.1.20", &[("port-443", 8443)], true),
            ep("10.1.1.21", &[("port-443", 8443)], false)
        ]
    );
    // a ready endpoint of api on another node ends the fallback on this one
    let mut slice = api_slice();
    let mut ready = slice.endpoints[0].clone();
    ready.addresses = vec!["10.1.2.20".into()];
    ready.node_name = Some("east-2".into());
    ready.conditions = conditions(Some(true), Some(true), Some(false));
    slice.endpoints.push(ready);
    let w = World::new(vec![east1(), east2()], vec![api()], vec![slice], vec![]);
    let on_east1 = w.export("east-1", "api").unwrap();
    assert!(on_east1.endpoints.iter().all(|e| !e.ready), "{on_east1:?}");
    assert!(w.export("east-2", "api").unwrap().endpoints[0].ready);
}

#[test]
fn service_exports_appearing_and_disappearing_toggle_the_export() {
    let mut w = World::new(vec![east1()], vec![web()], vec![web_v4()], vec![]);
    assert_eq!(
        w.export("east-1", "web"),
        None,
        "no ServiceExport, no label"
    );
    w.exports.apply_watcher_event(&Event::Apply(web_export()));
    assert!(w.export("east-1", "web").is_some());
    w.exports.apply_watcher_event(&Event::Delete(web_export()));
    assert_eq!(w.export("east-1", "web"), None);
    // a v1beta1 object (with a spec) counts the same: only namespace/name matter
    let mut export = api_export_v1beta1();
    export.metadata.name = Some("web".into());
    w.exports.apply_watcher_event(&Event::Apply(export));
    assert!(w.export("east-1", "web").is_some());
    // an export in another namespace does not count
    let mut w = World::new(vec![east1()], vec![web()], vec![web_v4()], vec![]);
    let mut other = web_export();
    other.metadata.namespace = Some("other".into());
    w.exports.apply_watcher_event(&Event::Apply(other));
    assert_eq!(w.export("east-1", "web"), None);
}

#[test]
fn the_export_label_must_be_true() {
    let mut w = World::shop();
    assert!(w.export("east-1", "api").is_some());
    for value in [Some("false"), Some("yes"), None] {
        let mut service = api();
        let labels = service.metadata.labels.as_mut().unwrap();
        match value {
            Some(v) => labels.insert(EXPORT_LABEL_KEY.into(), v.into()),
            None => labels.remove(EXPORT_LABEL_KEY),
        };
        w.services.apply_watcher_event(&Event::Apply(service));
        assert_eq!(w.export("east-1", "api"), None, "label {value:?}");
    }
}

const EXPORT_LABEL_KEY: &str = crate::EXPORT_LABEL;

#[test]
fn a_service_deleted_before_its_slices_is_not_exported() {
    let mut w = World::shop();
    w.services.apply_watcher_event(&Event::Delete(web()));
    let view = w.view("east-1").unwrap();
    assert_eq!(view.exports.len(), 1);
    assert_eq!(view.exports[0].key.name, "api");
    // slices without a service-name label, FQDN slices, and slices of unknown services are ignored
    let mut orphan = web_v4();
    orphan
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove(SERVICE_NAME_LABEL);
    orphan.metadata.name = Some("orphan".into());
    let mut fqdn = web_v4();
    fqdn.address_type = "FQDN".into();
    fqdn.metadata.name = Some("fqdn".into());
    fqdn.endpoints[0].addresses = vec!["web.example.com".into()];
    let w = World::new(
        vec![east1()],
        vec![web()],
        vec![orphan, fqdn],
        vec![web_export()],
    );
    assert_eq!(w.export("east-1", "web"), None);
}

#[test]
fn garbage_addresses_and_ports_are_skipped_without_panicking() {
    let mut slice = web_v4();
    slice.endpoints[0].addresses = vec!["not-an-ip".into()];
    slice.endpoints[1].addresses = vec![];
    slice.ports.as_mut().unwrap()[0].port = Some(70000);
    let w = World::new(vec![east1()], vec![web()], vec![slice], vec![web_export()]);
    let web = w.export("east-1", "web").unwrap();
    assert_eq!(web.endpoints, [ep("10.1.1.12", &[("grpc", 9090)], false)]);
}

#[test]
fn a_service_with_only_udp_ports_is_not_exported() {
    let mut service = web();
    service
        .spec
        .as_mut()
        .unwrap()
        .ports
        .as_mut()
        .unwrap()
        .retain(|p| p.name.as_deref() == Some("statsd"));
    let w = World::new(
        vec![east1()],
        vec![service],
        vec![web_v4()],
        vec![web_export()],
    );
    assert_eq!(w.export("east-1", "web"), None);
}

#[test]
fn app_protocols_map_to_proxy_protocols() {
    let cases = [
        (Some("http"), Protocol::Http),
        (Some("HTTP"), Protocol::Http),
        (Some("h2c"), Protocol::Http2),
        (Some("kubernetes.io/h2c"), Protocol::Http2),
        (Some("grpc"), Protocol::Grpc),
        (Some("https"), Protocol::Tcp),
        (Some("kubernetes.io/ws"), Protocol::Tcp),
        (Some("example.com/custom"), Protocol::Tcp),
        (None, Protocol::Tcp),
    ];
    for (app, expected) in cases {
        assert_eq!(protocol(app), expected, "{app:?}");
    }
}
