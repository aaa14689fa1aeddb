//! The L7 proxy inside the daemon: every global name of the catalog becomes a route on its
//! virtual IP, with the catalog's endpoints (not ready when their node is dead) and the
//! `[[policy]]` overrides. Updates run on one task so snapshots apply in order.

use std::sync::Arc;
use std::time::Duration;

use l7proxy::{Backend, Policy, Proxy, ProxyConfig, ServiceRoute};
use tokio::sync::watch;

use crate::catalog::{Catalog, global_name};
use crate::config::PolicySection;

/// Turns the catalog into the proxy's routes.
pub fn routes(catalog: &Catalog, policies: &[PolicySection]) -> ProxyConfig {
    let mut services = Vec::new();
    for s in catalog.services.values() {
        let endpoints: Vec<Backend> = s
            .endpoints
            .iter()
            .map(|e| Backend {
                address: e.endpoint.address,
                ports: e.endpoint.ports.clone(),
                locality: e.locality.clone(),
                ready: e.endpoint.ready && e.node_alive,
            })
            .collect();
        let policy = policy_for(&s.key.to_string(), policies);
        if let Some(vip) = s.vip {
            services.push(ServiceRoute {
                name: global_name(&s.key, None),
                vip: vip.into(),
                ports: s.ports.clone(),
                endpoints: endpoints.clone(),
                policy: policy.clone(),
            });
        }
        for (cluster, vip) in &s.cluster_vips {
            services.push(ServiceRoute {
                name: global_name(&s.key, Some(cluster)),
                vip: (*vip).into(),
                ports: s.ports.clone(),
                endpoints: endpoints.clone(),
                policy: Policy {
                    pinned_cluster: Some(cluster.clone()),
                    ..policy.clone()
                },
            });
        }
    }
    ProxyConfig { services }
}

/// The defaults with a service's `[[policy]]` applied.
fn policy_for(service: &str, policies: &[PolicySection]) -> Policy {
    let mut p = Policy::default();
    if let Some(o) = policies.iter().find(|o| o.service == service) {
        let ms = Duration::from_millis;
        p.local_only = o.local_only.unwrap_or(p.local_only);
        p.connect_timeout = o.connect_timeout_ms.map_or(p.connect_timeout, ms);
        p.try_timeout = o.try_timeout_ms.map_or(p.try_timeout, ms);
        p.request_timeout = o.request_timeout_ms.map_or(p.request_timeout, ms);
        p.max_attempts = o.max_attempts.unwrap_or(p.max_attempts);
        p.retry_budget_ratio = o.retry_budget_ratio.unwrap_or(p.retry_budget_ratio);
    }
    p
}

/// Applies every new snapshot to the proxy, in order, until the sender is dropped.
pub async fn run(proxy: Arc<Proxy>, mut snapshots: watch::Receiver<ProxyConfig>) {
    loop {
        let config = snapshots.borrow_and_update().clone();
        for (addr, error) in proxy.update(config).await {
            tracing::warn!(%addr, %error, "proxy cannot listen");
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}
