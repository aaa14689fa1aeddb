use super::*;

const KEY_A: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const KEY_B: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/peerd/node.toml"), text)
}

fn minimal() -> String {
    "[node]\nname = \"a\"\nprivate_key_file = \"/k\"\naddress = \"10.0.0.1\"\n".to_owned()
}

#[test]
fn minimal_file_gets_defaults() {
    let c = parse(&minimal()).unwrap();
    assert_eq!(c.node.cluster, "default");
    assert_eq!(c.node.listen_port, 51820);
    assert_eq!(c.node.interface, "pd0");
    assert_eq!(c.mtu(), 1420);
    assert_eq!(c.admin_socket(), Path::new("/run/peerd/pd0.sock"));
    assert_eq!(c.uapi_socket(), Path::new("/var/run/wireguard/pd0.sock"));
    assert!(c.peers.is_empty());
}

#[test]
fn peers_parse_with_keys_endpoints_and_prefixes() {
    let text = format!(
        "{}\n[[peer]]\nname = \"b\"\npublic_key = \"{KEY_A}\"\nendpoint = \"192.0.2.2:51820\"\n\
         allowed_ips = [\"10.0.0.2/32\", \"fd00::2/128\"]\npersistent_keepalive = 25\n\n\
         [[peer]]\nname = \"c\"\npublic_key = \"{KEY_B}\"\n",
        minimal()
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.peers.len(), 2);
    assert_eq!(c.peers[0].public_key.to_string(), KEY_A);
    assert_eq!(
        c.peers[0].endpoint_addr(),
        Some("192.0.2.2:51820".parse().unwrap())
    );
    assert_eq!(c.peers[0].allowed_ips.len(), 2);
    assert_eq!(c.peers[1].endpoint_addr(), None);
}

#[test]
fn unknown_field_names_field_and_line() {
    let text = format!("{}listen_prot = 1\n", minimal());
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, Some(5));
    assert_eq!(e.field.as_deref(), Some("listen_prot"));
    assert!(
        e.to_string()
            .starts_with("/etc/peerd/node.toml:5: listen_prot: unknown field"),
        "{e}"
    );
}

#[test]
fn bad_values_name_field_and_line() {
    let cases = [
        (
            format!("{}listen_port = \"x\"\n", minimal()),
            5,
            "node.listen_port",
        ),
        (
            minimal().replace("10.0.0.1", "10.0.0.300"),
            4,
            "node.address",
        ),
        (
            format!("{}pod_cidrs = [\"10.1.0.0/33\"]\n", minimal()),
            5,
            "node.pod_cidrs",
        ),
        (
            format!(
                "{}\n[[peer]]\nname = \"b\"\npublic_key = \"short\"\n",
                minimal()
            ),
            8,
            "peer.public_key",
        ),
    ];
    for (text, line, field) in cases {
        let e = parse(&text).unwrap_err();
        assert_eq!(
            (e.line, e.field.as_deref()),
            (Some(line), Some(field)),
            "{e}"
        );
    }
}

#[test]
fn semantic_errors_name_field_and_line() {
    let two_peers = format!(
        "{}\n[[peer]]\nname = \"b\"\npublic_key = \"{KEY_A}\"\n\n[[peer]]\nname = \"c\"\npublic_key = \"{KEY_A}\"\n",
        minimal()
    );
    let e = parse(&two_peers).unwrap_err();
    assert_eq!(
        (e.line, e.field.as_deref()),
        (Some(12), Some("peer[1].public_key")),
        "{e}"
    );
    assert!(e.message.contains("peer[0]"));

    let long_name = format!("{}interface = \"much-too-long-name\"\n", minimal());
    let e = parse(&long_name).unwrap_err();
    assert_eq!(
        (e.line, e.field.as_deref()),
        (Some(5), Some("node.interface")),
        "{e}"
    );

    let bad_endpoint = format!(
        "{}\n[[peer]]\nname = \"b\"\npublic_key = \"{KEY_A}\"\nendpoint = \"nowhere\"\n",
        minimal()
    );
    let e = parse(&bad_endpoint).unwrap_err();
    assert_eq!(
        (e.line, e.field.as_deref()),
        (Some(9), Some("peer[0].endpoint")),
        "{e}"
    );
}

#[test]
fn missing_required_field_is_named() {
    let e = parse("[node]\nname = \"a\"\naddress = \"10.0.0.1\"\n").unwrap_err();
    assert_eq!(e.field.as_deref(), Some("private_key_file"), "{e}");
    assert!(e.line.is_some());
}

#[test]
fn example_configs_in_docs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("docs/examples exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            seen += 1;
        }
    }
    assert!(seen > 0, "no example configs in {}", dir.display());
}

#[test]
fn mesh_section_parses_with_defaults_and_checks_seeds() {
    let text = format!(
        "{}pod_cidrs = [\"10.0.0.0/24\"]\n\n[mesh]\nca_file = \"/etc/peerd/ca.pem\"\ncert_file = \"/n.pem\"\nkey_file = \"/n.key\"\nseeds = [\"192.0.2.10:51820\"]\n",
        minimal()
    );
    let c = parse(&text).unwrap();
    let mesh = c.mesh.unwrap();
    assert!(mesh.tunnel_same_cluster);
    assert_eq!(mesh.state_dir, Path::new("/var/lib/peerd"));
    assert_eq!(mesh.seeds, ["192.0.2.10:51820"]);

    let bad = text.replace("192.0.2.10:51820", "no-port");
    let e = parse(&bad).unwrap_err();
    assert_eq!(
        (e.line, e.field.as_deref()),
        (Some(11), Some("mesh.seeds")),
        "{e}"
    );

    let outside = text.replace("10.0.0.0/24", "10.9.0.0/24");
    let e = parse(&outside).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("node.address"), "{e}");
}

#[test]
fn services_and_dns_parse_into_exports() {
    let text = format!(
        "{}pod_cidrs = [\"10.0.0.0/24\"]\n\n[dns]\nlisten = \"127.0.0.1:5353\"\n\n[[service]]\nname = \"web\"\nnamespace = \"shop\"\n\
         ports = [{{ name = \"http\", port = 80, protocol = \"http\" }}, {{ name = \"grpc\", port = 90, protocol = \"grpc\" }}]\n\
         endpoints = [{{ address = \"10.0.0.10\", port = 8080 }}, {{ address = \"10.0.0.11\", ports = {{ http = 8081, grpc = 9091 }}, ready = false }}]\n",
        minimal()
    );
    let c = parse(&text).unwrap();
    let dns = c.dns.as_ref().unwrap();
    assert_eq!(c.service_cidr().to_string(), "10.253.0.0/16");
    assert_eq!(dns.ttl, 5);
    let exports = c.exports();
    assert_eq!(exports.len(), 1);
    let e = &exports[0];
    assert_eq!(e.key.to_string(), "web.shop");
    assert_eq!(e.endpoints[0].port("grpc"), Some(8080));
    assert_eq!(e.endpoints[1].port("grpc"), Some(9091));
    assert!(!e.endpoints[1].ready);
}

#[test]
fn service_errors_name_field_and_line() {
    let base = format!(
        "{}pod_cidrs = [\"10.0.0.0/24\"]\n\n[[service]]\nname = \"web\"\nnamespace = \"shop\"\n",
        minimal()
    );
    let cases = [
        (
            format!("{base}ports = [{{ name = \"http\", port = 80, protocol = \"udp\" }}]\n"),
            "service.ports",
        ),
        (
            format!(
                "{base}ports = [{{ name = \"http\", port = 80, protocol = \"http\" }}]\nendpoints = [{{ address = \"10.9.9.9\", port = 1 }}]\n"
            ),
            "service[0].endpoints",
        ),
        (format!("{base}ports = []\n"), "service[0].ports"),
        (
            base.replace("\"web\"", "\"Web_1\"")
                + "ports = [{ name = \"http\", port = 80, protocol = \"http\" }]\n",
            "service[0].name",
        ),
    ];
    for (text, field) in cases {
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some(field), "{e}");
        assert!(e.line.is_some(), "{e}");
    }
}

#[test]
fn policies_parse_and_bad_ones_are_named() {
    let ok = format!(
        "{}\n[[policy]]\nservice = \"web.shop\"\nlocal_only = true\nmax_attempts = 2\n",
        minimal()
    );
    let c = parse(&ok).unwrap();
    assert_eq!(c.policies[0].service, "web.shop");
    assert_eq!(c.policies[0].local_only, Some(true));
    let bad = format!("{}\n[[policy]]\nservice = \"web\"\n", minimal());
    let e = parse(&bad).unwrap_err();
    assert_eq!(
        (e.line, e.field.as_deref()),
        (Some(7), Some("policy[0].service")),
        "{e}"
    );
}

#[test]
fn kubernetes_templates_render_into_valid_configs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let node = peerd_kube::NodeView {
        name: "node-a".into(),
        region: "us-east".into(),
        zone: "us-east-1a".into(),
        pod_cidrs: vec![
            "10.1.1.0/24".parse().unwrap(),
            "fd00:1:1::/64".parse().unwrap(),
        ],
        addresses: vec!["192.0.2.10".parse().unwrap()],
        exports: vec![],
    };
    for template in [
        "deploy/kubernetes/node.toml",
        "deploy/overlays/example-east/node.toml",
    ] {
        let path = root.join(template);
        let text = std::fs::read_to_string(&path).unwrap();
        let rendered = peerd_kube::bootstrap::render(&text, &node).unwrap();
        let c = Config::parse(&path, &rendered).unwrap_or_else(|e| panic!("{e}\n{rendered}"));
        assert_eq!(c.node.name, "node-a");
        assert!(c.kubernetes.is_some());
        assert!(c.node_owns(c.node.address.into()));
    }
}

#[test]
fn userspace_mode_defaults_to_loopback_vips_and_forwards_endpoints_to_loopback() {
    let text = format!(
        "{}mode = \"userspace\"\n\n[[service]]\nname = \"web\"\nnamespace = \"shop\"\n\
         ports = [{{ name = \"http\", port = 80, protocol = \"http\" }}]\n\
         endpoints = [{{ address = \"10.0.0.1\", port = 18080 }}]\n\n[[service]]\nname = \"db\"\nnamespace = \"shop\"\n\
         ports = [{{ name = \"sql\", port = 5432, protocol = \"tcp\" }}]\n\
         endpoints = [{{ address = \"10.0.0.1\", port = 5432, local = \"127.0.0.9:15432\" }}]\n",
        minimal()
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.service_cidr().to_string(), "127.253.0.0/16");
    let forwards = c.forwards();
    assert_eq!(forwards.len(), 2, "{forwards:?}");
    let at = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
    assert_eq!(forwards[&at("10.0.0.1:18080")], at("127.0.0.1:18080"));
    assert_eq!(forwards[&at("10.0.0.1:5432")], at("127.0.0.9:15432"));
    // Kernel mode forwards nothing: endpoints are real addresses there.
    let kernel = parse(&text.replace("mode = \"userspace\"\n", "")).unwrap();
    assert!(kernel.forwards().is_empty());
    assert_eq!(kernel.service_cidr().to_string(), "10.253.0.0/16");
}

#[test]
fn userspace_mode_refuses_vips_off_loopback_and_endpoints_off_the_node() {
    let base = format!("{}mode = \"userspace\"\n", minimal());
    let e = parse(&format!(
        "{base}\n[dns]\nservice_cidr = \"10.253.0.0/16\"\n"
    ))
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("dns.service_cidr"), "{e}");
    assert!(e.to_string().contains("127.0.0.0/8"), "{e}");
    let elsewhere = format!(
        "{base}\n[[service]]\nname = \"web\"\nnamespace = \"shop\"\n\
         ports = [{{ name = \"http\", port = 80, protocol = \"http\" }}]\n\
         endpoints = [{{ address = \"10.0.0.10\", port = 8080 }}]\n"
    );
    let e = parse(&elsewhere).unwrap_err();
    assert!(e.to_string().contains("overlay address"), "{e}");
}

#[test]
fn policy_examples_in_the_operations_guide_parse() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut examples = 0;
    for block in text.split("```toml").skip(1) {
        let body = block.split("```").next().unwrap();
        // Fragments (one table or two) are checked on top of a minimal node.
        let whole = if body.contains("[node]") {
            body.to_owned()
        } else {
            format!("{}{body}", minimal())
        };
        let Ok(value) = whole.parse::<toml::Table>() else {
            continue; // not a peerd config (e.g. a kustomize or CoreDNS snippet)
        };
        if value.contains_key("policy") {
            let c = parse(&whole).unwrap_or_else(|e| panic!("{e}\n{whole}"));
            assert!(!c.policies.is_empty());
            examples += 1;
        }
    }
    assert!(
        examples >= 1,
        "no [[policy]] example found in {}",
        path.display()
    );
}
