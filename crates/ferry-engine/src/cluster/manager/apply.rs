//! Apply: server-side apply with ferry's field manager, concurrently within a phase.
//!
//! Before writing, the live metadata of every planned object is read with one metadata-only LIST
//! per kind and namespace ([`super::live`]).
//! An object is skipped — no write at all — when its live `ferry.dev/intent-hash` equals the
//! planned hash *and* its live fingerprint (generation, or resourceVersion for kinds without
//! one) equals the one the inventory recorded after ferry's last write: nobody changed it since.
//! Objects owned by another ferry app are refused and name that app.
//!
//! Each write is one server-side apply PATCH with `fieldValidation=Ignore` whose response is
//! the object's metadata only ([`apply_params`], `ACCEPT_METADATA_ONLY`): both cut the API
//! server's work per object without losing a check.

use std::collections::HashMap;

use futures::StreamExt;
use kube::Client;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::ObjectMeta;

use super::live::{LiveMeta, fingerprint};
use super::{Change, ChangeSet, ResourceManager};
use crate::ObjectKey;
use crate::cluster::kube_error::{describe_kube_error, status_code};
use crate::ownership::{ANNOTATION_HASH, ANNOTATION_OWNER};
use crate::plan::PlannedObject;
use crate::progress::{Progress, ProgressEvent};
use crate::report::{Action, Conflict, ObjectResult};

impl ResourceManager {
    /// Apply `objects` concurrently (they must not depend on each other: one phase). `live` is
    /// the live index, `recorded` the fingerprints the inventory recorded.
    pub async fn apply_batch(
        &self,
        objects: &[&PlannedObject],
        live: &HashMap<ObjectKey, LiveMeta>,
        recorded: &HashMap<ObjectKey, String>,
        progress: &dyn Progress,
    ) -> ChangeSet {
        // Over indices, not borrowed items: rustc cannot prove a stream closure that takes a
        // reference Send for every lifetime, and the futures stay lazy (`concurrency` at a time).
        futures::stream::iter(0..objects.len())
            .map(|i| async move {
                let obj = objects[i];
                let change = self
                    .apply_one(
                        obj,
                        live.get(&obj.key),
                        recorded.get(&obj.key).map(String::as_str),
                    )
                    .await;
                if let Some(action) = change.action() {
                    progress.event(ProgressEvent::Applied {
                        key: &obj.key,
                        action,
                    });
                }
                change
            })
            .buffer_unordered(self.concurrency())
            .collect()
            .await
    }

    async fn apply_one(
        &self,
        obj: &PlannedObject,
        live: Option<&LiveMeta>,
        recorded: Option<&str>,
    ) -> Change {
        let mut result = ObjectResult::new(obj.key.clone(), obj.api_version(), Action::Unchanged);
        result.source = Some(obj.manifest.origin.to_string());
        let done = |result: ObjectResult, fingerprint: Option<String>| Change {
            key: obj.key.clone(),
            result: Some(result),
            fingerprint,
            stays: true,
        };
        let fail = |mut result: ObjectResult, message: String| {
            result.action = Action::Failed;
            result.message = Some(message);
            done(result, None)
        };
        if let Some(live) = live {
            if let Some(other) = live.annotation(ANNOTATION_OWNER)
                && !self.owner().is_own_id(other)
            {
                return fail(
                    result,
                    format!(
                        "already owned by ferry app {other:?} (annotation {ANNOTATION_OWNER}); {}",
                        crate::ownership::conflict_hint(self.owner(), other)
                    ),
                );
            }
            if is_unchanged(obj, Some(live), recorded) {
                return done(result, live.fingerprint());
            }
            // Opted out by hand (or in the source): kept in the inventory, never written.
            if live.reconcile_disabled()
                || super::live::reconcile_disabled(
                    obj.manifest.object.metadata.annotations.as_ref(),
                )
            {
                result.message = Some("not applied: reconcile disabled by annotation".to_string());
                return done(result, live.fingerprint());
            }
        }
        let mut params = apply_params();
        if self.force_conflicts {
            params = params.force();
        }
        if self.dry_run() {
            params = params.dry_run();
        }
        let mut recreated = None;
        let mut outcome = server_side_apply(self.client(), obj, &params).await;
        // An immutable field changed: re-create on request, else say how (`recreate`).
        if let Err(err) = &outcome
            && let Some(fields) = super::recreate::immutable_fields(err)
        {
            let server = describe_kube_error(err);
            let Some(live) = live.filter(|_| super::recreate::force_requested(obj)) else {
                return fail(
                    result,
                    super::recreate::explain_without_force(obj, &fields, &server),
                );
            };
            let what = if fields.is_empty() {
                "an immutable field".to_string()
            } else {
                fields.join(", ")
            };
            if self.dry_run() {
                result.action = Action::Configured;
                result.message = Some(format!("would be deleted and re-created: {what} changed"));
                return done(result, None);
            }
            if let Err(message) = self.delete_for_recreate(obj, live).await {
                return fail(result, format!("{what} changed: {message}"));
            }
            recreated = Some(format!("deleted and re-created: {what} changed"));
            outcome = server_side_apply(self.client(), obj, &params).await;
        }
        match outcome {
            Ok(applied) => {
                result.message = recreated;
                result.action = if live.is_some() {
                    Action::Configured
                } else {
                    Action::Created
                };
                let fingerprint = if self.dry_run() {
                    None
                } else {
                    fingerprint(&applied)
                };
                done(result, fingerprint)
            }
            Err(err) => {
                if status_code(&err) == Some(409) {
                    let message = describe_kube_error(&err);
                    result.conflicts = parse_conflicts(&message);
                    let mut dedup: Vec<String> =
                        result.conflicts.iter().map(|c| c.manager.clone()).collect();
                    dedup.dedup();
                    return fail(
                        result,
                        format!(
                            "conflict: fields are managed by {}; {message}; rerun with --force-conflicts to take them over",
                            if dedup.is_empty() {
                                "another manager".to_string()
                            } else {
                                dedup.join(", ")
                            }
                        ),
                    );
                }
                let mut message = describe_kube_error(&err);
                if status_code(&err) == Some(404) && obj.namespaced {
                    message = format!(
                        "{message} (does namespace {:?} exist? add it to the source or create it first)",
                        obj.key.namespace.as_deref().unwrap_or_default()
                    );
                }
                fail(result, message)
            }
        }
    }
}

/// Whether [`ResourceManager::apply_batch`] would skip `obj` (no write): the live intent hash equals the planned
/// one, the live fingerprint is the one recorded after ferry's last write, and every label and
/// annotation ferry applies is still there (edits of those do not move the fingerprint).
pub fn is_unchanged(obj: &PlannedObject, live: Option<&LiveMeta>, recorded: Option<&str>) -> bool {
    live.is_some_and(|live| {
        live.annotation(ANNOTATION_HASH) == Some(obj.hash.as_str())
            && recorded.is_some()
            && live.fingerprint().as_deref() == recorded
            && live.carries_metadata_of(obj)
    })
}

/// Server-side apply as ferry, with `fieldValidation=Ignore`. That loses no check: server-side
/// apply rejects unknown fields ("field not declared in schema") for built-in kinds and CRDs
/// alike whatever the directive, and the only other thing `Warn`/`Strict` add is a second,
/// strict YAML parse of the body to find duplicate keys, which cannot occur in a body serialised
/// from a map (ferry's parser refuses duplicate keys in the source, naming file and line). That
/// second parse was about 7% of the API server's CPU per apply.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(crate::FIELD_MANAGER).validation_ignore()
}

/// Asks the API server to answer a write with the object's metadata only: ferry needs nothing
/// else from the response, and encoding (and parsing) the whole object is a measurable part of
/// a write's cost when thousands are sent.
const ACCEPT_METADATA_ONLY: &str =
    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";

/// Metadata of a write's response (`PartialObjectMetadata`, or the full object from a server
/// that ignores the `as=` parameter: both carry `metadata`).
#[derive(serde::Deserialize)]
struct MetadataOnly {
    metadata: ObjectMeta,
}

/// One server-side apply PATCH, answered with metadata only.
async fn server_side_apply(
    client: &Client,
    obj: &PlannedObject,
    params: &PatchParams,
) -> Result<ObjectMeta, kube::Error> {
    use kube::Resource;
    let url = DynamicObject::url_path(&obj.resource, obj.key.namespace.as_deref());
    let mut request = kube::core::Request::new(url)
        .patch(&obj.key.name, params, &Patch::Apply(&obj.manifest.object))
        .map_err(kube::Error::BuildRequest)?;
    request.headers_mut().insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static(ACCEPT_METADATA_ONLY),
    );
    let response: MetadataOnly = client.request(request).await?;
    Ok(response.metadata)
}

/// Parse server-side apply conflict messages: `conflict with "kubectl-edit" using apps/v1: .spec.replicas`.
pub fn parse_conflicts(message: &str) -> Vec<Conflict> {
    let re = regex::Regex::new(r#"conflicts? with "([^"]+)"(?: using [^:]+)?: ?([^\s,]*)"#)
        .expect("static regex");
    let mut out: Vec<Conflict> = re
        .captures_iter(message)
        .map(|c| Conflict {
            manager: c[1].to_string(),
            field: c[2].to_string(),
        })
        .collect();
    out.sort_by(|a, b| a.manager.cmp(&b.manager));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_parsed() {
        let msg = r#"Apply failed with 2 conflicts: conflicts with "kubectl-edit" using apps/v1:
- .spec.replicas
conflict with "helm" using apps/v1: .spec.template.spec.containers[name="web"].image"#;
        let conflicts = parse_conflicts(msg);
        assert_eq!(conflicts.len(), 2, "{conflicts:?}");
        assert_eq!(conflicts[0].manager, "helm");
        assert_eq!(conflicts[1].manager, "kubectl-edit");
    }
}
