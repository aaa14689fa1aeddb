//! Optional write-back: the condition [`EXPORT_CONDITION`] on each ServiceExport's status,
//! saying whether peerd exports it to the mesh.
//!
//! One node per cluster writes, so that a DaemonSet does not race itself: the node with the
//! smallest name among the `nodeName`s of all EndpointSlice endpoints (every node computes the
//! same from the same stores). It writes with server-side apply under the field manager
//! `peerd`, touching only its own condition (the CRD's `conditions` is a map keyed by `type`),
//! and only when the status or reason changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{info, warn};

use crate::EXPORT_CONDITION;
use crate::export::ExportObject;
use crate::source::Stores;
use crate::view::{SERVICE_NAME_LABEL, slice_endpoints};

/// The field manager of peerd's status writes.
pub const FIELD_MANAGER: &str = "peerd";

/// What the condition should say about one ServiceExport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    pub namespace: String,
    pub name: String,
    pub exported: bool,
    pub reason: &'static str,
    pub message: String,
}

/// The conditions `node_name` must write, or nothing when another node is the writer.
pub(crate) fn plan(
    node_name: &str,
    services: &Store<Service>,
    slices: &Store<k8s_openapi::api::discovery::v1::EndpointSlice>,
    exports: &Store<ExportObject>,
) -> Vec<Planned> {
    let writer = slices
        .state()
        .iter()
        .filter(|s| s.labels().contains_key(SERVICE_NAME_LABEL))
        .flat_map(|s| {
            slice_endpoints(s)
                .iter()
                .filter_map(|e| e.node_name.clone())
                .collect::<Vec<_>>()
        })
        .min();
    if writer.as_deref() != Some(node_name) {
        return Vec::new();
    }
    let mut planned: Vec<Planned> = exports
        .state()
        .iter()
        .map(|e| {
            let namespace = e.namespace().unwrap_or_default();
            let name = e.name_any();
            let service = services.get(&ObjectRef::new(&name).within(&namespace));
            let tcp = service
                .as_ref()
                .and_then(|s| s.spec.as_ref()?.ports.as_ref())
                .is_some_and(|p| {
                    p.iter()
                        .any(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
                });
            let (exported, reason, message) = match (&service, tcp) {
                (None, _) => (
                    false,
                    "ServiceNotFound",
                    format!("no Service {name} in {namespace}"),
                ),
                (Some(_), false) => (false, "NoTCPPort", "the Service has no TCP port".to_owned()),
                (Some(_), true) => (
                    true,
                    "Exported",
                    format!("exported to the peerd mesh as {name}.{namespace}.global"),
                ),
            };
            Planned {
                namespace,
                name,
                exported,
                reason,
                message,
            }
        })
        .collect();
    planned.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    planned
}

/// Applies [`plan`] through the API, remembering what it wrote.
pub(crate) struct Writer {
    client: kube::Client,
    resource: ApiResource,
    node_name: String,
    written: BTreeMap<(String, String), (bool, &'static str)>,
}

impl Writer {
    pub fn new(client: kube::Client, resource: ApiResource, node_name: String) -> Self {
        Self {
            client,
            resource,
            node_name,
            written: BTreeMap::new(),
        }
    }

    /// Writes every planned condition that changed since the last write.
    pub async fn sync(&mut self, stores: &Stores) {
        let planned = plan(
            &self.node_name,
            &stores.services,
            &stores.slices,
            &stores.exports,
        );
        self.written.retain(|k, _| {
            planned
                .iter()
                .any(|p| (&p.namespace, &p.name) == (&k.0, &k.1))
        });
        for p in planned {
            let key = (p.namespace.clone(), p.name.clone());
            if self.written.get(&key) == Some(&(p.exported, p.reason)) {
                continue;
            }
            match self.write(&p).await {
                Ok(()) => {
                    info!(service = %format!("{}.{}", p.name, p.namespace), exported = p.exported, reason = p.reason, "ServiceExport status written");
                    self.written.insert(key, (p.exported, p.reason));
                }
                Err(error) => {
                    warn!(service = %format!("{}.{}", p.name, p.namespace), %error, "cannot write ServiceExport status")
                }
            }
        }
    }

    async fn write(&self, p: &Planned) -> Result<(), kube::Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &p.namespace, &self.resource);
        let status = if p.exported { "True" } else { "False" };
        // Keep the transition time when only the message changes.
        let current = api.get_status(&p.name).await?;
        let since = current
            .data
            .pointer("/status/conditions")
            .and_then(|c| c.as_array())
            .and_then(|c| c.iter().find(|c| c["type"] == EXPORT_CONDITION))
            .filter(|c| c["status"] == status)
            .and_then(|c| serde_json::from_value::<Time>(c["lastTransitionTime"].clone()).ok());
        let condition = Condition {
            type_: EXPORT_CONDITION.to_owned(),
            status: status.to_owned(),
            reason: p.reason.to_owned(),
            message: p.message.clone(),
            last_transition_time: since.unwrap_or_else(now),
            observed_generation: current.metadata.generation,
        };
        let patch = serde_json::json!({
            "apiVersion": self.resource.api_version,
            "kind": self.resource.kind,
            "status": { "conditions": [condition] },
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch_status(&p.name, &params, &Patch::Apply(patch))
            .await?;
        Ok(())
    }
}

fn now() -> Time {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = i64::try_from(secs).unwrap_or(0);
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    use super::*;

    fn listed<K>(mut w: Writer<K>, texts: &[&str]) -> Writer<K>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        w.apply_watcher_event(&Event::Init);
        for t in texts {
            w.apply_watcher_event(&Event::InitApply(serde_json::from_str(t).unwrap()));
        }
        w.apply_watcher_event(&Event::InitDone);
        w
    }

    #[test]
    fn the_smallest_endpoint_node_writes_one_condition_per_service_export() {
        let services = listed(
            Writer::default(),
            &[include_str!("../fixtures/service-web.json")],
        );
        let slices = listed(
            Writer::default(),
            &[include_str!("../fixtures/endpointslice-web-v4.json")],
        );
        let ghost = r#"{"apiVersion":"multicluster.x-k8s.io/v1alpha1","kind":"ServiceExport",
            "metadata":{"name":"ghost","namespace":"shop","resourceVersion":"9","uid":"u"}}"#;
        let exports = listed(
            Writer::new(crate::export_resource(crate::ExportVersion::V1alpha1)),
            &[
                include_str!("../fixtures/serviceexport-web-v1alpha1.json"),
                ghost,
            ],
        );
        let (s, e, x) = (
            services.as_reader(),
            slices.as_reader(),
            exports.as_reader(),
        );
        assert_eq!(plan("east-2", &s, &e, &x), [], "east-1 sorts first");
        let planned = plan("east-1", &s, &e, &x);
        let summary: Vec<(&str, bool, &str)> = planned
            .iter()
            .map(|p| (p.name.as_str(), p.exported, p.reason))
            .collect();
        assert_eq!(
            summary,
            [
                ("ghost", false, "ServiceNotFound"),
                ("web", true, "Exported")
            ]
        );
    }
}
