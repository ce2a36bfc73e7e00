//! The whole pipeline, composed from the stages; both drivers (CLI and agent) call this.
//!
//! Render first (`render::render`, no cluster needed), then hand the manifests to [`apply`],
//! [`diff`], or use [`delete_app`] / [`status`] with an app name. Nothing here assumes
//! cluster-admin: the client may impersonate a tenant, the inventory lives in the app's
//! namespace, and every API refusal is reported with the server's message (verb, resource and
//! identity for RBAC denials).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, Patch};
use serde_json::Value;

use crate::cluster::api_for;
use crate::cluster::discovery::{self, DiscoveryCache};
use crate::cluster::kube_error::{describe_kube_error, is_unreachable, status_code};
use crate::cluster::manager::apply::{self, Applied, ApplySettings};
use crate::cluster::manager::delete::{self as prune, Candidate};
use crate::cluster::manager::hooks;
use crate::cluster::manager::live;
use crate::cluster::manager::wait::{self, Target};
use crate::cluster::requests::{RequestCounter, counted};
use crate::health;
use crate::inventory::{self, Entry, HookRecord, Inventory};
use crate::ownership::{self, Owner, ReleaseRef};
use crate::plan::{self, Phase, PlannedObject, ResolvedKind, Resolver};
use crate::render::helm::hooks::{self as hook_class, HookPhase};
use crate::report::redact::{REDACTED, Redactor};
use crate::report::{
    Action, ApplyReport, DiffAction, DiffReport, HookTiming, ObjectDiff, ObjectResult,
    ObjectStatus, StatusReport,
};
use crate::{Error, Manifest, ObjectKey, Result};

pub use crate::progress::{NoProgress, Progress, ProgressEvent};

/// Options for [`apply`] and [`diff`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The push app name: label value and inventory name (`ferry-inventory-<app>`). Ignored
    /// when `release` is set.
    pub app: String,
    /// Apply as this Release's app (the agent, and `ferry install`/`bootstrap` which hand over
    /// to one): an identity apart from every push app, see `ownership`.
    pub release: Option<ReleaseRef>,
    /// The app a pre-upgrade ferry used for this app (`ownership::legacy_release_app`).
    /// If this app has no inventory yet and a verified pre-upgrade inventory exists under that
    /// name (`inventory::read_legacy`), it is adopted (objects, ownership) and removed. The
    /// caller vouches that no other app maps to the same legacy name.
    pub legacy_app: Option<inventory::Legacy>,
    /// Default namespace for namespaced objects without one, and where the inventory lives.
    /// `None`: the client's default namespace (kubeconfig context, or the pod's namespace).
    pub namespace: Option<String>,
    /// Delete objects that were in the previous inventory and are gone from the source.
    pub prune: bool,
    /// Allow an empty source to prune everything (refused otherwise).
    pub allow_empty: bool,
    /// Take over fields another field manager owns (server-side apply `force`).
    pub force_conflicts: bool,
    /// Wait until every object is Current.
    pub wait: bool,
    pub timeout: Duration,
    /// Maximum concurrent API requests.
    pub concurrency: usize,
    /// The git commit being applied; recorded in the inventory and on changed objects.
    pub revision: Option<String>,
    /// Server-side dry run: nothing is persisted, the inventory is not touched.
    pub dry_run: bool,
    /// Where the manifests came from (path or URL), recorded in the inventory.
    pub source: String,
    /// Discovery shared across runs (the agent); `None`: discover afresh for this run.
    pub discovery: Option<Arc<DiscoveryCache>>,
    /// Values that came from decryption (from `render::render_collecting`): taken out of
    /// diffs, report messages and errors, whatever object they ended up in.
    pub redactor: Redactor,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            app: String::new(),
            release: None,
            legacy_app: None,
            namespace: None,
            prune: false,
            allow_empty: false,
            force_conflicts: false,
            wait: false,
            timeout: Duration::from_secs(300),
            concurrency: 16,
            revision: None,
            dry_run: false,
            source: String::new(),
            discovery: None,
            redactor: Redactor::new(),
        }
    }
}

impl ApplyOptions {
    pub fn new(app: impl Into<String>) -> Self {
        Self {
            app: app.into(),
            ..Default::default()
        }
    }

    fn owner(&self, client: &Client) -> Result<Owner> {
        owner_for(
            client,
            &self.app,
            self.release.as_ref(),
            self.namespace.as_deref(),
        )
    }
}

/// The owner of an app: a push app by name, or a Release (`release` wins).
fn owner_for(
    client: &Client,
    app: &str,
    release: Option<&ReleaseRef>,
    namespace: Option<&str>,
) -> Result<Owner> {
    let namespace = namespace
        .filter(|ns| !ns.is_empty())
        .unwrap_or(client.default_namespace());
    match release {
        Some(release) => Owner::release(release, namespace),
        None => Owner::push(app, namespace),
    }
}

/// The app has no inventory under `owner`'s name in its namespace.
fn no_inventory(owner: &Owner, hint: &str) -> Error {
    Error::NoInventory {
        app: owner.app.clone(),
        owner: owner.describe(),
        namespace: owner.namespace.clone(),
        hint: hint.to_string(),
    }
}

/// Check that every namespace the plan needs exists or is created by the plan itself.
async fn check_namespaces(
    client: &Client,
    planned: &[PlannedObject],
    owner: &Owner,
) -> Result<BTreeSet<String>> {
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
    let api: Api<Namespace> = Api::all(client.clone());
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
                return Err(Error::Object {
                    object: format!("Namespace {ns}"),
                    message: format!(
                        "does not exist but {user} needs it; add the Namespace to the source or create it first"
                    ),
                });
            }
            Err(err) if is_unreachable(&err) => {
                return Err(Error::Unreachable {
                    message: describe_kube_error(&err),
                });
            }
            // A tenant may not read namespaces; the apply reports any real problem.
            Err(_) => {}
        }
    }
    Ok(missing_but_created)
}

fn entry_for(p: &PlannedObject, fingerprint: Option<String>) -> Entry {
    Entry {
        api_version: p.api_version(),
        key: p.key.clone(),
        fingerprint,
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn kind_of(p: &PlannedObject) -> ResolvedKind {
    ResolvedKind {
        resource: p.resource.clone(),
        namespaced: p.namespaced,
    }
}

/// Resolve inventory entries to API resources; entries whose kind is no longer served are
/// returned separately.
fn resolve_entries(resolver: &Resolver, entries: Vec<Entry>) -> (Vec<Candidate>, Vec<Entry>) {
    let (resolved, unresolved) = resolver.resolve_entries(entries);
    let candidates = resolved
        .into_iter()
        .map(|(entry, kind)| Candidate { entry, kind })
        .collect();
    (candidates, unresolved)
}

/// Render → apply: the push and pull paths both end here. The report's messages and the error
/// (API server refusals echo field values) carry no value from `opts.redactor`.
pub async fn apply(
    client: &Client,
    manifests: Vec<Manifest>,
    opts: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<ApplyReport> {
    match apply_unredacted(client, manifests, opts, progress).await {
        Ok(mut report) => {
            report.redact(&opts.redactor);
            Ok(report)
        }
        Err(err) => Err(opts.redactor.redact_error(err)),
    }
}

async fn apply_unredacted(
    client: &Client,
    manifests: Vec<Manifest>,
    opts: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<ApplyReport> {
    let started = Instant::now();
    let mut owner = opts.owner(client)?;
    // Every request of this run is counted once, by the client itself.
    let counter = RequestCounter::default();
    let counted_client = counted(client, &counter);
    let client = &counted_client;
    if manifests.is_empty() && opts.prune && !opts.allow_empty {
        return Err(Error::Refused(format!(
            "the source rendered no objects; with --prune that would delete everything {} owns. Check the path, or pass --allow-empty if that is really intended",
            owner.describe()
        )));
    }
    let mut resolver = discovery::resolver_for(opts.discovery.as_ref(), client, &manifests).await?;
    let planned = plan::plan(
        manifests,
        &resolver,
        &owner.namespace,
        &owner,
        opts.revision.as_deref(),
    )?;
    progress.event(ProgressEvent::Planned {
        total: planned.len(),
    });
    // The namespace check, the inventory and the live metadata are independent reads.
    let kinds: Vec<(ObjectKey, ResolvedKind)> = planned
        .iter()
        .map(|p| (p.key.clone(), kind_of(p)))
        .collect();
    let (not_yet_created, stored, live) = tokio::try_join!(
        check_namespaces(client, &planned, &owner),
        inventory::read(client, &owner),
        live::live_index(client, &kinds, opts.concurrency),
    )?;
    // Optimistic concurrency: every inventory write presents the version this run read.
    let mut version = stored.as_ref().map(|s| s.version.clone());
    let mut previous = stored.map(|s| s.inventory);
    // Migration from a pre-upgrade identity (see `ApplyOptions::legacy_app`): adopt its
    // inventory once, accept its ownership marker until the objects carry the new one.
    let mut adopted_legacy: Option<(inventory::Legacy, inventory::Version)> = None;
    if let Some(legacy) = &opts.legacy_app {
        let pending = previous
            .as_ref()
            .is_some_and(|inv| inv.adopted_from.as_ref() == Some(&legacy.app));
        // A pre-upgrade inventory is looked for once (this app has none yet); an explicit
        // push-app hand-over whenever it is asked for (the Release may have run without it).
        if (previous.is_none() || legacy.push_takeover)
            && let Some(old) = inventory::read_legacy(client, &owner, legacy).await?
        {
            tracing::info!(
                owner = %owner.id(),
                "adopting inventory {}/{}",
                owner.namespace,
                Inventory::name(&legacy.app)
            );
            previous = Some(inventory::adopt(
                previous.take(),
                old.inventory,
                &legacy.app,
            ));
            owner.legacy = Some(legacy.app.clone());
            adopted_legacy = Some((legacy.clone(), old.version));
        }
        if pending {
            owner.legacy = Some(legacy.app.clone());
        }
    }
    let previous_entries = previous
        .as_ref()
        .map(Inventory::entries_by_key)
        .unwrap_or_default();
    let recorded: HashMap<ObjectKey, String> = previous_entries
        .iter()
        .filter_map(|(k, e)| e.fingerprint.clone().map(|f| (k.clone(), f)))
        .collect();
    let planned_keys: BTreeSet<&ObjectKey> = planned.iter().map(|p| &p.key).collect();
    let hook_phase: HashMap<&ObjectKey, HookPhase> = planned
        .iter()
        .map(|p| (&p.key, hook_class::phase(&p.manifest)))
        .collect();
    let is_hook = |p: &PlannedObject| hook_phase.get(&p.key) != Some(&HookPhase::Main);
    let main: Vec<&PlannedObject> = planned.iter().filter(|p| !is_hook(p)).collect();
    let hooks_of = |phase: HookPhase| {
        hooks::ordered(
            planned
                .iter()
                .filter(|p| hook_phase.get(&p.key) == Some(&phase))
                .collect(),
        )
    };
    let (pre_hooks, post_hooks) = (
        hooks_of(HookPhase::PreDeploy),
        hooks_of(HookPhase::PostDeploy),
    );
    let gone: Vec<Entry> = inventory::gone_from_source(previous.as_ref(), &planned_keys);

    // Hooks run (like `helm upgrade`) whenever anything in the app changes, even if the hook
    // itself did not; a run where nothing changed runs nothing and writes nothing.
    let hook_hashes: BTreeMap<ObjectKey, String> = pre_hooks
        .iter()
        .chain(&post_hooks)
        .map(|p| (p.key.clone(), p.hash.clone()))
        .collect();
    let previous_hooks: BTreeMap<ObjectKey, String> = previous
        .as_ref()
        .map(|inv| {
            inv.hooks
                .iter()
                .map(|h| (h.key.clone(), h.hash.clone()))
                .collect()
        })
        .unwrap_or_default();
    let run_hooks = !hook_hashes.is_empty()
        && (previous.is_none()
            || hook_hashes != previous_hooks
            || (opts.prune && !gone.is_empty())
            || main.iter().any(|p| {
                !apply::is_unchanged(
                    p,
                    live.get(&p.key),
                    recorded.get(&p.key).map(String::as_str),
                )
            }));
    let to_apply: Vec<&PlannedObject> = planned
        .iter()
        .filter(|p| run_hooks || !is_hook(p))
        .collect();

    // Widen the inventory before writing anything (see `inventory` for why).
    let applying: Vec<Entry> = to_apply.iter().map(|p| entry_for(p, None)).collect();
    let (mut widened, grew) = inventory::widen(
        previous.as_ref(),
        Inventory {
            app: owner.app.clone(),
            owner: Some(owner.id()),
            source: opts.source.clone(),
            ..Default::default()
        },
        &applying,
    );
    // `version.is_none()`: no inventory under this identity yet (first run, or adopting one).
    let needs_widening = grew || version.is_none() || adopted_legacy.is_some();
    let mut widened_written = !needs_widening || opts.dry_run;
    if !widened_written && !not_yet_created.contains(&owner.namespace) {
        widened.applied_at = now_rfc3339();
        write_widened(
            client,
            &owner,
            &widened,
            &mut version,
            adopted_legacy.take(),
        )
        .await?;
        widened_written = true;
    }

    let settings = ApplySettings {
        owner: &owner,
        force_conflicts: opts.force_conflicts,
        dry_run: opts.dry_run,
        concurrency: opts.concurrency,
    };
    let hook_ctx = hooks::HookContext {
        client,
        settings: &settings,
        progress,
        timeout: opts.timeout,
    };
    let mut applied: HashMap<ObjectKey, Applied> = HashMap::new();
    let mut hook_outcomes: Vec<hooks::PhaseOutcome> = Vec::new();
    for phase in Phase::ALL {
        // Pre-deploy hooks go after namespaces and CRDs (Helm installs `crds/` first) and
        // before everything else.
        if phase == Phase::Config && run_hooks && !pre_hooks.is_empty() {
            let outcome = hooks::run_phase(&hook_ctx, &pre_hooks, &live, &recorded).await;
            if let Some((key, message)) = &outcome.failure {
                return Err(Error::Object {
                    object: key.to_string(),
                    message: format!(
                        "pre-deploy hook failed, nothing else of {} was applied or pruned: {message}",
                        owner.describe()
                    ),
                });
            }
            hook_outcomes.push(outcome);
        }
        let batch: Vec<&PlannedObject> =
            main.iter().copied().filter(|p| p.phase == phase).collect();
        if batch.is_empty() {
            continue;
        }
        let results = apply::apply_all(client, &batch, &live, &recorded, &settings, progress).await;
        for a in results {
            applied.insert(a.result.key.clone(), a);
        }
        if phase == Phase::Foundation {
            if !widened_written {
                widened.applied_at = now_rfc3339();
                write_widened(
                    client,
                    &owner,
                    &widened,
                    &mut version,
                    adopted_legacy.take(),
                )
                .await?;
                widened_written = true;
            }
            if !opts.dry_run {
                wait_for_crds(client, &batch, &applied, opts, progress).await;
            }
        }
    }
    let mut objects: Vec<ObjectResult> = planned
        .iter()
        .filter_map(|p| applied.get(&p.key).map(|a| a.result.clone()))
        .collect();
    let failed = objects.iter().any(|o| o.action == Action::Failed);

    // Prune what left the source.
    let mut kept_entries: Vec<Entry> = Vec::new();
    let mut prune_skipped = None;
    if !gone.is_empty() {
        if !opts.prune {
            for e in &gone {
                objects.push(
                    ObjectResult::new(e.key.clone(), e.api_version.clone(), Action::Kept)
                        .with_message("gone from the source; not deleted without --prune"),
                );
            }
            kept_entries.extend(gone);
        } else if failed {
            prune_skipped = Some("some objects failed to apply; nothing was pruned".to_string());
            kept_entries.extend(gone);
        } else {
            resolver.refresh_for_entries(client, &gone).await?;
            let (candidates, unresolved) = resolve_entries(&resolver, gone);
            for e in unresolved {
                objects.push(
                    ObjectResult::new(e.key.clone(), e.api_version.clone(), Action::Kept)
                        .with_message(
                            "its kind is no longer served by the cluster; left in the inventory",
                        ),
                );
                kept_entries.push(e);
            }
            // Objects in a namespace being deleted go with it (see `prune`).
            let terminating = prune::terminating_namespaces(
                client,
                candidate_namespaces(&candidates),
                &BTreeSet::new(),
            )
            .await;
            let (candidates, skipped) = prune::skip_terminating(candidates, &terminating);
            objects.extend(skipped);
            let kinds: Vec<(ObjectKey, ResolvedKind)> = candidates
                .iter()
                .map(|c| (c.entry.key.clone(), c.kind.clone()))
                .collect();
            let live = live::live_index(client, &kinds, opts.concurrency).await?;
            let outcomes = prune::delete_owned(
                client,
                candidates,
                &live,
                &owner,
                Action::Pruned,
                &prune::Policy::default(),
                opts.dry_run,
                opts.concurrency,
            )
            .await;
            for (candidate, outcome) in outcomes {
                if let Some(result) = outcome.result {
                    progress.event(ProgressEvent::Pruned {
                        key: &result.key,
                        action: result.action,
                    });
                    objects.push(result);
                }
                if outcome.keep {
                    kept_entries.push(candidate.entry);
                }
            }
        }
    }

    // Wait for health.
    let mut timed_out = false;
    if opts.wait && !opts.dry_run && !failed {
        let targets: Vec<Target> = main
            .iter()
            .map(|p| Target {
                key: p.key.clone(),
                kind: kind_of(p),
            })
            .collect();
        let (healths, hit_deadline) =
            wait::wait_all(client, &targets, opts.timeout, opts.concurrency, progress).await;
        timed_out = hit_deadline;
        for (target, h) in targets.iter().zip(healths) {
            if let Some(o) = objects.iter_mut().find(|o| o.key == target.key) {
                o.health = Some(h);
            }
        }
    }

    // Post-deploy hooks once the rest is applied (and healthy, with wait); awaited even
    // without wait, as Helm does.
    if run_hooks && !post_hooks.is_empty() {
        if failed || timed_out {
            tracing::warn!(owner = %owner.id(), "post-deploy hooks not run: the apply did not succeed");
        } else {
            let outcome = hooks::run_phase(&hook_ctx, &post_hooks, &live, &recorded).await;
            hook_outcomes.push(outcome);
        }
    }
    for outcome in &hook_outcomes {
        objects.extend(outcome.results.iter().cloned());
    }

    // Narrow the inventory to what the app now owns; skip the write when nothing changed.
    if !opts.dry_run && !failed {
        let mut owned = inventory::Narrowed {
            applied: main
                .iter()
                .map(|p| entry_for(p, applied.get(&p.key).and_then(|a| a.fingerprint.clone())))
                .collect(),
            kept: kept_entries,
            ..Default::default()
        };
        if run_hooks {
            // Hooks removed by their delete policy leave the inventory; the rest stay (and are
            // pruned like any object once they leave the source).
            let by_key: HashMap<&ObjectKey, &PlannedObject> =
                planned.iter().map(|p| (&p.key, p)).collect();
            for outcome in &hook_outcomes {
                for (key, fingerprint) in &outcome.live {
                    if let Some(p) = by_key.get(key) {
                        owned.hooks.push(entry_for(p, fingerprint.clone()));
                    }
                }
                owned
                    .hook_records
                    .extend(outcome.succeeded.iter().map(|(key, hash)| HookRecord {
                        key: key.clone(),
                        hash: hash.clone(),
                    }));
            }
        } else {
            // Hooks did not run: keep what the previous run recorded about them.
            (owned.hooks, owned.hook_records) =
                inventory::kept_hooks(previous.as_ref(), &hook_hashes);
        }
        // A migration is finished once a run got through without any failure: from then on
        // only the new identity counts.
        let pending_legacy = previous.as_ref().and_then(|p| p.adopted_from.clone());
        let still_migrating = objects.iter().any(|o| o.action == Action::Failed);
        let template = Inventory {
            app: owner.app.clone(),
            owner: Some(owner.id()),
            source: opts.source.clone(),
            revision: opts.revision.clone(),
            applied_at: now_rfc3339(),
            ..Default::default()
        };
        let next = inventory::narrow(&template, previous.as_ref(), owned, still_migrating);
        let unchanged = previous.as_ref().is_some_and(|p| p.same_content(&next)) && !needs_widening;
        if !unchanged {
            inventory::write(client, &owner, &next, &mut version).await?;
        }
        if let Some(legacy) = opts
            .legacy_app
            .as_ref()
            .filter(|l| !still_migrating && pending_legacy.as_ref() == Some(&l.app))
        {
            // Normally removed right after the widened write; this catches a run that died
            // in between. Re-verified before deleting.
            inventory::delete_legacy(client, &owner, legacy, None).await?;
        }
    }

    Ok(ApplyReport {
        app: owner.app.clone(),
        namespace: owner.namespace.clone(),
        revision: opts.revision.clone(),
        dry_run: opts.dry_run,
        objects,
        requests: counter.snapshot(),
        timed_out,
        prune_skipped,
        duration_ms: started.elapsed().as_millis(),
    })
}

/// Write the widened inventory; when it adopted a pre-upgrade inventory, that one is removed
/// right after (its content now lives in the new one).
async fn write_widened(
    client: &Client,
    owner: &Owner,
    widened: &Inventory,
    version: &mut Option<inventory::Version>,
    adopted_legacy: Option<(inventory::Legacy, inventory::Version)>,
) -> Result<()> {
    inventory::write(client, owner, widened, version).await?;
    if let Some((legacy, legacy_version)) = adopted_legacy {
        inventory::delete_legacy(client, owner, &legacy, Some(&legacy_version)).await?;
    }
    Ok(())
}

/// The namespaces candidates live in (for a Namespace candidate: itself).
fn candidate_namespaces(candidates: &[Candidate]) -> BTreeSet<String> {
    candidates
        .iter()
        .filter_map(|c| match &c.entry.key.namespace {
            Some(ns) => Some(ns.clone()),
            None if c.entry.key.group.is_empty() && c.entry.key.kind == "Namespace" => {
                Some(c.entry.key.name.clone())
            }
            None => None,
        })
        .collect()
}

/// CRDs applied in the foundation phase must be Established before their instances are applied.
async fn wait_for_crds(
    client: &Client,
    batch: &[&PlannedObject],
    applied: &HashMap<ObjectKey, Applied>,
    opts: &ApplyOptions,
    progress: &dyn Progress,
) {
    let targets: Vec<Target> = batch
        .iter()
        .filter(|p| p.key.kind == "CustomResourceDefinition")
        .filter(|p| {
            applied
                .get(&p.key)
                .is_some_and(|a| matches!(a.result.action, Action::Created | Action::Configured))
        })
        .map(|p| Target {
            key: p.key.clone(),
            kind: kind_of(p),
        })
        .collect();
    if targets.is_empty() {
        return;
    }
    let timeout = opts.timeout.min(Duration::from_secs(60));
    let (healths, _) = wait::wait_all(client, &targets, timeout, opts.concurrency, progress).await;
    for (t, h) in targets.iter().zip(healths) {
        if h.state != health::HealthState::Current {
            tracing::warn!(crd = %t.key, "CRD not established: {}", h.message);
        }
    }
}

/// `ferry diff`: server-side dry-run apply of every object and a redacted unified diff against
/// the live object; with `opts.prune`, also what would be pruned. Secret data and every value
/// in `opts.redactor` are redacted in the diffs and in the error.
pub async fn diff(
    client: &Client,
    manifests: Vec<Manifest>,
    opts: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<DiffReport> {
    match diff_unredacted(client, manifests, opts, progress).await {
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
    let mut params = apply::apply_params().dry_run();
    if opts.force_conflicts {
        params = params.force();
    }
    let results: Vec<Result<ObjectDiff>> = futures::stream::iter(
        planned
            .iter()
            .map(|p| {
                let params = params.clone();
                let owner = &owner;
                async move {
                    let api = api_for(client, &kind_of(p), p.key.namespace.as_deref());
                    let live = match api.get_opt(&p.key.name).await {
                        Ok(live) => live,
                        Err(err) if status_code(&err) == Some(404) => None,
                        Err(err) => {
                            return Err(Error::Object {
                                object: p.key.to_string(),
                                message: describe_kube_error(&err),
                            });
                        }
                    };
                    if let Some(live) = &live
                        && let Some(other) = live
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(ownership::ANNOTATION_OWNER))
                        && !owner.is_own_id(other)
                    {
                        return Err(Error::Object {
                            object: p.key.to_string(),
                            message: format!(
                                "already owned by ferry app {other:?}; applying would fail"
                            ),
                        });
                    }
                    let desired = match api
                        .patch(&p.key.name, &params, &Patch::Apply(&p.manifest.object))
                        .await
                    {
                        Ok(obj) => serde_json::to_value(&obj).unwrap_or(Value::Null),
                        // Namespace or CRD created by this same apply: show the intent itself.
                        Err(err) if status_code(&err) == Some(404) && live.is_none() => {
                            serde_json::to_value(&p.manifest.object).unwrap_or(Value::Null)
                        }
                        Err(err) => {
                            return Err(Error::Object {
                                object: p.key.to_string(),
                                message: format!(
                                    "dry-run apply failed: {}",
                                    describe_kube_error(&err)
                                ),
                            });
                        }
                    };
                    let live = live.map(|l| serde_json::to_value(&l).unwrap_or(Value::Null));
                    let mut diff =
                        diff_object_redacted(&p.key, live.as_ref(), Some(&desired), &opts.redactor);
                    diff.hook = match hook_class::phase(&p.manifest) {
                        HookPhase::PreDeploy => Some(HookTiming::PreDeploy),
                        HookPhase::PostDeploy => Some(HookTiming::PostDeploy),
                        HookPhase::Main => None,
                    };
                    Ok(diff)
                }
            })
            .collect::<Vec<_>>(),
    )
    .buffered(opts.concurrency.max(1))
    .collect()
    .await;
    let mut objects = results.into_iter().collect::<Result<Vec<_>>>()?;
    if opts.prune
        && let Some(previous) = previous
    {
        let planned_keys: BTreeSet<&ObjectKey> = planned.iter().map(|p| &p.key).collect();
        let gone: Vec<Entry> = previous
            .objects
            .into_iter()
            .filter(|e| !planned_keys.contains(&e.key))
            .collect();
        let (candidates, _) = resolve_entries(&resolver, gone);
        for c in candidates {
            let api = api_for(client, &c.kind, c.entry.key.namespace.as_deref());
            let Ok(Some(live)) = api.get_opt(&c.entry.key.name).await else {
                continue;
            };
            let annotations = live.metadata.annotations.as_ref();
            let prune_annotation = annotations
                .and_then(|a| a.get(ownership::ANNOTATION_PRUNE))
                .map(String::as_str);
            // Objects `apply` would keep: not ours, opted out, destructive without opt-in.
            if !owner.owns(live.metadata.labels.as_ref(), annotations)
                || prune_annotation == Some("disabled")
                || (prune::is_destructive(&c.entry.key.group, &c.entry.key.kind)
                    && prune_annotation != Some(ownership::PRUNE_ALLOW_DESTRUCTIVE))
            {
                continue;
            }
            let live = serde_json::to_value(&live).unwrap_or(Value::Null);
            objects.push(diff_object_redacted(
                &c.entry.key,
                Some(&live),
                None,
                &opts.redactor,
            ));
        }
    }
    Ok(DiffReport {
        app: owner.app.clone(),
        namespace: owner.namespace,
        objects,
        requests: counter.snapshot(),
    })
}

/// Diff one object. `live == None`: create; `desired == None`: prune. Secret data is redacted;
/// see [`diff_object_redacted`] for other decrypted values.
pub fn diff_object(key: &ObjectKey, live: Option<&Value>, desired: Option<&Value>) -> ObjectDiff {
    diff_object_redacted(key, live, desired, &Redactor::new())
}

/// [`diff_object`], also hiding every value `redactor` knows wherever it is in the object
/// (ConfigMap data, env values, custom resource fields, map keys). The action (change or not)
/// is decided on the real values, so a rotated secret still shows as a change.
pub fn diff_object_redacted(
    key: &ObjectKey,
    live: Option<&Value>,
    desired: Option<&Value>,
    redactor: &Redactor,
) -> ObjectDiff {
    let is_secret = key.group.is_empty() && key.kind == "Secret";
    let mut live = live.map(normalize);
    let mut desired = desired.map(normalize);
    let changed = live != desired;
    if is_secret {
        redact_secret(live.as_mut(), desired.as_mut());
    }
    redact_decrypted(live.as_mut(), desired.as_mut(), redactor);
    let to_yaml = |v: &Option<Value>| v.as_ref().map(yaml).unwrap_or_default();
    let (old, new) = (to_yaml(&live), to_yaml(&desired));
    let action = match (&live, &desired) {
        (None, _) => DiffAction::Create,
        (_, None) => DiffAction::Prune,
        _ if !changed => DiffAction::Unchanged,
        _ => DiffAction::Change,
    };
    let diff = if action == DiffAction::Unchanged {
        String::new()
    } else {
        similar::TextDiff::from_lines(&old, &new)
            .unified_diff()
            .context_radius(3)
            .header(&format!("live/{key}"), &format!("desired/{key}"))
            .to_string()
    };
    ObjectDiff {
        key: key.clone(),
        action,
        diff,
        hook: None,
    }
}

fn yaml(value: &Value) -> String {
    serde_saphyr::to_string(value)
        .unwrap_or_else(|_| serde_json::to_string_pretty(value).unwrap_or_default())
}

/// Strip server-populated and ferry bookkeeping fields so that only intent differences show.
fn normalize(value: &Value) -> Value {
    let mut v = value.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in [
                "managedFields",
                "resourceVersion",
                "uid",
                "generation",
                "creationTimestamp",
                "selfLink",
            ] {
                meta.remove(field);
            }
            if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                for a in [
                    "kubectl.kubernetes.io/last-applied-configuration",
                    "deployment.kubernetes.io/revision",
                    ownership::ANNOTATION_HASH,
                    ownership::ANNOTATION_REVISION,
                ] {
                    annotations.remove(a);
                }
                if annotations.is_empty() {
                    meta.remove("annotations");
                }
            }
        }
    }
    v
}

/// Hide decrypted values in both sides of a diff, pairing leaves by path: where the desired
/// leaf shows a decrypted value, the live leaf at the same path is taken to be an earlier
/// version of the same secret and is hidden whole (a rotated password must not appear as the
/// `-` line); a hidden leaf that changed is marked so the diff still shows a change.
fn redact_decrypted(live: Option<&mut Value>, desired: Option<&mut Value>, redactor: &Redactor) {
    const CHANGED: &str = "<redacted, changed>";
    if redactor.is_empty() {
        return;
    }
    match (live, desired) {
        (Some(live), Some(desired)) => pair(live, desired, redactor),
        (Some(only), None) | (None, Some(only)) => redactor.redact_value(only),
        (None, None) => {}
    }
    fn pair(live: &mut Value, desired: &mut Value, redactor: &Redactor) {
        match (&mut *live, &mut *desired) {
            (Value::Object(l), Value::Object(d)) => {
                for (key, dv) in d.iter_mut() {
                    match l.get_mut(key) {
                        Some(lv) => pair(lv, dv, redactor),
                        None => redactor.redact_value(dv),
                    }
                }
                for (key, lv) in l.iter_mut() {
                    if !d.contains_key(key) {
                        redactor.redact_value(lv);
                    }
                }
                // Keys themselves (rare, but a decrypted value can become a map key).
                for map in [l, d] {
                    if map.keys().any(|k| redactor.reveals(k)) {
                        let old = std::mem::take(map);
                        for (k, v) in old {
                            map.insert(redactor.redact(&k), v);
                        }
                    }
                }
            }
            (Value::Array(l), Value::Array(d)) => {
                let common = l.len().min(d.len());
                for (lv, dv) in l.iter_mut().zip(d.iter_mut()) {
                    pair(lv, dv, redactor);
                }
                l[common..]
                    .iter_mut()
                    .for_each(|v| redactor.redact_value(v));
                d[common..]
                    .iter_mut()
                    .for_each(|v| redactor.redact_value(v));
            }
            _ => {
                let before = desired.clone();
                redactor.redact_value(desired);
                if *desired != before {
                    // The desired value shows a secret: hide the live one whole.
                    if *live == before {
                        *live = desired.clone();
                    } else {
                        *live = Value::String(REDACTED.to_string());
                        if desired.as_str() == Some(REDACTED) {
                            *desired = Value::String(CHANGED.to_string());
                        }
                    }
                } else {
                    redactor.redact_value(live);
                }
            }
        }
    }
}

/// Replace Secret values: unchanged keys show `<redacted>` on both sides, changed keys show
/// `<redacted, changed>` on the desired side, so a diff line appears without the value.
fn redact_secret(live: Option<&mut Value>, desired: Option<&mut Value>) {
    const SAME: &str = "<redacted>";
    const CHANGED: &str = "<redacted, changed>";
    let live_data: serde_json::Map<String, Value> = live
        .as_ref()
        .and_then(|l| l.get("data"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(desired) = desired {
        for field in ["data", "stringData"] {
            if let Some(map) = desired.get_mut(field).and_then(Value::as_object_mut) {
                for (k, v) in map.iter_mut() {
                    let same = field == "data" && live_data.get(k) == Some(v);
                    *v = Value::String(if same { SAME } else { CHANGED }.to_string());
                }
            }
        }
    }
    if let Some(live) = live {
        for field in ["data", "stringData"] {
            if let Some(map) = live.get_mut(field).and_then(Value::as_object_mut) {
                for v in map.values_mut() {
                    *v = Value::String(SAME.to_string());
                }
            }
        }
    }
}

/// Options for [`delete`].
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// The push app (ignored when `release` is set).
    pub app: String,
    /// Delete this Release's app (the agent's finalizer).
    pub release: Option<ReleaseRef>,
    /// Namespace of the inventory (`None`: the client's default namespace).
    pub namespace: Option<String>,
    /// Pre-upgrade app, as in [`ApplyOptions::legacy_app`].
    pub legacy_app: Option<inventory::Legacy>,
    pub dry_run: bool,
    pub concurrency: usize,
    /// Delete Namespaces, CRDs, PVCs and PVs without their `ferry.dev/prune: allow-destructive`
    /// opt-in: `ferry delete --app` (the operator asked for exactly this) but not a Release's
    /// deletion (see `prune`).
    pub allow_destructive: bool,
    /// Namespaces the caller knows are being deleted (the agent reads them with its own
    /// identity); objects there are left to the namespace.
    pub terminating: BTreeSet<String>,
    /// Discovery shared across runs (the agent); `None`: discover afresh for this run.
    pub discovery: Option<Arc<DiscoveryCache>>,
}

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
    let kinds: Vec<(ObjectKey, ResolvedKind)> = candidates
        .iter()
        .map(|c| (c.entry.key.clone(), c.kind.clone()))
        .collect();
    let live = live::live_index(client, &kinds, concurrency).await?;
    let outcomes = prune::delete_owned(
        client,
        candidates,
        &live,
        &owner,
        Action::Deleted,
        &prune::Policy {
            allow_destructive: opts.allow_destructive,
        },
        opts.dry_run,
        concurrency,
    )
    .await;
    objects.extend(outcomes.into_iter().filter_map(|(_, o)| o.result));
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

/// Options for [`status_with`].
#[derive(Debug, Clone, Default)]
pub struct StatusOptions {
    /// The push app (ignored when `release` is set).
    pub app: String,
    /// The status of this Release's app.
    pub release: Option<ReleaseRef>,
    /// Namespace of the inventory (`None`: the client's default namespace).
    pub namespace: Option<String>,
    pub concurrency: usize,
    /// Discovery shared across runs (the agent); `None`: discover afresh for this run.
    pub discovery: Option<Arc<DiscoveryCache>>,
}

/// `ferry status --app`: the inventory, last revision/time, and the health of every object.
pub async fn status(
    client: &Client,
    app: &str,
    namespace: Option<&str>,
    concurrency: usize,
) -> Result<StatusReport> {
    status_of(client, app, None, namespace, concurrency).await
}

/// [`status`] of a push app or (with `release`) of a Release's app.
pub async fn status_of(
    client: &Client,
    app: &str,
    release: Option<&ReleaseRef>,
    namespace: Option<&str>,
    concurrency: usize,
) -> Result<StatusReport> {
    status_with(
        client,
        &StatusOptions {
            app: app.to_string(),
            release: release.cloned(),
            namespace: namespace.map(str::to_string),
            concurrency,
            discovery: None,
        },
    )
    .await
}

/// The status of an app: its inventory (source, revision, when applied) and the health of every
/// object in it, with conditions and recent events for the ones that are not Current.
pub async fn status_with(client: &Client, opts: &StatusOptions) -> Result<StatusReport> {
    let concurrency = opts.concurrency;
    let owner = owner_for(
        client,
        &opts.app,
        opts.release.as_ref(),
        opts.namespace.as_deref(),
    )?;
    // Every request of this run is counted once, by the client itself.
    let counter = RequestCounter::default();
    let counted_client = counted(client, &counter);
    let client = &counted_client;
    let Some(inv) = inventory::read(client, &owner).await?.map(|s| s.inventory) else {
        return Err(no_inventory(
            &owner,
            "it was never applied there (check --app and --namespace)",
        ));
    };
    let mut resolver = discovery::resolver_for(opts.discovery.as_ref(), client, &[]).await?;
    resolver.refresh_for_entries(client, &inv.objects).await?;
    let (candidates, unresolved) = resolve_entries(&resolver, inv.objects.clone());
    let mut objects: Vec<ObjectStatus> = futures::stream::iter(
        candidates
            .into_iter()
            .map(|c| async move {
                let target = Target {
                    key: c.entry.key.clone(),
                    kind: c.kind,
                };
                let mut h = wait::check(client, &target).await;
                if !matches!(
                    h.state,
                    health::HealthState::Current | health::HealthState::NotFound
                ) {
                    let detail = wait::explain(client, &target).await;
                    if !detail.is_empty() {
                        h.message = format!("{}\n{detail}", h.message);
                    }
                }
                ObjectStatus {
                    key: c.entry.key,
                    api_version: c.entry.api_version,
                    health: h,
                }
            })
            .collect::<Vec<_>>(),
    )
    .buffered(concurrency.max(1))
    .collect()
    .await;
    objects.extend(unresolved.into_iter().map(|e| ObjectStatus {
        key: e.key,
        api_version: e.api_version,
        health: health::Health::not_found(),
    }));
    Ok(StatusReport {
        app: owner.app.clone(),
        namespace: owner.namespace,
        source: inv.source,
        revision: inv.revision,
        applied_at: inv.applied_at,
        objects,
    })
}

/// Compile-time proof that the entry points' futures are `Send`, so a driver can `tokio::spawn`
/// them (the agent runs them on its ordinary worker threads). Never called: if a change makes
/// one of them non-`Send` (an `Rc`, a `&dyn` trait object without `Sync`, a lock guard held
/// across an `.await`, a stream closure over borrowed items), the crate stops compiling here.
#[allow(dead_code)]
fn engine_futures_are_send(
    client: &Client,
    manifests: Vec<Manifest>,
    apply_options: &ApplyOptions,
    delete_options: &DeleteOptions,
) {
    fn assert_send<T: Send>(_: T) {}
    assert_send(apply(client, manifests.clone(), apply_options, &NoProgress));
    assert_send(diff(client, manifests, apply_options, &NoProgress));
    assert_send(delete(client, delete_options));
    assert_send(delete_app(client, "app", None, false, 1));
    assert_send(status(client, "app", None, 1));
    assert_send(status_of(client, "app", None, None, 1));
    assert_send(status_with(client, &StatusOptions::default()));
}
