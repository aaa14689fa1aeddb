//! A loopback fake Kubernetes API server for end-to-end tests (feature `fake-apiserver`).
//!
//! It serves LIST, WATCH (chunked newline-delimited JSON), GET and server-side-apply status
//! PATCHes for Nodes, Services, EndpointSlices, Secrets and ServiceExports (v1alpha1 and v1beta1 share
//! one storage) from an in-memory map, over plain HTTP on `127.0.0.1` without authentication.
//! Objects change at run time through [`FakeApiServer::apply`] and [`FakeApiServer::delete`];
//! every change gets the next resourceVersion and is seen by open watches.
//! [`FakeApiServer::expire_watches`] simulates an etcd compaction (`410 Gone`), and
//! [`FakeApiServer::set_missing`] a CRD that is not installed (`404`).
//!
//! It is not an API server: no validation, no admission, no defaulting beyond `uid`,
//! `resourceVersion` and `creationTimestamp`, and no other kinds.

mod http;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// A kind the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KindInfo {
    pub group: &'static str,
    pub versions: &'static [&'static str],
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

pub(crate) const KINDS: &[KindInfo] = &[
    KindInfo {
        group: "",
        versions: &["v1"],
        plural: "nodes",
        kind: "Node",
        namespaced: false,
    },
    KindInfo {
        group: "",
        versions: &["v1"],
        plural: "services",
        kind: "Service",
        namespaced: true,
    },
    KindInfo {
        group: "",
        versions: &["v1"],
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
    },
    KindInfo {
        group: "discovery.k8s.io",
        versions: &["v1"],
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
    },
    KindInfo {
        group: crate::SERVICE_EXPORT_GROUP,
        versions: &["v1alpha1", "v1beta1"],
        plural: "serviceexports",
        kind: "ServiceExport",
        namespaced: true,
    },
];

/// Why the fake refused an object.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    /// `apiVersion`/`kind` name nothing the fake serves.
    #[error("the fake API server does not serve {0}")]
    UnknownKind(String),
    /// `metadata.name` is missing, or `metadata.namespace` for a namespaced kind.
    #[error("object has no {0}")]
    MissingField(&'static str),
}

/// One change, as watches replay it.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub rv: u64,
    pub kind: &'static KindInfo,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// Objects by kind, then (namespace, name); every change since the start.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub rv: u64,
    pub objects: BTreeMap<&'static str, BTreeMap<(String, String), Value>>,
    pub log: Vec<Change>,
    /// Watches from before this resourceVersion get `410 Gone`.
    pub compacted: u64,
    /// Kinds answered with 404, as if their CRD were missing.
    pub missing: BTreeSet<&'static str>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// The latest resourceVersion; watches wake up on it.
    pub changed: watch::Sender<u64>,
    /// Every request as `METHOD path?query`.
    pub requests: Mutex<Vec<String>>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn apply(&self, object: Value) -> Result<Value, FakeError> {
        let kind = kind_of_object(&object)?;
        let key = object_key(kind, &object)?;
        let mut st = self.lock();
        st.rv += 1;
        let rv = st.rv;
        let old = st
            .objects
            .get(kind.plural)
            .and_then(|m| m.get(&key))
            .cloned();
        let mut new = object;
        let meta = &mut new["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        if meta.get("uid").is_none() {
            let uid = old.as_ref().and_then(|o| o["metadata"].get("uid").cloned());
            meta["uid"] = uid.unwrap_or_else(|| json!(format!("00000000-0000-4000-8000-{rv:012}")));
        }
        if meta.get("creationTimestamp").is_none() {
            let created = old
                .as_ref()
                .and_then(|o| o["metadata"].get("creationTimestamp").cloned());
            meta["creationTimestamp"] = created.unwrap_or_else(|| json!("2026-11-02T09:00:00Z"));
        }
        st.objects
            .entry(kind.plural)
            .or_default()
            .insert(key, new.clone());
        st.log.push(Change {
            rv,
            kind,
            old,
            new: Some(new.clone()),
        });
        drop(st);
        self.changed.send_replace(rv);
        Ok(new)
    }

    pub fn delete(&self, kind: &'static KindInfo, namespace: &str, name: &str) -> Option<Value> {
        let key = (namespace.to_owned(), name.to_owned());
        let mut st = self.lock();
        let old = st.objects.get_mut(kind.plural)?.remove(&key)?;
        st.rv += 1;
        let rv = st.rv;
        st.log.push(Change {
            rv,
            kind,
            old: Some(old.clone()),
            new: None,
        });
        drop(st);
        self.changed.send_replace(rv);
        Some(old)
    }
}

/// The running fake. Stops serving when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: AbortHandle,
}

impl FakeApiServer {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(listener)
    }

    /// Serves on a listener the caller bound, on the current tokio runtime: for a socket made
    /// in another network namespace (a thread that entered it with `setns` binds it there, and
    /// the socket stays in that namespace), so a daemon inside that namespace reaches the fake
    /// on its own `127.0.0.1`. [`Self::url`] and the kubeconfig use the listener's address.
    pub async fn start_on(listener: std::net::TcpListener) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        Self::serve(tokio::net::TcpListener::from_std(listener)?)
    }

    fn serve(listener: tokio::net::TcpListener) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            requests: Mutex::default(),
        });
        let task = tokio::spawn(http::serve(listener, Arc::clone(&shared))).abort_handle();
        Ok(Self { addr, shared, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds or replaces an object (ADDED or MODIFIED for watches) and returns it as stored, with
    /// `resourceVersion`, `uid` and `creationTimestamp` set.
    pub fn apply(&self, object: Value) -> Result<Value, FakeError> {
        self.shared.apply(object)
    }

    /// Deletes an object (DELETED for watches); returns it, or `None` when it did not exist.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let info = find_kind(api_version, kind)?;
        self.shared.delete(info, namespace.unwrap_or(""), name)
    }

    /// The stored object, if any.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let info = find_kind(api_version, kind)?;
        let key = (namespace.unwrap_or("").to_owned(), name.to_owned());
        self.shared
            .lock()
            .objects
            .get(info.plural)?
            .get(&key)
            .cloned()
    }

    /// Every request so far, as `METHOD path?query` (e.g. to count relists).
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Every stored object, by kind, namespace and name.
    pub fn objects(&self) -> Vec<Value> {
        let st = self.shared.lock();
        st.objects
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// What [`crate::node_view`] gives for the stored objects.
    pub fn expected_view(&self, node_name: &str) -> Option<crate::NodeView> {
        expected_view(node_name, &self.objects())
    }

    /// Simulates an etcd compaction: every open watch gets an `ERROR` event with `410 Gone`
    /// (reason `Expired`), and resuming from any older resourceVersion gets the same, so clients
    /// must list again.
    pub fn expire_watches(&self) {
        let mut st = self.shared.lock();
        st.rv += 1;
        st.compacted = st.rv;
        let rv = st.rv;
        drop(st);
        self.shared.changed.send_replace(rv);
    }

    /// Answers every request for `plural` (`serviceexports`, ...) with `404`, as if its CRD were
    /// not installed, or serves it again.
    pub fn set_missing(&self, plural: &str, missing: bool) {
        let Some(kind) = KINDS.iter().find(|k| k.plural == plural) else {
            return;
        };
        let mut st = self.shared.lock();
        if missing {
            st.missing.insert(kind.plural);
        } else {
            st.missing.remove(kind.plural);
        }
    }

    /// A kubeconfig (YAML) pointing at this server: no TLS, no credentials.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        )
    }

    /// Writes [`Self::kubeconfig`] to `path` (for `KUBECONFIG` of a child process).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// A client built from [`Self::kubeconfig`], the way `KUBECONFIG` would build it.
    pub async fn client(&self) -> Result<kube::Client, crate::Error> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig())
            .map_err(|e| crate::Error::Client(kube::Error::InferKubeconfig(e)))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| crate::Error::Client(kube::Error::InferKubeconfig(e)))?;
        kube::Client::try_from(config).map_err(crate::Error::Client)
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// API-shaped fixtures (as a real API server returns them) by file name without `.json`:
/// `node-east-1`, `node-east-2-legacy`, `service-web`, `service-api`, `endpointslice-web-v4`,
/// `endpointslice-web-v6`, `endpointslice-api`, `serviceexport-web-v1alpha1`,
/// `serviceexport-api-v1beta1`.
pub fn fixture(name: &str) -> Option<Value> {
    let text = match name {
        "node-east-1" => include_str!("../fixtures/node-east-1.json"),
        "node-east-2-legacy" => include_str!("../fixtures/node-east-2-legacy.json"),
        "service-web" => include_str!("../fixtures/service-web.json"),
        "service-api" => include_str!("../fixtures/service-api.json"),
        "endpointslice-web-v4" => include_str!("../fixtures/endpointslice-web-v4.json"),
        "endpointslice-web-v6" => include_str!("../fixtures/endpointslice-web-v6.json"),
        "endpointslice-api" => include_str!("../fixtures/endpointslice-api.json"),
        "serviceexport-web-v1alpha1" => include_str!("../fixtures/serviceexport-web-v1alpha1.json"),
        "serviceexport-api-v1beta1" => include_str!("../fixtures/serviceexport-api-v1beta1.json"),
        _ => return None,
    };
    serde_json::from_str(text).ok()
}

/// What [`crate::node_view`] gives for `objects` (any mix of the served kinds, as JSON): the
/// view a [`crate::KubeSource`] must converge to. Objects of other kinds are ignored.
pub fn expected_view<'a>(
    node_name: &str,
    objects: impl IntoIterator<Item = &'a Value>,
) -> Option<crate::NodeView> {
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;
    fn fill<K>(writer: &mut Writer<K>, objects: &[&Value], kind: &str)
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        writer.apply_watcher_event(&Event::Init);
        for o in objects.iter().filter(|o| o["kind"] == kind) {
            if let Ok(k) = serde_json::from_value::<K>((*o).clone()) {
                writer.apply_watcher_event(&Event::InitApply(k));
            }
        }
        writer.apply_watcher_event(&Event::InitDone);
    }
    let objects: Vec<&Value> = objects.into_iter().collect();
    let mut nodes = Writer::default();
    let mut services = Writer::default();
    let mut slices = Writer::default();
    let mut exports = Writer::new(crate::export_resource(crate::ExportVersion::V1alpha1));
    fill(&mut nodes, &objects, "Node");
    fill(&mut services, &objects, "Service");
    fill(&mut slices, &objects, "EndpointSlice");
    fill::<crate::ExportObject>(&mut exports, &objects, "ServiceExport");
    crate::node_view(
        node_name,
        &nodes.as_reader(),
        &services.as_reader(),
        &slices.as_reader(),
        &exports.as_reader(),
    )
}

fn find_kind(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    KINDS
        .iter()
        .find(|k| k.kind == kind && k.group == group && k.versions.contains(&version))
}

fn kind_of_object(object: &Value) -> Result<&'static KindInfo, FakeError> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    find_kind(api_version, kind)
        .ok_or_else(|| FakeError::UnknownKind(format!("{api_version} {kind}")))
}

fn object_key(kind: &KindInfo, object: &Value) -> Result<(String, String), FakeError> {
    let meta = &object["metadata"];
    let name = meta["name"]
        .as_str()
        .ok_or(FakeError::MissingField("metadata.name"))?;
    let namespace = match (kind.namespaced, meta["namespace"].as_str()) {
        (true, Some(ns)) => ns,
        (true, None) => return Err(FakeError::MissingField("metadata.namespace")),
        (false, _) => "",
    };
    Ok((namespace.to_owned(), name.to_owned()))
}
