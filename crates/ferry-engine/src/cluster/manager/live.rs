//! The live index: the metadata of every object a run touches, read with one metadata-only LIST
//! per kind and namespace (falling back to per-object GETs when the identity may not list), and
//! the fingerprint that tells whether anyone wrote an object since ferry did.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use kube::Client;
use kube::api::ListParams;
use kube::core::ObjectMeta;

use crate::ObjectKey;
use crate::cluster::api_for;
use crate::cluster::kube_error::{describe_kube_error, is_unreachable};
use crate::plan::ResolvedKind;

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

/// Read live metadata for all `objects`: one metadata LIST per (kind, namespace), or one GET per
/// object where listing is not allowed. Absent objects are absent from the map.
pub async fn live_index(
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
    let results: Vec<crate::Result<Vec<(ObjectKey, LiveMeta)>>> = futures::stream::iter(
        groups
            .into_iter()
            .map(|((_, _, namespace), members)| async move {
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
