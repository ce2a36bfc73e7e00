//! `ferry diff`: what [`super::apply`] would change, without changing it.
//!
//! Steps: plan → read the inventory (and what a pre-upgrade one would add) → dry-run apply and
//! diff every planned object → with `--prune`, diff what would be pruned.

use std::collections::BTreeSet;

use kube::Client;

use super::drift::IgnoreRule;
use super::{ApplyOptions, resolve_entries};
use crate::cluster::discovery;
use crate::cluster::manager::ResourceManager;
use crate::cluster::requests::{RequestCounter, counted};
use crate::inventory::{self, Entry};
use crate::plan::{self, PlannedObject};
use crate::progress::Progress;
use crate::render::helm::hooks::{self as hook_class, HookPhase};
use crate::report::{DiffReport, HookTiming};
use crate::{Manifest, ObjectKey, Result};

/// `ferry diff`: server-side dry-run apply of every object and a redacted unified diff against
/// the live object; with `opts.prune`, also what would be pruned. Secret data and every value
/// in `opts.redactor` are redacted in the diffs and in the error.
pub async fn diff(
    client: &Client,
    manifests: Vec<Manifest>,
    opts: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<DiffReport> {
    diff_ignoring(client, manifests, opts, &[], progress).await
}

/// [`diff`] that leaves out what `ignore` (a Release's `spec.drift.ignore`) leaves to others
/// and objects opted out with `ferry.dev/reconcile: disabled` (see
/// [`ResourceManager::diff_planned`]).
pub async fn diff_ignoring(
    client: &Client,
    manifests: Vec<Manifest>,
    opts: &ApplyOptions,
    ignore: &[IgnoreRule],
    progress: &dyn Progress,
) -> Result<DiffReport> {
    match diff_unredacted(client, manifests, opts, ignore, progress).await {
        Ok(mut report) => {
            report.redact(&opts.redactor);
            Ok(report)
        }
        Err(err) => Err(opts.redactor.redact_error(err)),
    }
}

async fn diff_unredacted(
    client: &Client,
    manifests: Vec<Manifest>,
    opts: &ApplyOptions,
    ignore: &[IgnoreRule],
    _progress: &dyn Progress,
) -> Result<DiffReport> {
    let mut owner = opts.owner(client)?;
    // Every request of this run is counted once, by the client itself.
    let counter = RequestCounter::default();
    let counted_client = counted(client, &counter);
    let client = &counted_client;
    let resolver = discovery::resolver_for(opts.discovery.as_ref(), client, &manifests).await?;
    let planned = plan::plan(
        manifests,
        &resolver,
        &owner.namespace,
        &owner,
        opts.revision.as_deref(),
    )?;
    // A missing namespace reads as "no inventory" (404); real errors (forbidden) surface.
    let mut previous = inventory::read(client, &owner).await?.map(|s| s.inventory);
    // What `apply` would adopt from a pre-upgrade identity (read only).
    if let Some(legacy) = &opts.legacy_app {
        match &previous {
            None => {
                if let Some(old) = inventory::read_legacy(client, &owner, legacy).await? {
                    owner.legacy = Some(legacy.app.clone());
                    previous = Some(old.inventory);
                }
            }
            Some(inv) if inv.adopted_from.as_ref() == Some(&legacy.app) => {
                owner.legacy = Some(legacy.app.clone());
            }
            Some(_) => {}
        }
    }
    let manager = ResourceManager::new(client.clone(), owner.clone())
        .with_concurrency(opts.concurrency)
        .with_force_conflicts(opts.force_conflicts);
    let mut objects = manager
        .diff_planned(&planned, &opts.redactor, ignore)
        .await?;
    for (diff, p) in objects.iter_mut().zip(&planned) {
        diff.hook = hook_timing(p);
    }
    if opts.prune
        && let Some(previous) = previous
    {
        // In the inventory's own order (what `ferry diff --prune` always showed).
        let planned_keys: BTreeSet<&ObjectKey> = planned.iter().map(|p| &p.key).collect();
        let gone: Vec<Entry> = previous
            .objects
            .into_iter()
            .filter(|e| !planned_keys.contains(&e.key))
            .collect();
        let (candidates, _) = resolve_entries(&resolver, gone);
        objects.extend(manager.diff_pruned(candidates, &opts.redactor).await);
    }
    Ok(DiffReport {
        app: owner.app.clone(),
        namespace: owner.namespace,
        objects,
        requests: counter.snapshot(),
    })
}

/// When a hook object runs, for the diff's reader.
fn hook_timing(p: &PlannedObject) -> Option<HookTiming> {
    match hook_class::phase(&p.manifest) {
        HookPhase::PreDeploy => Some(HookTiming::PreDeploy),
        HookPhase::PostDeploy => Some(HookTiming::PostDeploy),
        HookPhase::Main => None,
    }
}
