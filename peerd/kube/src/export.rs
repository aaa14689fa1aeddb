//! Which Services are exported: MCS `ServiceExport`s (watched by metadata only, since only their
//! namespace and name matter) and the `peerd.io/export: "true"` label.

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::core::PartialObjectMeta;

/// The MCS API group (KEP-1645).
pub const SERVICE_EXPORT_GROUP: &str = "multicluster.x-k8s.io";

/// A Service carrying this label with the value `"true"` is exported without a ServiceExport.
pub const EXPORT_LABEL: &str = "peerd.io/export";

/// The condition peerd writes on a ServiceExport's status (with [`crate::Options::write_status`]).
pub const EXPORT_CONDITION: &str = "peerd.io/Exported";

/// A ServiceExport as watched: metadata only, whatever its API version. v1alpha1 has no `spec`
/// and v1beta1 an optional one; neither matters here.
pub type ExportObject = PartialObjectMeta<DynamicObject>;

/// Which version of `serviceexports.multicluster.x-k8s.io` to watch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExportVersion {
    /// `v1alpha1`: what Submariner, Cilium, GKE and `deploy/kubernetes/` install.
    #[default]
    V1alpha1,
    /// `v1beta1`.
    V1beta1,
}

impl ExportVersion {
    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1alpha1 => "v1alpha1",
            Self::V1beta1 => "v1beta1",
        }
    }
}

impl std::str::FromStr for ExportVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1alpha1" => Ok(Self::V1alpha1),
            "v1beta1" => Ok(Self::V1beta1),
            other => Err(format!(
                "unknown ServiceExport version {other:?} (v1alpha1 or v1beta1)"
            )),
        }
    }
}

/// The API resource of ServiceExports in `version`.
pub fn export_resource(version: ExportVersion) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(SERVICE_EXPORT_GROUP, version.as_str(), "ServiceExport"),
        "serviceexports",
    )
}

/// Whether a Service is exported: a ServiceExport of the same namespace and name exists, or it
/// carries `peerd.io/export: "true"`.
pub(crate) fn is_exported(service: &Service, has_service_export: bool) -> bool {
    has_service_export
        || service
            .labels()
            .get(EXPORT_LABEL)
            .is_some_and(|v| v == "true")
}
