//! What `ferry_resource_info` reports: every Release and GitSource in the leader's caches, with
//! its Ready status, suspension and revision (see [`crate::metrics::ObjectInfoSource`]).

use ferry_api::common::{READY, find_condition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use crate::context::Context;
use crate::metrics::{ObjectInfo, ObjectInfoSource};

fn info(
    kind: &str,
    object: &impl ResourceExt,
    conditions: &[Condition],
    suspended: bool,
    revision: Option<&str>,
) -> ObjectInfo {
    ObjectInfo {
        kind: kind.to_string(),
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        ready: find_condition(conditions, READY)
            .map_or_else(|| "Unknown".to_string(), |c| c.status.clone()),
        suspended: suspended.to_string(),
        revision: revision.unwrap_or_default().to_string(),
    }
}

impl ObjectInfoSource for Context {
    fn object_infos(&self) -> Vec<ObjectInfo> {
        let mut out = Vec::new();
        if let Some(store) = self.releases.get() {
            for release in store.state() {
                let status = release.status.clone().unwrap_or_default();
                out.push(info(
                    "Release",
                    release.as_ref(),
                    &status.conditions,
                    release.spec.suspend,
                    status.last_applied_revision.as_deref(),
                ));
            }
        }
        if let Some(store) = self.sources.get() {
            for source in store.state() {
                let status = source.status.clone().unwrap_or_default();
                out.push(info(
                    "GitSource",
                    source.as_ref(),
                    &status.conditions,
                    source.spec.suspend,
                    status.revision.as_deref(),
                ));
            }
        }
        out
    }
}
