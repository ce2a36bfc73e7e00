//! The live index: the metadata of every object a run touches, read with one metadata-only LIST
//! per kind and namespace (falling back to per-object GETs when the identity may not list), and
//! the fingerprint that tells whether anyone wrote an object since ferry did.
//!
//! The fingerprint (generation) does not move when someone edits labels or annotations of a kind
//! that has a generation (Deployments, custom resources): [`LiveMeta::carries_metadata_of`]
//! compares those with the intent directly, and [`LiveMeta::reconcile_disabled`] says that an
//! object was opted out of ferry's writes by hand.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::core::ObjectMeta;

use crate::ObjectKey;
use crate::cluster::api_for;
use crate::cluster::kube_error::{describe_kube_error, is_unreachable};
use crate::ownership::ANNOTATION_REVISION;
use crate::plan::{PlannedObject, ResolvedKind};

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

impl LiveMeta {
    /// Whether every label and annotation ferry applies for `obj` is on the live object with the
    /// applied value. A hand edit of a label or annotation does not bump `generation`, so the
    /// fingerprint alone would miss it. The revision annotation is bookkeeping (an unchanged
    /// object keeps the revision it was last written at) and is not compared.
    pub fn carries_metadata_of(&self, obj: &PlannedObject) -> bool {
        let intent = &obj.manifest.object.metadata;
        subset(intent.labels.as_ref(), self.meta.labels.as_ref(), &[])
            && subset(
                intent.annotations.as_ref(),
                self.meta.annotations.as_ref(),
                &[ANNOTATION_REVISION],
            )
    }

    /// Whether the live object opts out of ferry's writes (see [`reconcile_disabled`]).
    pub fn reconcile_disabled(&self) -> bool {
        reconcile_disabled(self.meta.annotations.as_ref())
    }
}

/// Annotation that stops ferry from writing an object (set on the live object or in the
/// source): it stays in the inventory (so it is not pruned as "gone") but is neither applied
/// nor reported as drift.
pub const ANNOTATION_RECONCILE: &str = "ferry.dev/reconcile";
/// Flux's annotation of the same meaning, accepted so that objects marked for Flux keep their
/// meaning after a move to ferry.
pub const FLUX_ANNOTATION_RECONCILE: &str = "kustomize.toolkit.fluxcd.io/reconcile";

/// `ferry.dev/reconcile: disabled` (or Flux's `kustomize.toolkit.fluxcd.io/reconcile:
/// disabled`) among `annotations`.
pub fn reconcile_disabled(annotations: Option<&BTreeMap<String, String>>) -> bool {
    annotations.is_some_and(|a| {
        [ANNOTATION_RECONCILE, FLUX_ANNOTATION_RECONCILE]
            .iter()
            .any(|key| {
                a.get(*key)
                    .is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
            })
    })
}

/// Every entry of `intent` (except `skip`) is in `live` with the same value.
fn subset(
    intent: Option<&BTreeMap<String, String>>,
    live: Option<&BTreeMap<String, String>>,
    skip: &[&str],
) -> bool {
    intent.into_iter().flatten().all(|(key, value)| {
        skip.contains(&key.as_str()) || live.and_then(|l| l.get(key)) == Some(value)
    })
}

pub fn fingerprint(meta: &ObjectMeta) -> Option<String> {
    match meta.generation {
        Some(generation) if generation > 0 => Some(format!("g{generation}")),
        _ => meta.resource_version.as_ref().map(|rv| format!("rv{rv}")),
    }
}

impl super::ResourceManager {
    /// Check that every namespace the plan needs exists or is created by the plan itself. Returns
    /// the ones the plan creates that do not exist yet (the inventory can only be written
    /// once its namespace exists).
    pub async fn check_namespaces(
        &self,
        planned: &[PlannedObject],
    ) -> crate::Result<BTreeSet<String>> {
        let owner = self.owner();
        let created: BTreeSet<&str> = planned
            .iter()
            .filter(|p| p.key.group.is_empty() && p.key.kind == "Namespace")
            .map(|p| p.key.name.as_str())
            .collect();
        let mut needed: BTreeMap<&str, String> = BTreeMap::new();
        needed.insert(
            owner.namespace.as_str(),
            format!("the inventory of {}", owner.describe()),
        );
        for p in planned {
            if let Some(ns) = p.key.namespace.as_deref() {
                needed
                    .entry(ns)
                    .or_insert_with(|| format!("{} ({})", p.key, p.manifest.origin));
            }
        }
        let api: Api<Namespace> = Api::all(self.client().clone());
        let mut missing_but_created = BTreeSet::new();
        for (ns, user) in needed {
            if created.contains(ns) {
                // Cheap enough to check: decides when the inventory can be written.
                if let Ok(None) = api.get_opt(ns).await {
                    missing_but_created.insert(ns.to_string());
                }
                continue;
            }
            match api.get_opt(ns).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(crate::Error::Object {
                        object: format!("Namespace {ns}"),
                        message: format!(
                            "does not exist but {user} needs it; add the Namespace to the source or create it first"
                        ),
                    });
                }
                Err(err) if is_unreachable(&err) => {
                    return Err(crate::Error::Unreachable {
                        message: describe_kube_error(&err),
                    });
                }
                // A tenant may not read namespaces; the apply reports any real problem.
                Err(_) => {}
            }
        }
        Ok(missing_but_created)
    }

    /// Read live metadata for all `objects`: one metadata LIST per (kind, namespace), or one GET
    /// per object where listing is not allowed. Absent objects are absent from the map.
    pub async fn live_index(
        &self,
        objects: &[(ObjectKey, ResolvedKind)],
    ) -> crate::Result<HashMap<ObjectKey, LiveMeta>> {
        live_index(self.client(), objects, self.concurrency()).await
    }
}

/// Read live metadata for all `objects`: one metadata LIST per (kind, namespace), or one GET per
/// object where listing is not allowed. Absent objects are absent from the map.
async fn live_index(
    client: &Client,
    objects: &[(ObjectKey, ResolvedKind)],
    concurrency: usize,
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
    let groups: Vec<_> = groups.into_iter().collect();
    // Over indices (see `ResourceManager::apply_batch`).
    let results: Vec<crate::Result<Vec<(ObjectKey, LiveMeta)>>> =
        futures::stream::iter(0..groups.len())
            .map(|i| {
                let ((_, _, namespace), members) = &groups[i];
                async move {
                    let (_, kind) = members[0];
                    let api = api_for(client, kind, namespace.as_deref());
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
                        Err(err) if is_unreachable(&err) => Err(crate::Error::Unreachable {
                            message: describe_kube_error(&err),
                        }),
                        Err(err) => {
                            // e.g. a tenant allowed to get but not list: fall back to GETs.
                            tracing::debug!(
                                "list {} failed ({}), using GETs",
                                kind.resource.plural,
                                describe_kube_error(&err)
                            );
                            for (key, _) in members {
                                match api.get_metadata_opt(&key.name).await {
                                    Ok(Some(obj)) => {
                                        out.push((key.clone(), LiveMeta { meta: obj.metadata }))
                                    }
                                    Ok(None) => {}
                                    Err(err) if is_unreachable(&err) => {
                                        return Err(crate::Error::Unreachable {
                                            message: describe_kube_error(&err),
                                        });
                                    }
                                    // Forbidden reads: the apply itself will report the real problem.
                                    Err(_) => {}
                                }
                            }
                            Ok(out)
                        }
                    }
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    let mut index = HashMap::new();
    for result in results {
        index.extend(result?);
    }
    Ok(index)
}
