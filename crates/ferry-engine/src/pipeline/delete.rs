//! `ferry delete --app` and a Release's finalizer: delete every object of an app that is still
//! provably its own, then its inventory.
//!
//! Steps: read the inventory (or a pre-upgrade one) → resolve its kinds → leave objects in
//! terminating namespaces to them → delete the rest (reverse apply order, UID preconditions)
//! → delete the inventory if nothing failed.

use std::time::Instant;

use kube::Client;

use super::{DeleteOptions, candidate_namespaces, no_inventory, owner_for, resolve_entries};
use crate::cluster::discovery;
use crate::cluster::manager::ResourceManager;
use crate::cluster::manager::delete::{self as prune, Candidate};
use crate::cluster::requests::{RequestCounter, counted};
use crate::inventory;
use crate::ownership::Owner;
use crate::plan::ResolvedKind;
use crate::report::{Action, ApplyReport, ObjectResult};
use crate::{ObjectKey, Result};

/// `ferry delete --app`: delete every object in the inventory that is still provably ours (in
/// reverse apply order, destructive kinds included), then the inventory itself.
pub async fn delete_app(
    client: &Client,
    app: &str,
    namespace: Option<&str>,
    dry_run: bool,
    concurrency: usize,
) -> Result<ApplyReport> {
    delete(
        client,
        &DeleteOptions {
            app: app.to_string(),
            namespace: namespace.map(str::to_string),
            dry_run,
            concurrency,
            allow_destructive: true,
            ..Default::default()
        },
    )
    .await
}

/// Delete an app's objects that are still provably its own, then its inventory. Objects in a
/// terminating namespace are left to it; when the inventory's own namespace is terminating and
/// the inventory cannot be read (the app's rights there went first), nothing is left to do.
pub async fn delete(client: &Client, opts: &DeleteOptions) -> Result<ApplyReport> {
    let started = Instant::now();
    let concurrency = opts.concurrency.max(1);
    let mut owner = owner_for(
        client,
        &opts.app,
        opts.release.as_ref(),
        opts.namespace.as_deref(),
    )?;
    // Every request of this run is counted once, by the client itself.
    let counter = RequestCounter::default();
    let counted_client = counted(client, &counter);
    let client = &counted_client;
    let home_terminating =
        prune::terminating_namespaces(client, [owner.namespace.clone()], &opts.terminating)
            .await
            .contains(&owner.namespace);
    let empty_report = |owner: &Owner| ApplyReport {
        app: owner.app.clone(),
        namespace: owner.namespace.clone(),
        revision: None,
        dry_run: opts.dry_run,
        objects: Vec::new(),
        requests: counter.snapshot(),
        timed_out: false,
        prune_skipped: None,
        duration_ms: started.elapsed().as_millis(),
    };
    let stored = match inventory::read(client, &owner).await {
        Ok(stored) => stored,
        Err(err) if home_terminating => {
            tracing::info!(owner = %owner.id(), "namespace {} is terminating and its inventory cannot be read ({err}); its objects go with it", owner.namespace);
            return Ok(empty_report(&owner));
        }
        Err(err) => return Err(err),
    };
    let (inv, version, legacy_version) = match stored {
        Some(s) => (s.inventory, Some(s.version), None),
        None => {
            let old = match &opts.legacy_app {
                Some(legacy) => inventory::read_legacy(client, &owner, legacy).await?,
                None => None,
            };
            match old {
                Some(old) => {
                    owner.legacy = opts.legacy_app.as_ref().map(|l| l.app.clone());
                    (old.inventory, None, Some(old.version))
                }
                None => {
                    return Err(no_inventory(
                        &owner,
                        "nothing to delete (was it applied with another --namespace?)",
                    ));
                }
            }
        }
    };
    if let Some(legacy) = &opts.legacy_app
        && inv.adopted_from.as_ref() == Some(&legacy.app)
    {
        owner.legacy = Some(legacy.app.clone());
    }
    let mut resolver = discovery::resolver_for(opts.discovery.as_ref(), client, &[]).await?;
    resolver.refresh_for_entries(client, &inv.objects).await?;
    let (candidates, unresolved) = resolve_entries(&resolver, inv.objects.clone());
    let mut objects: Vec<ObjectResult> = unresolved
        .into_iter()
        .map(|e| {
            ObjectResult::new(e.key, e.api_version, Action::Kept)
                .with_message("its kind is no longer served by the cluster")
        })
        .collect();
    let mut known = opts.terminating.clone();
    if home_terminating {
        known.insert(owner.namespace.clone());
    }
    let terminating =
        prune::terminating_namespaces(client, candidate_namespaces(&candidates), &known).await;
    let (candidates, skipped) = prune::skip_terminating(candidates, &terminating);
    objects.extend(skipped);
    let manager = ResourceManager::new(client.clone(), owner.clone())
        .with_concurrency(concurrency)
        .with_dry_run(opts.dry_run);
    let live = manager.live_index(&kinds_of(&candidates)).await?;
    let deleted = manager
        .delete_owned(
            candidates,
            &live,
            Action::Deleted,
            &prune::Policy {
                allow_destructive: opts.allow_destructive,
            },
        )
        .await;
    objects.extend(deleted.changes.into_iter().filter_map(|c| c.result));
    let failed = objects.iter().any(|o| o.action == Action::Failed);
    // In a terminating namespace the inventory goes with it (and may no longer be ours to
    // delete).
    if !failed && !opts.dry_run && !home_terminating {
        if version.is_some() {
            inventory::delete(client, &owner, version.as_ref()).await?;
        }
        if let Some(legacy) = opts.legacy_app.as_ref().filter(|_| owner.legacy.is_some()) {
            inventory::delete_legacy(client, &owner, legacy, legacy_version.as_ref()).await?;
        }
    }
    Ok(ApplyReport {
        app: owner.app.clone(),
        namespace: owner.namespace,
        revision: inv.revision,
        dry_run: opts.dry_run,
        objects,
        requests: counter.snapshot(),
        timed_out: false,
        prune_skipped: failed.then(|| {
            "some objects could not be deleted; the inventory was kept so a rerun can finish"
                .to_string()
        }),
        duration_ms: started.elapsed().as_millis(),
    })
}

/// What the live index needs to read for `candidates`.
pub(super) fn kinds_of(candidates: &[Candidate]) -> Vec<(ObjectKey, ResolvedKind)> {
    candidates
        .iter()
        .map(|c| (c.entry.key.clone(), c.kind.clone()))
        .collect()
}
