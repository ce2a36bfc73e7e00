//! Stage 6, prune: the inventory of what an app owns ([`inventory`]), and safe deletion of what
//! left the source.
//!
//! An object is deleted only if it is in the app's inventory **and** its live metadata carries
//! the app's label and owner annotation **and** it has no `ferry.dev/prune: disabled`
//! annotation. Deletion uses a UID precondition, so an object re-created by someone else
//! between the read and the delete is never removed. Deletes go in reverse apply order
//! (workloads before their namespaces and CRDs).

pub mod inventory;

use std::collections::HashMap;

use futures::StreamExt;
use kube::Client;
use kube::api::{DeleteParams, Preconditions, PropagationPolicy};

use crate::ObjectKey;
use crate::apply::{LiveMeta, Requests, api_for, describe_kube_error, status_code};
use crate::plan::{ANNOTATION_PRUNE, Owner, Phase, ResolvedKind};
use crate::report::{Action, ObjectResult};
use inventory::Entry;

/// One inventory entry considered for deletion, with how to reach it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub entry: Entry,
    pub kind: ResolvedKind,
}

/// What happened to a candidate, and whether it stays in the inventory.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: Option<ObjectResult>,
    pub keep: bool,
}

/// Delete candidates that are provably ours. `deleted_action` is [`Action::Pruned`] for prune
/// and [`Action::Deleted`] for `ferry delete`.
#[allow(clippy::too_many_arguments)]
pub async fn delete_owned(
    client: &Client,
    candidates: Vec<Candidate>,
    live: &HashMap<ObjectKey, LiveMeta>,
    owner: &Owner,
    deleted_action: Action,
    dry_run: bool,
    concurrency: usize,
    requests: &Requests,
) -> Vec<(Candidate, Outcome)> {
    let mut by_phase: Vec<Vec<Candidate>> = vec![Vec::new(); Phase::ALL.len()];
    for c in candidates {
        by_phase[Phase::of(&c.entry.key.group, &c.entry.key.kind) as usize].push(c);
    }
    let mut out = Vec::new();
    for group in by_phase.into_iter().rev() {
        let results: Vec<(Candidate, Outcome)> = futures::stream::iter(group)
            .map(|c| async move {
                let outcome = delete_one(
                    client,
                    &c,
                    live.get(&c.entry.key),
                    owner,
                    deleted_action,
                    dry_run,
                    requests,
                )
                .await;
                (c, outcome)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        out.extend(results);
    }
    out
}

async fn delete_one(
    client: &Client,
    c: &Candidate,
    live: Option<&LiveMeta>,
    owner: &Owner,
    deleted_action: Action,
    dry_run: bool,
    requests: &Requests,
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
                    "not deleted: it no longer carries app {}'s label and owner annotation; dropped from the inventory",
                    owner.app
                )),
            ),
            keep: false,
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
    requests.write();
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
