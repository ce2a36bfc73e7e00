//! Delete: owned deletes of inventory entries, shared by prune (objects gone from the source) and
//! `ferry delete` (every object of an app).
//!
//! An object is deleted only if it is in the app's inventory **and** its live metadata carries
//! the app's label and exact owner id **and** it has neither a `ferry.dev/prune: disabled` nor
//! a `ferry.dev/reconcile: disabled` annotation (Flux's `kustomize.toolkit.fluxcd.io/reconcile`
//! too). Deletion uses a UID precondition, so an object re-created by someone else
//! between the read and the delete is never removed. Deletes go in reverse apply order
//! (workloads before their namespaces and CRDs).
//!
//! Destructive kinds (Namespace, CustomResourceDefinition, PersistentVolumeClaim,
//! PersistentVolume: deleting one deletes data far beyond the object) are pruned only when the
//! object carries `ferry.dev/prune: allow-destructive` (set in the source, so it is on the live
//! object from the last apply). Without it they are kept, stay in the inventory and are reported
//! as kept on every run. `ferry delete --app` (an explicit operator command) deletes them anyway.
//!
//! Objects in a namespace that is being deleted are not deleted one by one: they go with the
//! namespace, and the app's identity may already have lost its rights there (its RoleBinding
//! deleted first), so trying would only block a Release's finalizer and with it the namespace.

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};

use super::live::LiveMeta;
use super::{Change, ChangeSet, ResourceManager};
use crate::ObjectKey;
use crate::cluster::api_for;
use crate::cluster::kube_error::{describe_kube_error, status_code};
use crate::inventory::Entry;
use crate::ownership::{ANNOTATION_PRUNE, Owner, PRUNE_ALLOW_DESTRUCTIVE};
use crate::plan::{Phase, ResolvedKind};
use crate::report::{Action, ObjectResult};

/// One inventory entry considered for deletion, with how to reach it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub entry: Entry,
    pub kind: ResolvedKind,
}

/// What happened to a candidate, and whether it stays in the inventory.
#[derive(Debug, Clone)]
struct Outcome {
    pub result: Option<ObjectResult>,
    pub keep: bool,
}

/// Kinds whose deletion destroys far more than the object: every object in a Namespace, every
/// custom resource of a CRD, the data behind a PVC or PV.
pub fn is_destructive(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "Namespace")
            | ("", "PersistentVolumeClaim")
            | ("", "PersistentVolume")
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
    )
}

/// What a deletion run may do.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Delete destructive kinds without their opt-in annotation (`ferry delete --app`).
    pub allow_destructive: bool,
}

/// Namespaces among `namespaces` that are being deleted (`deletionTimestamp` set or phase
/// `Terminating`), as far as `client` may read them, plus the ones the caller already knows
/// (the agent reads them with its own identity: a tenant often may not read Namespaces).
pub async fn terminating_namespaces(
    client: &Client,
    namespaces: impl IntoIterator<Item = String>,
    known: &BTreeSet<String>,
) -> BTreeSet<String> {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut out = known.clone();
    for ns in namespaces.into_iter().collect::<BTreeSet<_>>() {
        if out.contains(&ns) {
            continue;
        }
        if let Ok(Some(live)) = api.get_opt(&ns).await
            && is_terminating(&live)
        {
            out.insert(ns);
        }
    }
    out
}

pub fn is_terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

/// Split off candidates that live in (or are) a terminating namespace: they go with it. Their
/// results say so; they leave the inventory.
pub fn skip_terminating(
    candidates: Vec<Candidate>,
    terminating: &BTreeSet<String>,
) -> (Vec<Candidate>, Vec<ObjectResult>) {
    let mut rest = Vec::new();
    let mut skipped = Vec::new();
    for c in candidates {
        let key = &c.entry.key;
        let ns = match key.namespace.as_deref() {
            Some(ns) => Some(ns),
            None if key.group.is_empty() && key.kind == "Namespace" => Some(key.name.as_str()),
            None => None,
        };
        match ns {
            Some(ns) if terminating.contains(ns) => skipped.push(
                ObjectResult::new(key.clone(), c.entry.api_version.clone(), Action::Kept)
                    .with_message(format!(
                        "not deleted: namespace {ns} is terminating and takes it along"
                    )),
            ),
            _ => rest.push(c),
        }
    }
    (rest, skipped)
}

impl ResourceManager {
    /// Delete candidates that are provably this owner's, in reverse apply order (workloads
    /// before their namespaces and CRDs). `deleted_action` is [`Action::Pruned`] for prune and
    /// [`Action::Deleted`] for `ferry delete`. A change `stays` (in the inventory) unless the
    /// object was deleted, is gone, or no longer ours.
    pub async fn delete_owned(
        &self,
        candidates: Vec<Candidate>,
        live: &HashMap<ObjectKey, LiveMeta>,
        deleted_action: Action,
        policy: &Policy,
    ) -> ChangeSet {
        let mut by_phase: Vec<Vec<Candidate>> = vec![Vec::new(); Phase::ALL.len()];
        for c in candidates {
            by_phase[Phase::of(&c.entry.key.group, &c.entry.key.kind) as usize].push(c);
        }
        let mut out = ChangeSet::default();
        for group in by_phase.into_iter().rev() {
            let changes: Vec<Change> = futures::stream::iter(group)
                .map(|c| async move {
                    let outcome = delete_one(
                        self.client(),
                        &c,
                        live.get(&c.entry.key),
                        self.owner(),
                        deleted_action,
                        policy,
                        self.dry_run(),
                    )
                    .await;
                    Change {
                        key: c.entry.key,
                        result: outcome.result,
                        fingerprint: None,
                        stays: outcome.keep,
                    }
                })
                .buffer_unordered(self.concurrency())
                .collect()
                .await;
            out.extend(changes);
        }
        out
    }

    /// [`terminating_namespaces`] as this manager's identity reads them.
    pub async fn terminating_namespaces(
        &self,
        namespaces: impl IntoIterator<Item = String>,
        known: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        terminating_namespaces(self.client(), namespaces, known).await
    }
}

#[allow(clippy::too_many_arguments)]
async fn delete_one(
    client: &Client,
    c: &Candidate,
    live: Option<&LiveMeta>,
    owner: &Owner,
    deleted_action: Action,
    policy: &Policy,
    dry_run: bool,
) -> Outcome {
    let result = |action: Action, message: Option<String>| {
        let mut r = ObjectResult::new(c.entry.key.clone(), c.entry.api_version.clone(), action);
        r.message = message;
        Some(r)
    };
    let Some(live) = live else {
        // Already gone: nothing to do, drop it from the inventory.
        return Outcome {
            result: None,
            keep: false,
        };
    };
    if !owner.owns(live.meta.labels.as_ref(), live.meta.annotations.as_ref()) {
        return Outcome {
            result: result(
                Action::Kept,
                Some(format!(
                    "not deleted: it no longer carries {}'s label and owner annotation ({:?}); dropped from the inventory",
                    owner.describe(),
                    owner.id()
                )),
            ),
            keep: false,
        };
    }
    // Opted out of ferry entirely (`ferry.dev/reconcile: disabled`, as Flux's annotation):
    // neither written nor deleted; it stays in the inventory until the annotation goes.
    if live.reconcile_disabled() {
        return Outcome {
            result: result(
                Action::Kept,
                Some(format!(
                    "not deleted: annotation {}: disabled",
                    super::live::ANNOTATION_RECONCILE
                )),
            ),
            keep: true,
        };
    }
    if live.annotation(ANNOTATION_PRUNE) == Some("disabled") {
        return Outcome {
            result: result(
                Action::Kept,
                Some(format!(
                    "not deleted: annotation {ANNOTATION_PRUNE}: disabled"
                )),
            ),
            keep: true,
        };
    }
    let key = &c.entry.key;
    if is_destructive(&key.group, &key.kind)
        && !policy.allow_destructive
        && live.annotation(ANNOTATION_PRUNE) != Some(PRUNE_ALLOW_DESTRUCTIVE)
    {
        return Outcome {
            result: result(
                Action::Kept,
                Some(format!(
                    "not deleted: deleting a {} destroys everything in it; kept in the inventory. Set annotation {ANNOTATION_PRUNE}: {PRUNE_ALLOW_DESTRUCTIVE} on it in the source (or on the live object) to let ferry delete it, or delete it by hand",
                    key.kind
                )),
            ),
            keep: true,
        };
    }
    let api = api_for(client, &c.kind, c.entry.key.namespace.as_deref());
    let params = DeleteParams {
        dry_run,
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: live.meta.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&c.entry.key.name, &params).await {
        Ok(_) => Outcome {
            result: result(deleted_action, None),
            keep: dry_run,
        },
        Err(err) if status_code(&err) == Some(404) => Outcome {
            result: None,
            keep: false,
        },
        Err(err) => Outcome {
            result: result(
                Action::Failed,
                Some(format!("delete failed: {}", describe_kube_error(&err))),
            ),
            keep: true,
        },
    }
}
