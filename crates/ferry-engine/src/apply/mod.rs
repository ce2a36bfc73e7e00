//! Stage 5, apply: server-side apply with ferry's field manager, concurrently within a phase.
//!
//! Before writing, the live metadata of every planned object is read with one metadata-only LIST
//! per kind and namespace (falling back to per-object GETs when the identity may not list).
//! An object is skipped — no write at all — when its live `ferry.dev/intent-hash` equals the
//! planned hash *and* its live fingerprint (generation, or resourceVersion for kinds without
//! one) equals the one the inventory recorded after ferry's last write: nobody changed it since.
//! Objects owned by another ferry app are refused and name that app.
//!
//! Each write is one server-side apply PATCH with `fieldValidation=Ignore` whose response is
//! the object's metadata only ([`apply_params`], `ACCEPT_METADATA_ONLY`): both cut the API
//! server's work per object without losing a check.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ObjectMeta;

use crate::ObjectKey;
use crate::plan::{ANNOTATION_HASH, ANNOTATION_OWNER, Owner, PlannedObject, ResolvedKind};
use crate::report::{Action, Conflict, ObjectResult, RequestCounts};

pub mod hooks;

/// Counts the API requests the engine sends (exposed in reports; the benchmark relies on it).
#[derive(Debug, Default)]
pub struct Requests {
    reads: AtomicU64,
    writes: AtomicU64,
}

impl Requests {
    pub fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
    pub fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> RequestCounts {
        RequestCounts {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }
}

/// A readable one-line description of a kube error: the API server's message for API errors,
/// and "cannot reach the API server" plus the cause chain for transport errors.
pub fn describe_kube_error(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            if status.message.is_empty() {
                format!("{} ({})", status.reason, status.code)
            } else {
                status.message.clone()
            }
        }
        kube::Error::Service(_) | kube::Error::HyperError(_) => {
            let mut text = format!("cannot reach the API server: {err}");
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
        other => other.to_string(),
    }
}

pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Transport failures (server down, connection reset) as opposed to API refusals.
pub fn is_unreachable(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Service(_) | kube::Error::HyperError(_))
}

/// Live metadata of an object, as far as ferry needs it.
#[derive(Debug, Clone)]
pub struct LiveMeta {
    pub meta: ObjectMeta,
}

impl LiveMeta {
    /// Changes whenever someone writes the object's spec/data: `generation` where the kind has
    /// one, else `resourceVersion` (kinds without generation have no status writers).
    pub fn fingerprint(&self) -> Option<String> {
        fingerprint(&self.meta)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }
}

pub fn fingerprint(meta: &ObjectMeta) -> Option<String> {
    match meta.generation {
        Some(generation) if generation > 0 => Some(format!("g{generation}")),
        _ => meta.resource_version.as_ref().map(|rv| format!("rv{rv}")),
    }
}

pub(crate) fn api_for(
    client: &Client,
    kind: &ResolvedKind,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    crate::health::api_for(client, kind, namespace)
}

/// Read live metadata for all `objects`: one metadata LIST per (kind, namespace), or one GET per
/// object where listing is not allowed. Absent objects are absent from the map.
pub async fn live_index(
    client: &Client,
    objects: &[(ObjectKey, ResolvedKind)],
    concurrency: usize,
    requests: &Requests,
) -> crate::Result<HashMap<ObjectKey, LiveMeta>> {
    // (apiVersion, plural, namespace) -> the objects listed by one request.
    type GroupKey = (String, String, Option<String>);
    let mut groups: BTreeMap<GroupKey, Vec<&(ObjectKey, ResolvedKind)>> = BTreeMap::new();
    for entry in objects {
        let (key, kind) = entry;
        groups
            .entry((
                kind.resource.api_version.clone(),
                kind.resource.plural.clone(),
                key.namespace.clone(),
            ))
            .or_default()
            .push(entry);
    }
    let results: Vec<crate::Result<Vec<(ObjectKey, LiveMeta)>>> = futures::stream::iter(
        groups
            .into_iter()
            .map(|((_, _, namespace), members)| async move {
                let (_, kind) = members[0];
                let api = api_for(client, kind, namespace.as_deref());
                requests.read();
                let mut out = Vec::new();
                match api.list_metadata(&ListParams::default()).await {
                    Ok(list) => {
                        let wanted: HashMap<&str, &ObjectKey> =
                            members.iter().map(|(k, _)| (k.name.as_str(), k)).collect();
                        for item in list.items {
                            if let Some(key) =
                                item.metadata.name.as_deref().and_then(|n| wanted.get(n))
                            {
                                out.push((
                                    (*key).clone(),
                                    LiveMeta {
                                        meta: item.metadata,
                                    },
                                ));
                            }
                        }
                        Ok(out)
                    }
                    Err(err) if is_unreachable(&err) => {
                        Err(crate::Error::Cluster(describe_kube_error(&err)))
                    }
                    Err(err) => {
                        // e.g. a tenant allowed to get but not list: fall back to GETs.
                        tracing::debug!(
                            "list {} failed ({}), using GETs",
                            kind.resource.plural,
                            describe_kube_error(&err)
                        );
                        for (key, _) in members {
                            requests.read();
                            match api.get_metadata_opt(&key.name).await {
                                Ok(Some(obj)) => {
                                    out.push((key.clone(), LiveMeta { meta: obj.metadata }))
                                }
                                Ok(None) => {}
                                Err(err) if is_unreachable(&err) => {
                                    return Err(crate::Error::Cluster(describe_kube_error(&err)));
                                }
                                // Forbidden reads: the apply itself will report the real problem.
                                Err(_) => {}
                            }
                        }
                        Ok(out)
                    }
                }
            })
            .collect::<Vec<_>>(),
    )
    .buffer_unordered(concurrency.max(1))
    .collect()
    .await;
    let mut index = HashMap::new();
    for result in results {
        index.extend(result?);
    }
    Ok(index)
}

/// Settings for one apply run.
#[derive(Debug, Clone)]
pub struct ApplySettings<'a> {
    pub owner: &'a Owner,
    pub force_conflicts: bool,
    pub dry_run: bool,
    pub concurrency: usize,
}

/// Outcome of applying one object: its report line and, after a real write, the new fingerprint.
#[derive(Debug, Clone)]
pub struct Applied {
    pub result: ObjectResult,
    pub fingerprint: Option<String>,
}

/// Apply `objects` concurrently (they must not depend on each other: one phase).
pub async fn apply_all(
    client: &Client,
    objects: &[&PlannedObject],
    live: &HashMap<ObjectKey, LiveMeta>,
    recorded: &HashMap<ObjectKey, String>,
    settings: &ApplySettings<'_>,
    requests: &Requests,
    progress: &dyn crate::pipeline::Progress,
) -> Vec<Applied> {
    futures::stream::iter(
        objects
            .iter()
            .copied()
            .map(|obj| async move {
                let applied = apply_one(
                    client,
                    obj,
                    live.get(&obj.key),
                    recorded.get(&obj.key).map(String::as_str),
                    settings,
                    requests,
                )
                .await;
                progress.event(crate::pipeline::ProgressEvent::Applied {
                    key: &obj.key,
                    action: applied.result.action,
                });
                applied
            })
            .collect::<Vec<_>>(),
    )
    .buffer_unordered(settings.concurrency.max(1))
    .collect()
    .await
}

/// Whether [`apply_all`] would skip `obj` (no write): the live intent hash equals the planned
/// one and the live fingerprint is the one recorded after ferry's last write.
pub fn is_unchanged(obj: &PlannedObject, live: Option<&LiveMeta>, recorded: Option<&str>) -> bool {
    live.is_some_and(|live| {
        live.annotation(ANNOTATION_HASH) == Some(obj.hash.as_str())
            && recorded.is_some()
            && live.fingerprint().as_deref() == recorded
    })
}

async fn apply_one(
    client: &Client,
    obj: &PlannedObject,
    live: Option<&LiveMeta>,
    recorded: Option<&str>,
    settings: &ApplySettings<'_>,
    requests: &Requests,
) -> Applied {
    let mut result = ObjectResult::new(obj.key.clone(), obj.api_version(), Action::Unchanged);
    result.source = Some(obj.manifest.origin.to_string());
    let fail = |mut result: ObjectResult, message: String| {
        result.action = Action::Failed;
        result.message = Some(message);
        Applied {
            result,
            fingerprint: None,
        }
    };
    if let Some(live) = live {
        if let Some(other) = live.annotation(ANNOTATION_OWNER)
            && !settings.owner.is_own_id(other)
        {
            return fail(
                result,
                format!(
                    "already owned by ferry app {other:?} (annotation {ANNOTATION_OWNER}); remove it from one of the apps, or `ferry delete` the other app first"
                ),
            );
        }
        if is_unchanged(obj, Some(live), recorded) {
            return Applied {
                result,
                fingerprint: live.fingerprint(),
            };
        }
    }
    let mut params = apply_params();
    if settings.force_conflicts {
        params = params.force();
    }
    if settings.dry_run {
        params = params.dry_run();
    }
    requests.write();
    match server_side_apply(client, obj, &params).await {
        Ok(applied) => {
            result.action = if live.is_some() {
                Action::Configured
            } else {
                Action::Created
            };
            Applied {
                result,
                fingerprint: if settings.dry_run {
                    None
                } else {
                    fingerprint(&applied)
                },
            }
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
