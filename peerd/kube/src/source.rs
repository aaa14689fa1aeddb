//! The IO shell: one reflector per kind, a debounced rebuild of the view, and a generation
//! counter that ticks whenever the view changes.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use peerd_types::ServiceExport;
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use crate::export::{ExportObject, ExportVersion, export_resource};
use crate::view::{NodeView, SERVICE_NAME_LABEL, node_view};
use crate::{Error, status};

/// How [`KubeSource`] runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// This node's name (`NODE_NAME`, from the downward API `spec.nodeName`).
    pub node_name: String,
    /// Which ServiceExport version to watch.
    pub export_version: ExportVersion,
    /// How long to wait after a change for more before rebuilding the view.
    pub debounce: Duration,
    /// Write the [`crate::EXPORT_CONDITION`] condition on ServiceExports' status.
    pub write_status: bool,
}

impl Options {
    /// Defaults for `node_name`: v1alpha1 ServiceExports, 100 ms debounce, no status writes.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            export_version: ExportVersion::default(),
            debounce: Duration::from_millis(100),
            write_status: false,
        }
    }
}

/// The reflector stores, shared by the watchers and the rebuild task.
#[derive(Clone)]
pub(crate) struct Stores {
    pub nodes: Store<Node>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub exports: Store<ExportObject>,
}

/// Watches the API and keeps this node's [`NodeView`] current. Stops its tasks when dropped.
pub struct KubeSource {
    view: Arc<RwLock<Option<NodeView>>>,
    changes: watch::Receiver<u64>,
    tasks: Vec<AbortHandle>,
}

impl KubeSource {
    /// Starts watching with [`Options::new`]`(node_name)`.
    pub async fn start(client: kube::Client, node_name: String) -> Result<Self, Error> {
        Self::start_with(client, Options::new(node_name)).await
    }

    /// Starts the watchers and the rebuild task. Returns at once; the first view appears after
    /// the Node, Services and EndpointSlices (and ServiceExports, unless their CRD is missing)
    /// have been listed. API errors are logged and retried with back-off, never returned.
    pub async fn start_with(client: kube::Client, options: Options) -> Result<Self, Error> {
        if options.node_name.is_empty() {
            return Err(Error::NoNodeName);
        }
        let dirty = Arc::new(Notify::new());
        let ready = Arc::new(Readiness::default());
        let mut tasks = Vec::new();

        let node_cfg =
            watcher::Config::default().fields(&format!("metadata.name={}", options.node_name));
        let (nodes, w) = reflector::store();
        let stream = watcher(Api::<Node>::all(client.clone()), node_cfg);
        tasks.push(spawn_reflector(
            "nodes",
            stream,
            w,
            &dirty,
            &ready.nodes,
            None,
        ));

        let (services, w) = reflector::store();
        let stream = watcher(Api::<Service>::all(client.clone()), Default::default());
        tasks.push(spawn_reflector(
            "services",
            stream,
            w,
            &dirty,
            &ready.services,
            None,
        ));

        let slice_cfg = watcher::Config::default().labels(SERVICE_NAME_LABEL);
        let (slices, w) = reflector::store();
        let stream = watcher(Api::<EndpointSlice>::all(client.clone()), slice_cfg);
        tasks.push(spawn_reflector(
            "endpointslices",
            stream,
            w,
            &dirty,
            &ready.slices,
            None,
        ));

        let resource = export_resource(options.export_version);
        let w = reflector::store::Writer::<ExportObject>::new(resource.clone());
        let exports = w.as_reader();
        let api = Api::<ExportObject>::all_with(client.clone(), &resource);
        let stream = watcher(api, Default::default());
        tasks.push(spawn_reflector(
            "serviceexports",
            stream,
            w,
            &dirty,
            &ready.exports,
            Some(Arc::clone(&ready.exports_missing)),
        ));

        let stores = Stores {
            nodes,
            services,
            slices,
            exports,
        };
        let view = Arc::new(RwLock::new(None));
        let (tx, changes) = watch::channel(0);
        let status = options
            .write_status
            .then(|| status::Writer::new(client.clone(), resource, options.node_name.clone()));
        let rebuild = Rebuild {
            options,
            stores,
            ready,
            dirty,
            view: Arc::clone(&view),
            tx,
            status,
        };
        tasks.push(tokio::spawn(rebuild.run()).abort_handle());
        Ok(Self {
            view,
            changes,
            tasks,
        })
    }

    /// The current view, `None` until the first one is built.
    pub fn view(&self) -> Option<NodeView> {
        self.view.read().ok().and_then(|v| v.clone())
    }

    /// The exported services with their endpoints on this node (what the daemon's
    /// `ServiceSource::exports` returns): `view().exports`, empty before the first view.
    pub fn exports(&self) -> Vec<ServiceExport> {
        self.view().map(|v| v.exports).unwrap_or_default()
    }

    /// A generation counter that increases whenever [`Self::view`] changes (0: no view yet).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Which stores hold a complete list.
#[derive(Default)]
struct Readiness {
    nodes: Arc<AtomicBool>,
    services: Arc<AtomicBool>,
    slices: Arc<AtomicBool>,
    exports: Arc<AtomicBool>,
    /// The ServiceExport CRD is not installed: label exports still work.
    exports_missing: Arc<AtomicBool>,
}

impl Readiness {
    fn all(&self) -> bool {
        let get = |b: &AtomicBool| b.load(Ordering::Acquire);
        get(&self.nodes)
            && get(&self.services)
            && get(&self.slices)
            && (get(&self.exports) || get(&self.exports_missing))
    }
}

/// Runs `watcher(..).default_backoff().reflect(writer)`; every event marks the view dirty.
/// The watcher relists by itself after `410 Gone` and resumes watches from the last
/// resourceVersion; the back-off spaces retries after errors.
fn spawn_reflector<K>(
    what: &'static str,
    stream: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    writer: reflector::store::Writer<K>,
    dirty: &Arc<Notify>,
    ready: &Arc<AtomicBool>,
    missing: Option<Arc<AtomicBool>>,
) -> AbortHandle
where
    K: kube::Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let dirty = Arc::clone(dirty);
    let ready = Arc::clone(ready);
    let task = async move {
        let stream = stream.default_backoff().reflect(writer);
        let mut stream = std::pin::pin!(stream);
        let mut failing = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if matches!(event, watcher::Event::InitDone) {
                        ready.store(true, Ordering::Release);
                        if let Some(m) = &missing {
                            m.store(false, Ordering::Release);
                        }
                        if failing {
                            info!(what, "watch recovered");
                            failing = false;
                        }
                    }
                    dirty.notify_one();
                }
                Err(error) => {
                    if let (Some(m), Some(code)) = (&missing, is_unavailable(&error)) {
                        if !m.swap(true, Ordering::AcqRel) {
                            let why = if code == 404 {
                                "the ServiceExport CRD is not installed"
                            } else {
                                "RBAC does not allow listing ServiceExports"
                            };
                            warn!(what, %error, reason = why, "only labelled Services are exported");
                            dirty.notify_one();
                        }
                        continue;
                    }
                    if failing {
                        debug!(what, %error, "watch still failing");
                    } else {
                        warn!(what, %error, "watch failed; retrying with back-off");
                        failing = true;
                    }
                }
            }
        }
    };
    tokio::spawn(task).abort_handle()
}

/// A list or watch refused with 404 (the CRD is not installed) or 403 (RBAC does not cover it):
/// ServiceExports are then unavailable rather than pending, so label exports still publish.
fn is_unavailable(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            if s.code == 404 || s.code == 403 =>
        {
            Some(s.code)
        }
        _ => None,
    }
}

/// The debounced rebuild: waits for a change, lets more arrive for `debounce`, then rebuilds.
struct Rebuild {
    options: Options,
    stores: Stores,
    ready: Arc<Readiness>,
    dirty: Arc<Notify>,
    view: Arc<RwLock<Option<NodeView>>>,
    tx: watch::Sender<u64>,
    status: Option<status::Writer>,
}

impl Rebuild {
    async fn run(mut self) {
        let mut generation = 0u64;
        loop {
            self.dirty.notified().await;
            tokio::time::sleep(self.options.debounce).await;
            if !self.ready.all() {
                continue;
            }
            let s = &self.stores;
            let next = node_view(
                &self.options.node_name,
                &s.nodes,
                &s.services,
                &s.slices,
                &s.exports,
            );
            self.publish(next, &mut generation);
            // Status writes go to the API: after the view is out, never before.
            if let Some(status) = &mut self.status {
                status.sync(&self.stores).await;
            }
        }
    }

    /// Stores `next` and ticks the generation when it differs from the current view.
    fn publish(&self, next: Option<NodeView>, generation: &mut u64) {
        let Ok(mut current) = self.view.write() else {
            return;
        };
        if *current == next {
            return;
        }
        if next.is_none() {
            warn!(node = %self.options.node_name, "this node's Node object is not (or no longer) in the API");
        }
        debug!(
            generation = *generation + 1,
            exports = next.as_ref().map_or(0, |v| v.exports.len()),
            "node view changed"
        );
        *current = next;
        drop(current);
        *generation += 1;
        self.tx.send_replace(*generation);
    }
}

#[cfg(test)]
mod tests {
    /// The daemon keeps it behind `Box<dyn ServiceSource>` (`Send + Sync`).
    #[test]
    fn kube_source_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<super::KubeSource>();
    }
}
