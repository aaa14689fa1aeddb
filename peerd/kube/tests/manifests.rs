//! The manifests in `deploy/`: every document parses into its k8s-openapi type, the ClusterRole
//! grants what the code watches (`peerd_kube::WATCHED`, `WRITTEN`), the DaemonSet follows the
//! node-daemon conventions, the config template renders to TOML, and every file (and the
//! kustomize builds) passes `kubernetes-validate --strict -k 1.33.0`.
//!
//! The external tools are `kubernetes-validate` (`pip install kubernetes-validate`) and
//! `kubectl` (for `kubectl kustomize`). Without them these checks say loudly that they skipped;
//! under `CI=true` a missing tool fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use peerd_kube::{NodeView, WATCHED, WRITTEN};
use serde::Deserialize;
use serde_json::Value;

const VALIDATE_VERSION: &str = "1.33.0";

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The resource files (every `*.yaml` but kustomizations) of the base, the overlays and CoreDNS.
fn manifest_files() -> Vec<PathBuf> {
    let mut dirs = vec![deploy().join("kubernetes"), deploy().join("coredns")];
    for entry in std::fs::read_dir(deploy().join("overlays")).unwrap() {
        dirs.push(entry.unwrap().path());
    }
    let mut files = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".yaml")
                && name != "kustomization.yaml"
                && !name.ends_with("-patch.yaml")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    files
}

/// Every YAML document of `text`, as JSON values.
fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn all_documents() -> Vec<(PathBuf, Value)> {
    manifest_files()
        .into_iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            documents(&text).into_iter().map(move |d| (f.clone(), d))
        })
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(doc: &Value, what: &str) -> T {
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{what} does not parse: {e}"))
}

fn find<T: serde::de::DeserializeOwned>(kind: &str, name: &str) -> T {
    let (_, doc) = all_documents()
        .into_iter()
        .find(|(_, d)| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/"));
    typed(&doc, &format!("{kind} {name}"))
}

#[test]
fn every_document_parses_into_its_k8s_openapi_type() {
    let mut kinds = Vec::new();
    for (file, doc) in all_documents() {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        let what = format!("{} in {}", kind, file.display());
        match kind.as_str() {
            "Namespace" => drop(typed::<Namespace>(&doc, &what)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(&doc, &what)),
            "ClusterRole" => drop(typed::<ClusterRole>(&doc, &what)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(&doc, &what)),
            "Role" => drop(typed::<Role>(&doc, &what)),
            "RoleBinding" => drop(typed::<RoleBinding>(&doc, &what)),
            "Service" => drop(typed::<Service>(&doc, &what)),
            "ConfigMap" => drop(typed::<ConfigMap>(&doc, &what)),
            "DaemonSet" => drop(typed::<DaemonSet>(&doc, &what)),
            "CustomResourceDefinition" => drop(typed::<CustomResourceDefinition>(&doc, &what)),
            other => panic!("unexpected kind {other:?} in {}", file.display()),
        }
        kinds.push(kind);
    }
    for k in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "CustomResourceDefinition",
        "Service",
    ] {
        assert!(kinds.iter().any(|x| x == k), "no {k} in deploy/");
    }
}

fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        let has = |list: &Option<Vec<String>>, want: &str| {
            list.as_ref()
                .is_some_and(|l| l.iter().any(|x| x == want || x == "*"))
        };
        has(&r.api_groups, group)
            && r.resources.iter().flatten().any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn the_cluster_role_grants_exactly_what_the_code_watches_and_writes() {
    let role: ClusterRole = find("ClusterRole", "peerd");
    let rules = role.rules.unwrap_or_default();
    for (group, resource, verbs) in WATCHED.iter().chain(WRITTEN) {
        for verb in *verbs {
            assert!(
                grants(&rules, group, resource, verb),
                "ClusterRole peerd lacks {verb} {resource}.{group}"
            );
        }
    }
    // and nothing more: every granted (group, resource, verb) is one the code uses
    for r in &rules {
        for group in r.api_groups.iter().flatten() {
            for resource in r.resources.iter().flatten() {
                for verb in &r.verbs {
                    let used = WATCHED.iter().chain(WRITTEN).any(|(g, res, v)| {
                        g == group && res == resource && v.contains(&verb.as_str())
                    });
                    assert!(
                        used,
                        "ClusterRole peerd grants {verb} {resource}.{group}, which the code does not use"
                    );
                }
            }
        }
    }
    let binding: ClusterRoleBinding = find("ClusterRoleBinding", "peerd");
    assert_eq!(binding.role_ref.name, "peerd");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", "peerd", Some("peerd-system"))
    );
    let role: Role = find("Role", "peerd-node-secrets");
    let rules = role.rules.unwrap_or_default();
    for (group, resource, verbs) in peerd_kube::bootstrap::SECRET_READS {
        for verb in *verbs {
            assert!(
                grants(&rules, group, resource, verb),
                "Role peerd-node-secrets lacks {verb} {resource}"
            );
        }
    }
    assert_eq!(
        rules.len(),
        1,
        "the per-node-secrets overlay grants only get on secrets"
    );
    assert_eq!(rules[0].verbs, ["get"]);
}

fn env_from_node_name(c: &Container) -> bool {
    c.env.iter().flatten().any(|e| {
        e.name == "NODE_NAME"
            && e.value_from
                .as_ref()
                .and_then(|v| v.field_ref.as_ref())
                .is_some_and(|f| f.field_path == "spec.nodeName")
    })
}

#[test]
fn the_daemon_set_follows_node_daemon_conventions() {
    let ds: DaemonSet = find("DaemonSet", "peerd");
    let pod = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("peerd"));
    let tolerations = pod.tolerations.clone().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "tolerates every taint"
    );
    let volumes = pod.volumes.clone().unwrap();
    let host = |name: &str| {
        volumes
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.host_path.clone())
            .unwrap()
    };
    let tun = host("tun");
    assert_eq!(
        (tun.path.as_str(), tun.type_.as_deref()),
        ("/dev/net/tun", Some("CharDevice"))
    );
    assert_eq!(host("state").path, "/var/lib/peerd");

    let peerd = &pod.containers[0];
    let caps = peerd
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap();
    for cap in ["NET_ADMIN", "NET_RAW"] {
        assert!(caps.iter().any(|c| c == cap), "peerd lacks {cap}");
    }
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = p.as_ref().and_then(|p| p.http_get.clone()).unwrap();
        (
            get.host.unwrap_or_default(),
            get.path.unwrap_or_default(),
            get.port,
        )
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int;
    assert_eq!(
        probe(&peerd.readiness_probe),
        ("127.0.0.1".to_owned(), "/readyz".to_owned(), Int(9090))
    );
    assert_eq!(
        probe(&peerd.liveness_probe),
        ("127.0.0.1".to_owned(), "/healthz".to_owned(), Int(9090))
    );
    let init = &pod.init_containers.clone().unwrap()[0];
    for c in [peerd, init] {
        assert!(
            env_from_node_name(c),
            "{} gets NODE_NAME from spec.nodeName",
            c.name
        );
        let r = c.resources.as_ref().unwrap();
        assert!(
            r.requests.is_some() && r.limits.is_some(),
            "{} has requests and limits",
            c.name
        );
    }
    // the cluster CA key is mounted read-only, from a Secret, in the init container only
    let mounts = |c: &Container| c.volume_mounts.clone().unwrap_or_default();
    let ca = mounts(init)
        .into_iter()
        .find(|m| m.name == "cluster-ca")
        .unwrap();
    assert_eq!(ca.read_only, Some(true));
    assert!(
        volumes
            .iter()
            .find(|v| v.name == "cluster-ca")
            .unwrap()
            .secret
            .is_some()
    );
    assert!(
        mounts(peerd).iter().all(|m| m.name != "cluster-ca"),
        "the daemon never sees the CA key"
    );
}

#[test]
fn the_config_template_renders_for_a_node_into_toml() {
    let node = NodeView {
        name: "east-1".into(),
        region: "us-east".into(),
        zone: "us-east-1a".into(),
        pod_cidrs: vec![
            "10.1.1.0/24".parse().unwrap(),
            "fd00:10:1:1::/64".parse().unwrap(),
        ],
        addresses: vec!["172.18.0.3".parse().unwrap()],
        exports: Vec::new(),
    };
    for path in [
        deploy().join("kubernetes/node.toml"),
        deploy().join("overlays/example-east/node.toml"),
    ] {
        let template = std::fs::read_to_string(&path).unwrap();
        let text = peerd_kube::bootstrap::render(&template, &node).unwrap();
        let value: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
        assert_eq!(value["node"]["name"].as_str(), Some("east-1"));
        assert_eq!(value["node"]["address"].as_str(), Some("10.1.1.254"));
        assert_eq!(value["node"]["pod_cidrs"].as_array().map(Vec::len), Some(2));
        assert_eq!(value["dns"]["listen"].as_str(), Some("172.18.0.3:53"));
    }
}

#[test]
fn the_kustomization_lists_every_manifest_of_its_folder() {
    let dir = deploy().join("kubernetes");
    let text = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let k = &documents(&text)[0];
    let mut listed: Vec<String> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    for g in k["configMapGenerator"].as_array().into_iter().flatten() {
        listed.extend(
            g["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_owned()),
        );
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name != "kustomization.yaml" {
            assert!(
                listed.contains(&name),
                "{name} is not in kustomization.yaml"
            );
        }
    }
}

/// Runs a tool, or says loudly that it skipped (and fails under `CI=true`).
fn tool_available(program: &str, install: &str) -> bool {
    let found = Command::new(program)
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success() || !o.stdout.is_empty());
    if !found {
        let message =
            format!("{program} is not installed ({install}): manifest validation SKIPPED");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        // Straight to stderr: the test harness captures eprintln! of passing tests.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "\n*** {message} ***\n");
    }
    found
}

fn kubernetes_validate(files: &[PathBuf]) {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "-k", VALIDATE_VERSION])
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("ERROR"),
        "kubernetes-validate failed:\n{text}"
    );
}

#[test]
fn every_manifest_passes_kubernetes_validate_strict() {
    if !tool_available("kubernetes-validate", "pip install kubernetes-validate") {
        return;
    }
    kubernetes_validate(&manifest_files());
}

#[test]
fn the_kustomize_builds_pass_kubernetes_validate_strict() {
    if !tool_available("kubernetes-validate", "pip install kubernetes-validate")
        || !tool_available(
            "kubectl",
            "apt-get install kubectl, or any kubectl with kustomize",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut built = Vec::new();
    let mut roots = vec![deploy().join("kubernetes")];
    for entry in std::fs::read_dir(deploy().join("overlays")).unwrap() {
        roots.push(entry.unwrap().path());
    }
    for (i, root) in roots.iter().enumerate() {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl kustomize {}: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let docs = documents(&String::from_utf8_lossy(&out.stdout));
        assert!(
            docs.iter().any(|d| d["kind"] == "DaemonSet"),
            "{} builds a DaemonSet",
            root.display()
        );
        let path = dir.path().join(format!("build-{i}.yaml"));
        std::fs::write(&path, &out.stdout).unwrap();
        built.push(path);
    }
    kubernetes_validate(&built);
}
