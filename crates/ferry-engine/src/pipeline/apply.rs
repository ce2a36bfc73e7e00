//! `ferry apply` and a Release's reconcile: make the cluster match the rendered manifests.
//!
//! [`apply`] is a list of named steps; each decision they take is a pure function below with a
//! unit test (no cluster):
//!
//! 1. [`plan_objects`]: refuse an empty source with prune, resolve kinds, plan.
//! 2. [`read_state`]: namespaces, the inventory (adopting a pre-upgrade one), live metadata.
//! 3. decide: ferry.yaml `drift.ignore` fields out of existing objects
//!    ([`drift::strip_ignored_planned`]), [`Staging::of`] (main objects by phase, pre/post hooks
//!    in Helm order), with `drift.mode: detect` the hand-edited objects left alone
//!    ([`drift::detect_edited`]), [`should_run_hooks`], what is gone from the source.
//! 4. [`InventoryUpdate::widen`]: the inventory grows before anything is written.
//! 5. [`apply_phases`]: the foundation (Namespaces, CRDs: Established before their instances),
//!    pre-deploy hooks, then wave by wave and phase by phase ([`plan::waves`]); with `--wait`
//!    each wave healthy before the next ([`wave_stop`]).
//! 6. [`prune_gone`] ([`prune_decision`]): delete what left the source, or keep it.
//! 7. [`wait_healthy`]: with `--wait`, until every object is Current.
//! 8. [`run_post_hooks`] ([`post_hooks_run`]): post-deploy hooks once the rest succeeded.
//! 9. [`InventoryUpdate::narrow`]: the inventory shrinks to what the app now owns.
//! 10. the report.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use ferry_api::drift::DriftMode;
use kube::Client;

use super::{
    ApplyOptions, candidate_namespaces, delete::kinds_of, drift, entry_for, now_rfc3339,
    resolve_entries,
};
use crate::cluster::discovery::{self, RunResolver};
use crate::cluster::manager::delete::{self as prune};
use crate::cluster::manager::hooks::PhaseOutcome;
use crate::cluster::manager::live::LiveMeta;
use crate::cluster::manager::wait::Target;
use crate::cluster::manager::{Change, ResourceManager, apply::is_unchanged};
use crate::cluster::requests::{RequestCounter, counted};
use crate::health::{Health, HealthState};
use crate::inventory::{self, Entry, HookRecord, Inventory};
use crate::ownership::Owner;
use crate::plan::waves::{self, Step};
use crate::plan::{self, PlannedObject};
use crate::progress::{Progress, ProgressEvent};
use crate::render::helm::hooks::{self as hook_class, HookPhase};
use crate::report::{Action, ApplyReport, ObjectResult};
use crate::{Error, Manifest, ObjectKey, Result};

/// Render → apply: the push and pull paths both end here. The report's messages and the error
/// (API server refusals echo field values) carry no value from `opts.redactor`.
pub async fn apply(
    client: &Client,
    manifests: Vec<Manifest>,
    opts: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<ApplyReport> {
    match run(client, manifests, opts, progress).await {
        Ok(mut report) => {
            report.redact(&opts.redactor);
            Ok(report)
        }
        Err(err) => Err(opts.redactor.redact_error(err)),
    }
}

async fn run(
    client: &Client,
    manifests: Vec<Manifest>,
    opts: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<ApplyReport> {
    let started = Instant::now();
    // Every request of this run is counted once, by the client itself.
    let counter = RequestCounter::default();
    let counted_client = counted(client, &counter);
    let client = &counted_client;
    let owner = opts.owner(client)?;

    let (mut resolver, mut planned) = plan_objects(client, manifests, opts, &owner).await?;
    progress.event(ProgressEvent::Planned {
        total: planned.len(),
    });
    let mut manager = ResourceManager::new(client.clone(), owner)
        .with_concurrency(opts.concurrency)
        .with_dry_run(opts.dry_run)
        .with_force_conflicts(opts.force_conflicts)
        .with_timeout(opts.timeout)
        .with_health_checks(opts.health_checks.clone());
    let state = read_state(&mut manager, &planned, opts).await?;
    // ferry.yaml `drift.ignore`: fields left to others are not sent for objects that exist.
    drift::strip_ignored_planned(
        &mut planned,
        |key| state.live.contains_key(key),
        &opts.drift.rules,
    );

    // Helm's install/upgrade distinction for hooks: an install until the first run finished.
    let event = match &state.previous {
        Some(previous) if !previous.install_pending => hook_class::DeployEvent::Upgrade,
        _ => hook_class::DeployEvent::Install,
    };
    let staging = Staging::of(&planned, event);
    // ferry.yaml `drift.mode: detect`: hand edits of objects whose intent did not change are
    // reported and left alone.
    let edited = if opts.drift.mode == DriftMode::Detect {
        drift::detect_edited(
            &manager,
            &staging.main,
            &state.live,
            &state.recorded,
            &opts.drift.rules,
            &opts.redactor,
        )
        .await
    } else {
        HashMap::new()
    };
    let planned_keys: BTreeSet<&ObjectKey> = planned.iter().map(|p| &p.key).collect();
    let gone = inventory::gone_from_source(state.previous.as_ref(), &planned_keys);
    let hook_hashes = staging.hook_hashes();
    let run_hooks = should_run_hooks(
        &hook_hashes,
        state.previous.as_ref(),
        opts.prune && !gone.is_empty(),
        staging.main.iter().any(|p| {
            !edited.contains_key(&p.key)
                && !is_unchanged(
                    p,
                    state.live.get(&p.key),
                    state.recorded.get(&p.key).map(String::as_str),
                )
        }),
    );

    let mut update = InventoryUpdate::widen(&manager, &state, &planned, &staging, run_hooks, opts);
    if update.can_write_widened(&state, &manager.owner().namespace) {
        update.write_widened(&manager).await?;
    }

    let wait_waves = opts.wait && !opts.dry_run;
    let Phases {
        applied,
        mut hook_outcomes,
        stopped,
    } = apply_phases(
        &manager,
        &staging,
        &state,
        &edited,
        run_hooks,
        wait_waves,
        &mut update,
        progress,
    )
    .await?;
    let mut objects: Vec<ObjectResult> = planned
        .iter()
        .filter_map(|p| applied.get(&p.key).and_then(|c| c.result.clone()))
        .collect();
    let mut wave_timed_out = false;
    if let Some(stop) = stopped {
        wave_timed_out = stop.timed_out;
        stop.record(&mut objects);
    }
    let failed = objects.iter().any(|o| o.action == Action::Failed);

    let pruned = prune_gone(&manager, &mut resolver, gone, failed, opts, progress).await?;
    objects.extend(pruned.results);

    let timed_out = if opts.wait && !opts.dry_run && !failed {
        wait_healthy(&manager, &staging.main, &mut objects, progress).await
    } else {
        wave_timed_out
    };

    if post_hooks_run(run_hooks, &staging, failed, timed_out) {
        hook_outcomes.push(run_post_hooks(&manager, &staging, &state, progress).await);
    } else if run_hooks && !staging.post_hooks.is_empty() {
        tracing::warn!(owner = %manager.owner().id(), "post-deploy hooks not run: the apply did not succeed");
    }
    for outcome in &hook_outcomes {
        objects.extend(outcome.results.iter().cloned());
    }

    if !opts.dry_run && !failed {
        // A migration is finished once a run got through without any failure: from then on
        // only the new identity counts.
        let still_migrating = objects.iter().any(|o| o.action == Action::Failed);
        let owned = owned_after(
            &planned,
            &staging,
            &applied,
            &hook_outcomes,
            run_hooks,
            state.previous.as_ref(),
            pruned.kept,
        );
        update
            .narrow(&manager, &state, owned, still_migrating, opts)
            .await?;
    }

    let owner = manager.owner();
    Ok(ApplyReport {
        app: owner.app.clone(),
        namespace: owner.namespace.clone(),
        revision: opts.revision.clone(),
        dry_run: opts.dry_run,
        objects,
        requests: counter.snapshot(),
        timed_out,
        prune_skipped: pruned.skipped,
        duration_ms: started.elapsed().as_millis(),
    })
}

/// Step 1: refuse an empty source that would prune everything, resolve kinds (the discovery
/// cache, refreshed for CRDs in the source) and plan.
async fn plan_objects(
    client: &Client,
    manifests: Vec<Manifest>,
    opts: &ApplyOptions,
    owner: &Owner,
) -> Result<(RunResolver, Vec<PlannedObject>)> {
    if manifests.is_empty() && opts.prune && !opts.allow_empty {
        return Err(Error::Refused(format!(
            "the source rendered no objects; with --prune that would delete everything {} owns. Check the path, or pass --allow-empty if that is really intended",
            owner.describe()
        )));
    }
    let resolver = discovery::resolver_for(opts.discovery.as_ref(), client, &manifests).await?;
    let planned = plan::plan(
        manifests,
        &resolver,
        &owner.namespace,
        owner,
        opts.revision.as_deref(),
    )?;
    Ok((resolver, planned))
}

/// What the cluster and the inventory say before anything is written.
struct State {
    /// Namespaces the plan creates that do not exist yet.
    not_yet_created: BTreeSet<String>,
    /// The inventory as read (with an adopted pre-upgrade one merged in).
    previous: Option<Inventory>,
    /// The version every inventory write presents (optimistic concurrency).
    version: Option<inventory::Version>,
    /// A pre-upgrade inventory adopted by this run, removed right after the widened write.
    adopted_legacy: Option<(inventory::Legacy, inventory::Version)>,
    live: HashMap<ObjectKey, LiveMeta>,
    /// Fingerprints the inventory recorded after ferry's last writes.
    recorded: HashMap<ObjectKey, String>,
}

/// Step 2: the namespace check, the inventory and the live metadata (independent reads, run
/// together), then the migration from a pre-upgrade identity (see `ApplyOptions::legacy_app`):
/// adopt its inventory once, accept its ownership marker until the objects carry the new one.
async fn read_state(
    manager: &mut ResourceManager,
    planned: &[PlannedObject],
    opts: &ApplyOptions,
) -> Result<State> {
    let kinds: Vec<_> = planned
        .iter()
        .map(|p| (p.key.clone(), p.resolved_kind()))
        .collect();
    let (not_yet_created, stored, live) = tokio::try_join!(
        manager.check_namespaces(planned),
        inventory::read(manager.client(), manager.owner()),
        manager.live_index(&kinds),
    )?;
    let version = stored.as_ref().map(|s| s.version.clone());
    let mut previous = stored.map(|s| s.inventory);
    let mut adopted_legacy = None;
    if let Some(legacy) = &opts.legacy_app {
        let pending = previous
            .as_ref()
            .is_some_and(|inv| inv.adopted_from.as_ref() == Some(&legacy.app));
        // A pre-upgrade inventory is looked for once (this app has none yet); an explicit
        // push-app hand-over whenever it is asked for (the Release may have run without it).
        if (previous.is_none() || legacy.push_takeover)
            && let Some(old) =
                inventory::read_legacy(manager.client(), manager.owner(), legacy).await?
        {
            tracing::info!(
                owner = %manager.owner().id(),
                "adopting inventory {}/{}",
                manager.owner().namespace,
                Inventory::name(&legacy.app)
            );
            previous = Some(inventory::adopt(
                previous.take(),
                old.inventory,
                &legacy.app,
            ));
            manager.adopt_legacy(&legacy.app);
            adopted_legacy = Some((legacy.clone(), old.version));
        }
        if pending {
            manager.adopt_legacy(&legacy.app);
        }
    }
    let recorded = previous
        .iter()
        .flat_map(|inv| inv.objects.iter())
        .filter_map(|e| e.fingerprint.clone().map(|f| (e.key.clone(), f)))
        .collect();
    Ok(State {
        not_yet_created,
        previous,
        version,
        adopted_legacy,
        live,
        recorded,
    })
}

/// The plan split the way it is applied.
#[derive(Debug)]
pub(super) struct Staging<'a> {
    /// Everything that is not a hook, in plan (phase) order.
    pub main: Vec<&'a PlannedObject>,
    /// Pre-deploy hooks in Helm order (weight, then kind order, then source order).
    pub pre_hooks: Vec<&'a PlannedObject>,
    /// Post-deploy hooks in Helm order.
    pub post_hooks: Vec<&'a PlannedObject>,
    /// Hooks not due on this deploy event (`pre-install` on an upgrade, `post-upgrade` on an
    /// install): neither applied nor pruned; what the inventory knew of them is kept.
    pub idle_hooks: Vec<&'a PlannedObject>,
}

impl<'a> Staging<'a> {
    /// Step 3: split `planned` (already in phase order) into main objects and the hooks due on
    /// `event`.
    pub fn of(planned: &'a [PlannedObject], event: hook_class::DeployEvent) -> Self {
        let mut main = Vec::new();
        let mut pre = Vec::new();
        let mut post = Vec::new();
        let mut idle_hooks = Vec::new();
        for p in planned {
            match hook_class::phase_for(&p.manifest, event) {
                Some(HookPhase::Main) => main.push(p),
                Some(HookPhase::PreDeploy) => pre.push(p),
                Some(HookPhase::PostDeploy) => post.push(p),
                None => idle_hooks.push(p),
            }
        }
        Self {
            main,
            pre_hooks: plan::order_hooks(pre),
            post_hooks: plan::order_hooks(post),
            idle_hooks,
        }
    }

    /// The main objects as the batches they are applied in ([`plan::waves`]): the foundation
    /// first, then one per wave and phase, in that order, empty ones left out. Objects in one
    /// batch are applied concurrently.
    pub fn batches(&self) -> Vec<(Step, Vec<&'a PlannedObject>)> {
        waves::steps(&self.main)
    }

    /// Every hook's intent hash, due this time or not (a changed install hook is a change too).
    pub fn hook_hashes(&self) -> BTreeMap<ObjectKey, String> {
        self.pre_hooks
            .iter()
            .chain(&self.post_hooks)
            .chain(&self.idle_hooks)
            .map(|p| (p.key.clone(), p.hash.clone()))
            .collect()
    }
}

/// Step 3: hooks run (like `helm upgrade`) whenever anything in the app changes, even if the
/// hook itself did not: on the first run, when a hook changed (or was added or removed), when
/// prune removes something, or when a main object would be written. A run where nothing changed
/// runs nothing and writes nothing.
pub(super) fn should_run_hooks(
    hook_hashes: &BTreeMap<ObjectKey, String>,
    previous: Option<&Inventory>,
    prune_removes: bool,
    main_changed: bool,
) -> bool {
    let Some(previous) = previous else {
        return !hook_hashes.is_empty();
    };
    let previous_hooks: BTreeMap<ObjectKey, String> = previous
        .hooks
        .iter()
        .map(|h| (h.key.clone(), h.hash.clone()))
        .collect();
    !hook_hashes.is_empty() && (*hook_hashes != previous_hooks || prune_removes || main_changed)
}

/// The inventory through the run: widened before the first write, narrowed after the last.
struct InventoryUpdate {
    widened: Inventory,
    /// The widened inventory differs from the stored one (or there is none under this
    /// identity yet, or one was adopted) and must be written before anything is applied.
    needs_widening: bool,
    written: bool,
    version: Option<inventory::Version>,
    adopted_legacy: Option<(inventory::Legacy, inventory::Version)>,
}

impl InventoryUpdate {
    /// Step 4: the union of the stored inventory and everything this run may create (see
    /// `inventory` for why).
    fn widen(
        manager: &ResourceManager,
        state: &State,
        planned: &[PlannedObject],
        staging: &Staging<'_>,
        run_hooks: bool,
        opts: &ApplyOptions,
    ) -> Self {
        let owner = manager.owner();
        let hooks: HashSet<&ObjectKey> = staging
            .pre_hooks
            .iter()
            .chain(&staging.post_hooks)
            .chain(&staging.idle_hooks)
            .map(|p| &p.key)
            .collect();
        // In plan order; hooks only when they run this time.
        let applying: Vec<Entry> = planned
            .iter()
            .filter(|p| run_hooks || !hooks.contains(&p.key))
            .map(|p| entry_for(p, None))
            .collect();
        let (widened, grew) = inventory::widen(
            state.previous.as_ref(),
            Inventory {
                app: owner.app.clone(),
                owner: Some(owner.id()),
                source: opts.source.clone(),
                install_pending: true,
                ..Default::default()
            },
            &applying,
        );
        // `version.is_none()`: no inventory under this identity yet (first run, or adopting one).
        let needs_widening = grew || state.version.is_none() || state.adopted_legacy.is_some();
        Self {
            widened,
            needs_widening,
            written: !needs_widening || opts.dry_run,
            version: state.version.clone(),
            adopted_legacy: state.adopted_legacy.clone(),
        }
    }

    /// Whether the widened inventory can be written now: its namespace exists (else it is
    /// written right after the foundation phase created it).
    fn can_write_widened(&self, state: &State, namespace: &str) -> bool {
        !self.written && !state.not_yet_created.contains(namespace)
    }

    /// Write the widened inventory if it still has to be; when it adopted a pre-upgrade
    /// inventory, that one is removed right after (its content now lives in the new one).
    async fn write_widened(&mut self, manager: &ResourceManager) -> Result<()> {
        if self.written {
            return Ok(());
        }
        self.widened.applied_at = now_rfc3339();
        let (client, owner) = (manager.client(), manager.owner());
        inventory::write(client, owner, &self.widened, &mut self.version).await?;
        if let Some((legacy, legacy_version)) = self.adopted_legacy.take() {
            inventory::delete_legacy(client, owner, &legacy, Some(&legacy_version)).await?;
        }
        self.written = true;
        Ok(())
    }

    /// Step 9: write exactly what the app now owns, unless nothing changed; finish a pending
    /// migration.
    async fn narrow(
        &mut self,
        manager: &ResourceManager,
        state: &State,
        owned: inventory::Narrowed,
        still_migrating: bool,
        opts: &ApplyOptions,
    ) -> Result<()> {
        let (client, owner) = (manager.client(), manager.owner());
        let previous = state.previous.as_ref();
        let pending_legacy = previous.and_then(|p| p.adopted_from.clone());
        let template = Inventory {
            app: owner.app.clone(),
            owner: Some(owner.id()),
            source: opts.source.clone(),
            revision: opts.revision.clone(),
            applied_at: now_rfc3339(),
            ..Default::default()
        };
        let next = inventory::narrow(&template, previous, owned, still_migrating);
        let unchanged = previous.is_some_and(|p| p.same_content(&next)) && !self.needs_widening;
        if !unchanged {
            inventory::write(client, owner, &next, &mut self.version).await?;
        }
        if let Some(legacy) = opts
            .legacy_app
            .as_ref()
            .filter(|l| !still_migrating && pending_legacy.as_ref() == Some(&l.app))
        {
            // Normally removed right after the widened write; this catches a run that died
            // in between. Re-verified before deleting.
            inventory::delete_legacy(client, owner, legacy, None).await?;
        }
        Ok(())
    }
}

/// What [`apply_phases`] did.
struct Phases {
    applied: HashMap<ObjectKey, Change>,
    hook_outcomes: Vec<PhaseOutcome>,
    /// A wave that was not healthy (with waiting on), and what was therefore not applied.
    stopped: Option<WaveStop>,
}

/// Step 5: apply the main objects batch by batch. Pre-deploy hooks go after namespaces and CRDs
/// (Helm installs `crds/` first) and before everything else; a failed one stops the run before
/// anything else is applied. After the foundation batch the widened inventory is written (if its
/// namespace only exists now) and new CRDs are awaited until Established. With `wait_waves`,
/// each wave but the last must be healthy before the next is applied ([`wave_stop`]).
#[allow(clippy::too_many_arguments)]
async fn apply_phases(
    manager: &ResourceManager,
    staging: &Staging<'_>,
    state: &State,
    edited: &HashMap<ObjectKey, std::result::Result<Vec<String>, String>>,
    run_hooks: bool,
    wait_waves: bool,
    update: &mut InventoryUpdate,
    progress: &dyn Progress,
) -> Result<Phases> {
    let mut applied: HashMap<ObjectKey, Change> = HashMap::new();
    let mut hook_outcomes = Vec::new();
    let mut pre_hooks_done = !run_hooks || staging.pre_hooks.is_empty();
    let batches = staging.batches();
    for (i, (step, batch)) in batches.iter().enumerate() {
        if !pre_hooks_done && step.wave.is_some() {
            hook_outcomes.push(run_pre_hooks(manager, staging, state, progress).await?);
            pre_hooks_done = true;
        }
        let (held, to_apply): (Vec<&PlannedObject>, Vec<&PlannedObject>) = batch
            .iter()
            .copied()
            .partition(|p| edited.contains_key(&p.key));
        let changes = manager
            .apply_batch(&to_apply, &state.live, &state.recorded, progress)
            .await;
        applied.extend(changes.into_map());
        for p in held {
            let change = left_in_place(p, &edited[&p.key], state.recorded.get(&p.key));
            if let Some(action) = change.action() {
                progress.event(ProgressEvent::Applied {
                    key: &p.key,
                    action,
                });
            }
            applied.insert(p.key.clone(), change);
        }
        let Some(wave) = step.wave else {
            update.write_widened(manager).await?;
            if !manager.dry_run() {
                wait_for_crds(manager, &crds_to_wait(batch, &applied), progress).await;
            }
            continue;
        };
        let rest = &batches[i + 1..];
        let next_wave_follows = rest
            .first()
            .is_some_and(|(next, _)| next.wave != Some(wave));
        if !(wait_waves && next_wave_follows) {
            continue;
        }
        let members: Vec<&PlannedObject> = staging
            .main
            .iter()
            .copied()
            .filter(|p| Step::of(p).wave == Some(wave))
            .collect();
        let stop = if members.iter().any(|p| failed_to_apply(&applied, p)) {
            // An object of this wave failed to apply: the next waves wait for a fix.
            wave_stop(wave, &members, &applied, Vec::new(), rest)
        } else {
            let targets: Vec<Target> = members.iter().copied().map(target_of).collect();
            let (healths, timed_out) = manager.wait(&targets, manager.timeout(), progress).await;
            let healths = members.iter().map(|p| p.key.clone()).zip(healths).collect();
            wave_stop(wave, &members, &applied, healths, rest)
                .map(|stop| WaveStop { timed_out, ..stop })
        };
        if stop.is_some() {
            return Ok(Phases {
                applied,
                hook_outcomes,
                stopped: stop,
            });
        }
    }
    if !pre_hooks_done {
        hook_outcomes.push(run_pre_hooks(manager, staging, state, progress).await?);
    }
    Ok(Phases {
        applied,
        hook_outcomes,
        stopped: None,
    })
}

/// The report line of an object [`drift::detect_edited`] found edited (or could not compare):
/// not written, and its inventory entry keeps the fingerprint of ferry's last write, so the
/// next apply finds the same drift until the source changes the object or the mode is
/// `correct`.
fn left_in_place(
    p: &PlannedObject,
    found: &std::result::Result<Vec<String>, String>,
    recorded: Option<&String>,
) -> Change {
    let mut result = ObjectResult::new(p.key.clone(), p.api_version(), Action::Drifted);
    result.source = Some(p.manifest.origin.to_string());
    match found {
        Ok(paths) => {
            result.message = Some(
                "edited in the cluster since ferry's last apply, unchanged in the source: left as it is (ferry.yaml drift.mode: detect; change it in the source or set mode correct to overwrite)"
                    .to_string(),
            );
            result.drift = paths.clone();
        }
        Err(message) => {
            result.action = Action::Failed;
            result.message = Some(message.clone());
        }
    }
    Change {
        key: p.key.clone(),
        result: Some(result),
        fingerprint: recorded.cloned(),
        stays: true,
    }
}

fn target_of(p: &PlannedObject) -> Target {
    Target {
        key: p.key.clone(),
        kind: p.resolved_kind(),
    }
}

fn failed_to_apply(applied: &HashMap<ObjectKey, Change>, p: &PlannedObject) -> bool {
    applied
        .get(&p.key)
        .is_some_and(|c| c.action() == Some(Action::Failed))
}

/// A wave that did not become healthy: its objects' health, and the later waves' objects,
/// which were not applied.
#[derive(Debug)]
pub(super) struct WaveStop {
    pub healths: Vec<(ObjectKey, Health)>,
    pub held_back: Vec<ObjectResult>,
    pub timed_out: bool,
}

impl WaveStop {
    /// Put the wave's health on its report lines and add the held-back objects as failed.
    fn record(self, objects: &mut Vec<ObjectResult>) {
        for (key, health) in self.healths {
            if let Some(o) = objects.iter_mut().find(|o| o.key == key) {
                o.health = Some(health);
            }
        }
        objects.extend(self.held_back);
    }
}

/// Step 5's decision after a wave was applied (and, unless an object failed to apply, awaited):
/// `None` when every object applied and is Current, so the next wave may go; else the objects of
/// the later batches (`rest`) are held back, each naming the wave and the first object that
/// stopped it.
pub(super) fn wave_stop(
    wave: i32,
    members: &[&PlannedObject],
    applied: &HashMap<ObjectKey, Change>,
    healths: Vec<(ObjectKey, Health)>,
    rest: &[(Step, Vec<&PlannedObject>)],
) -> Option<WaveStop> {
    let apply_failure = members
        .iter()
        .find(|p| failed_to_apply(applied, p))
        .map(|p| format!("{} failed to apply", p.key));
    let unhealthy = healths
        .iter()
        .find(|(_, h)| h.state != HealthState::Current)
        .map(|(key, h)| {
            let first_line = h.message.lines().next().unwrap_or_default();
            format!("{key} is {} ({first_line})", h.state.as_str())
        });
    let why = apply_failure.or(unhealthy)?;
    let held_back = rest
        .iter()
        .flat_map(|(_, batch)| batch.iter())
        .map(|p| {
            let mut r = ObjectResult::new(p.key.clone(), p.api_version(), Action::Failed)
                .with_message(format!(
                    "not applied: wave {wave} did not become healthy: {why}"
                ));
            r.source = Some(p.manifest.origin.to_string());
            r
        })
        .collect();
    Some(WaveStop {
        healths,
        held_back,
        timed_out: false,
    })
}

async fn run_pre_hooks(
    manager: &ResourceManager,
    staging: &Staging<'_>,
    state: &State,
    progress: &dyn Progress,
) -> Result<PhaseOutcome> {
    let outcome = manager
        .run_hooks(&staging.pre_hooks, &state.live, &state.recorded, progress)
        .await;
    if let Some((key, message)) = &outcome.failure {
        return Err(Error::Object {
            object: key.to_string(),
            message: format!(
                "pre-deploy hook failed, nothing else of {} was applied or pruned: {message}",
                manager.owner().describe()
            ),
        });
    }
    Ok(outcome)
}

/// CRDs of a foundation batch that this run created or changed: they must be Established
/// before their instances are applied.
fn crds_to_wait(batch: &[&PlannedObject], applied: &HashMap<ObjectKey, Change>) -> Vec<Target> {
    batch
        .iter()
        .filter(|p| p.key.kind == "CustomResourceDefinition")
        .filter(|p| {
            applied
                .get(&p.key)
                .is_some_and(|c| matches!(c.action(), Some(Action::Created | Action::Configured)))
        })
        .map(|p| Target {
            key: p.key.clone(),
            kind: p.resolved_kind(),
        })
        .collect()
}

async fn wait_for_crds(manager: &ResourceManager, targets: &[Target], progress: &dyn Progress) {
    if targets.is_empty() {
        return;
    }
    let timeout = manager.timeout().min(Duration::from_secs(60));
    let (healths, _) = manager.wait(targets, timeout, progress).await;
    for (t, h) in targets.iter().zip(healths) {
        if h.state != HealthState::Current {
            tracing::warn!(crd = %t.key, "CRD not established: {}", h.message);
        }
    }
}

/// What prune decided for the entries gone from the source.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PruneDecision {
    /// Nothing left the source.
    Nothing,
    /// Without `--prune`: reported as kept, they stay in the inventory.
    KeepAll,
    /// Something failed to apply: nothing is pruned (they stay), and the report says why.
    SkipAll(&'static str),
    /// Delete what is provably ours.
    Prune,
}

/// Step 6's decision.
pub(super) fn prune_decision(gone: &[Entry], prune: bool, apply_failed: bool) -> PruneDecision {
    if gone.is_empty() {
        PruneDecision::Nothing
    } else if !prune {
        PruneDecision::KeepAll
    } else if apply_failed {
        PruneDecision::SkipAll("some objects failed to apply; nothing was pruned")
    } else {
        PruneDecision::Prune
    }
}

/// What prune did: report lines, entries that stay in the inventory, and why nothing was
/// pruned (if so).
#[derive(Default)]
struct Pruned {
    results: Vec<ObjectResult>,
    kept: Vec<Entry>,
    skipped: Option<String>,
}

/// Step 6: delete what left the source ([`prune_decision`]). Kinds the cluster no longer serves
/// and objects in terminating namespaces are not deleted; what was not deleted stays in the
/// inventory.
async fn prune_gone(
    manager: &ResourceManager,
    resolver: &mut RunResolver,
    gone: Vec<Entry>,
    apply_failed: bool,
    opts: &ApplyOptions,
    progress: &dyn Progress,
) -> Result<Pruned> {
    let mut out = Pruned::default();
    match prune_decision(&gone, opts.prune, apply_failed) {
        PruneDecision::Nothing => return Ok(out),
        PruneDecision::KeepAll => {
            out.results = gone
                .iter()
                .map(|e| {
                    ObjectResult::new(e.key.clone(), e.api_version.clone(), Action::Kept)
                        .with_message("gone from the source; not deleted without --prune")
                })
                .collect();
            out.kept = gone;
            return Ok(out);
        }
        PruneDecision::SkipAll(why) => {
            out.skipped = Some(why.to_string());
            out.kept = gone;
            return Ok(out);
        }
        PruneDecision::Prune => {}
    }
    resolver
        .refresh_for_entries(manager.client(), &gone)
        .await?;
    let (candidates, unresolved) = resolve_entries(resolver, gone);
    for e in unresolved {
        out.results.push(
            ObjectResult::new(e.key.clone(), e.api_version.clone(), Action::Kept)
                .with_message("its kind is no longer served by the cluster; left in the inventory"),
        );
        out.kept.push(e);
    }
    // Objects in a namespace being deleted go with it (see `cluster::manager::delete`).
    let terminating = manager
        .terminating_namespaces(candidate_namespaces(&candidates), &BTreeSet::new())
        .await;
    let (candidates, skipped) = prune::skip_terminating(candidates, &terminating);
    out.results.extend(skipped);
    let live = manager.live_index(&kinds_of(&candidates)).await?;
    let mut entries: HashMap<ObjectKey, Entry> = candidates
        .iter()
        .map(|c| (c.entry.key.clone(), c.entry.clone()))
        .collect();
    let deleted = manager
        .delete_owned(candidates, &live, Action::Pruned, &prune::Policy::default())
        .await;
    for change in deleted.changes {
        if let Some(result) = change.result {
            progress.event(ProgressEvent::Pruned {
                key: &result.key,
                action: result.action,
            });
            out.results.push(result);
        }
        if change.stays
            && let Some(entry) = entries.remove(&change.key)
        {
            out.kept.push(entry);
        }
    }
    Ok(out)
}

/// Step 7: wait until every main object is Current (or the timeout); their health goes on their
/// report lines. Returns whether the deadline was hit.
async fn wait_healthy(
    manager: &ResourceManager,
    main: &[&PlannedObject],
    objects: &mut [ObjectResult],
    progress: &dyn Progress,
) -> bool {
    let targets: Vec<Target> = main
        .iter()
        .map(|p| Target {
            key: p.key.clone(),
            kind: p.resolved_kind(),
        })
        .collect();
    let (healths, timed_out) = manager.wait(&targets, manager.timeout(), progress).await;
    for (target, h) in targets.iter().zip(healths) {
        if let Some(o) = objects.iter_mut().find(|o| o.key == target.key) {
            o.health = Some(h);
        }
    }
    timed_out
}

/// Step 8's decision: post-deploy hooks run once the rest is applied (and healthy, with
/// `--wait`); awaited even without `--wait`, as Helm does.
pub(super) fn post_hooks_run(
    run_hooks: bool,
    staging: &Staging<'_>,
    apply_failed: bool,
    timed_out: bool,
) -> bool {
    run_hooks && !staging.post_hooks.is_empty() && !apply_failed && !timed_out
}

/// Step 8.
async fn run_post_hooks(
    manager: &ResourceManager,
    staging: &Staging<'_>,
    state: &State,
    progress: &dyn Progress,
) -> PhaseOutcome {
    manager
        .run_hooks(&staging.post_hooks, &state.live, &state.recorded, progress)
        .await
}

/// What the app owns after a successful run: the main objects with their new fingerprints,
/// the hooks still in the cluster (hooks removed by their delete policy leave the inventory;
/// the rest stay and are pruned like any object once they leave the source) or, when hooks did
/// not run, what the previous run recorded about them, and the entries prune kept.
fn owned_after(
    planned: &[PlannedObject],
    staging: &Staging<'_>,
    applied: &HashMap<ObjectKey, Change>,
    hook_outcomes: &[PhaseOutcome],
    run_hooks: bool,
    previous: Option<&Inventory>,
    kept: Vec<Entry>,
) -> inventory::Narrowed {
    let mut owned = inventory::Narrowed {
        applied: staging
            .main
            .iter()
            .map(|p| entry_for(p, applied.get(&p.key).and_then(|c| c.fingerprint.clone())))
            .collect(),
        kept,
        ..Default::default()
    };
    if run_hooks {
        let by_key: HashMap<&ObjectKey, &PlannedObject> =
            planned.iter().map(|p| (&p.key, p)).collect();
        for outcome in hook_outcomes {
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
        // Hooks not due this time keep their inventory entries, and are recorded at their
        // current hash: the next run with nothing changed must not run the hooks (e.g. the
        // upgrade hooks right after the install).
        let idle: BTreeMap<ObjectKey, String> = staging
            .idle_hooks
            .iter()
            .map(|p| (p.key.clone(), p.hash.clone()))
            .collect();
        owned.hooks.extend(inventory::kept_hooks(previous, &idle).0);
        owned
            .hook_records
            .extend(idle.into_iter().map(|(key, hash)| HookRecord { key, hash }));
    } else {
        (owned.hooks, owned.hook_records) = inventory::kept_hooks(previous, &staging.hook_hashes());
    }
    owned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Phase;
    use kube::api::ApiResource;
    use kube::core::GroupVersionKind;

    /// A planned object as `plan::plan` makes it, without a cluster.
    fn planned(yaml: &str) -> PlannedObject {
        let manifest = crate::yaml::parse_bytes(yaml.as_bytes(), std::path::Path::new("t.yaml"))
            .expect("parse")
            .remove(0);
        let api_version = manifest.api_version().to_string();
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let kind = manifest.kind().to_string();
        let key = ObjectKey {
            group: group.to_string(),
            kind: kind.clone(),
            namespace: Some("ns".into()),
            name: manifest.name().to_string(),
        };
        PlannedObject {
            resource: ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind)),
            namespaced: true,
            phase: Phase::of(group, &kind),
            wave: plan::waves::wave_of(&manifest).expect("wave"),
            hash: plan::intent_hash(&manifest),
            key,
            manifest,
        }
    }

    fn object(kind: &str, name: &str) -> PlannedObject {
        let api_version = match kind {
            "Deployment" => "apps/v1",
            "Job" => "batch/v1",
            _ => "v1",
        };
        planned(&format!(
            "apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: {name}}}\n"
        ))
    }

    fn hook(name: &str, when: &str, weight: i64) -> PlannedObject {
        planned(&format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\n  annotations:\n    helm.sh/hook: {when}\n    helm.sh/hook-weight: \"{weight}\"\n"
        ))
    }

    fn sorted(mut objects: Vec<PlannedObject>) -> Vec<PlannedObject> {
        objects.sort_by_key(|p| p.phase);
        objects
    }

    fn names(objects: &[&PlannedObject]) -> Vec<String> {
        objects.iter().map(|p| p.key.name.clone()).collect()
    }

    #[test]
    fn staging_orders_batches_by_phase_and_hooks_like_helm() {
        let plan = sorted(vec![
            object("Deployment", "web"),
            hook("migrate-late", "pre-install,pre-upgrade", 5),
            object("Service", "web"),
            object("ConfigMap", "settings"),
            hook("notify", "post-install,post-upgrade", 0),
            hook("migrate-early", "pre-upgrade,pre-install", -1),
            object("Namespace", "ns"),
        ]);
        let staging = Staging::of(&plan, hook_class::DeployEvent::Upgrade);
        assert_eq!(names(&staging.pre_hooks), ["migrate-early", "migrate-late"]);
        assert_eq!(names(&staging.post_hooks), ["notify"]);
        let batches: Vec<(Phase, Vec<String>)> = staging
            .batches()
            .into_iter()
            .map(|(step, batch)| (step.phase, names(&batch)))
            .collect();
        assert_eq!(
            batches,
            vec![
                (Phase::Foundation, vec!["ns".to_string()]),
                (Phase::Config, vec!["settings".to_string()]),
                (Phase::Network, vec!["web".to_string()]),
                (Phase::Workload, vec!["web".to_string()]),
            ],
            "one batch per non-empty phase, dependencies first; hooks are not in them"
        );
        assert_eq!(staging.hook_hashes().len(), 3);
    }

    fn in_wave(kind: &str, name: &str, wave: &str) -> PlannedObject {
        let api_version = match kind {
            "Deployment" => "apps/v1",
            "Job" => "batch/v1",
            _ => "v1",
        };
        planned(&format!(
            "apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: {name}\n  annotations: {{ferry.dev/wave: \"{wave}\"}}\n"
        ))
    }

    #[test]
    fn waves_order_after_the_foundation_then_by_kind_inside_a_wave() {
        let plan = sorted(vec![
            in_wave("Deployment", "web", "2"),
            in_wave("Job", "migrate", "1"),
            in_wave("Namespace", "ns", "5"),
            in_wave("ConfigMap", "late-settings", "2"),
            planned(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: early\n  annotations: {argocd.argoproj.io/sync-wave: \"-1\"}\n",
            ),
            object("ConfigMap", "settings"),
        ]);
        let staging = Staging::of(&plan, hook_class::DeployEvent::Upgrade);
        let batches: Vec<(Option<i32>, Phase, Vec<String>)> = staging
            .batches()
            .into_iter()
            .map(|(step, batch)| (step.wave, step.phase, names(&batch)))
            .collect();
        assert_eq!(
            batches,
            vec![
                (None, Phase::Foundation, vec!["ns".to_string()]),
                (Some(-1), Phase::Network, vec!["early".to_string()]),
                (Some(0), Phase::Config, vec!["settings".to_string()]),
                (Some(1), Phase::Workload, vec!["migrate".to_string()]),
                (Some(2), Phase::Config, vec!["late-settings".to_string()]),
                (Some(2), Phase::Workload, vec!["web".to_string()]),
            ],
            "namespaces first whatever their wave; then wave by wave, kind order inside one"
        );
        assert_eq!(waves::waves(&staging.main), vec![-1, 0, 1, 2]);
    }

    fn applied_as(p: &PlannedObject, action: Action) -> (ObjectKey, Change) {
        (
            p.key.clone(),
            Change {
                key: p.key.clone(),
                result: Some(ObjectResult::new(p.key.clone(), p.api_version(), action)),
                fingerprint: None,
                stays: true,
            },
        )
    }

    #[test]
    fn a_wave_that_is_not_healthy_holds_back_the_later_waves() {
        let plan = sorted(vec![
            in_wave("Job", "migrate", "1"),
            in_wave("Deployment", "web", "2"),
            in_wave("ConfigMap", "settings", "2"),
        ]);
        let staging = Staging::of(&plan, hook_class::DeployEvent::Upgrade);
        let batches = staging.batches();
        let job = staging
            .main
            .iter()
            .find(|p| p.key.name == "migrate")
            .unwrap();
        let members = [*job];
        let rest = &batches[1..];
        let created: HashMap<ObjectKey, Change> = [applied_as(job, Action::Created)].into();

        let healthy = vec![(job.key.clone(), Health::current())];
        assert!(wave_stop(1, &members, &created, healthy, rest).is_none());

        let running = vec![(job.key.clone(), Health::progress("job running\nevents..."))];
        let stop = wave_stop(1, &members, &created, running, rest).expect("held back");
        let held: Vec<&str> = stop.held_back.iter().map(|r| r.key.name.as_str()).collect();
        assert_eq!(held, ["settings", "web"]);
        for r in &stop.held_back {
            assert_eq!(r.action, Action::Failed);
            let message = r.message.as_deref().unwrap_or_default();
            assert!(message.contains("wave 1"), "{message}");
            assert!(message.contains("migrate"), "{message}");
            assert!(message.contains("in-progress (job running)"), "{message}");
        }

        let failed: HashMap<ObjectKey, Change> = [applied_as(job, Action::Failed)].into();
        let stop = wave_stop(1, &members, &failed, Vec::new(), rest).expect("held back");
        assert!(
            stop.held_back[0]
                .message
                .as_deref()
                .is_some_and(|m| m.contains("failed to apply")),
            "{stop:?}"
        );
    }

    #[test]
    fn hooks_not_due_on_this_event_are_kept_and_recorded() {
        use hook_class::DeployEvent::{Install, Upgrade};
        let plan = sorted(vec![
            object("ConfigMap", "a"),
            hook("init", "pre-install", 0),
            hook("migrate", "pre-upgrade", 0),
        ]);
        let install = Staging::of(&plan, Install);
        assert_eq!(names(&install.pre_hooks), ["init"]);
        assert_eq!(names(&install.idle_hooks), ["migrate"]);
        let upgrade = Staging::of(&plan, Upgrade);
        assert_eq!(names(&upgrade.pre_hooks), ["migrate"]);
        assert_eq!(names(&upgrade.idle_hooks), ["init"]);
        // Both are change-detected whichever is due.
        assert_eq!(upgrade.hook_hashes().len(), 2);

        // An upgrade where hooks ran: the idle install hook keeps its entry (it still exists
        // and is pruned once it leaves the source) and is recorded at its current hash, so the
        // next run with nothing changed runs nothing.
        let init_entry = Entry {
            api_version: "batch/v1".into(),
            key: upgrade.idle_hooks[0].key.clone(),
            fingerprint: Some("g1".into()),
        };
        let previous = Inventory {
            objects: vec![init_entry.clone()],
            hooks: vec![hook_record(upgrade.idle_hooks[0])],
            ..Default::default()
        };
        let ran = PhaseOutcome {
            succeeded: vec![(
                upgrade.pre_hooks[0].key.clone(),
                upgrade.pre_hooks[0].hash.clone(),
            )],
            ..Default::default()
        };
        let owned = owned_after(
            &plan,
            &upgrade,
            &HashMap::new(),
            &[ran],
            true,
            Some(&previous),
            Vec::new(),
        );
        assert_eq!(owned.hooks, vec![init_entry]);
        let recorded: BTreeMap<ObjectKey, String> = owned
            .hook_records
            .iter()
            .map(|h| (h.key.clone(), h.hash.clone()))
            .collect();
        assert_eq!(recorded, upgrade.hook_hashes());
        let next = Inventory {
            hooks: owned.hook_records.clone(),
            ..Default::default()
        };
        assert!(!should_run_hooks(
            &upgrade.hook_hashes(),
            Some(&next),
            false,
            false
        ));
    }

    fn hook_record(p: &PlannedObject) -> HookRecord {
        HookRecord {
            key: p.key.clone(),
            hash: p.hash.clone(),
        }
    }

    #[test]
    fn hooks_run_when_anything_changes_and_only_then() {
        let plan = sorted(vec![
            object("ConfigMap", "a"),
            hook("migrate", "pre-upgrade", 0),
        ]);
        let staging = Staging::of(&plan, hook_class::DeployEvent::Upgrade);
        let hashes = staging.hook_hashes();
        let ran_before = Inventory {
            hooks: vec![hook_record(staging.pre_hooks[0])],
            ..Default::default()
        };
        assert!(should_run_hooks(&hashes, None, false, false), "first run");
        assert!(
            !should_run_hooks(&hashes, Some(&ran_before), false, false),
            "nothing changed: nothing runs"
        );
        assert!(
            should_run_hooks(&hashes, Some(&ran_before), false, true),
            "a main object changed"
        );
        assert!(
            should_run_hooks(&hashes, Some(&ran_before), true, false),
            "prune removes something"
        );
        let changed_hook = Inventory {
            hooks: vec![HookRecord {
                hash: "older".into(),
                ..hook_record(staging.pre_hooks[0])
            }],
            ..Default::default()
        };
        assert!(
            should_run_hooks(&hashes, Some(&changed_hook), false, false),
            "the hook changed"
        );
        assert!(
            !should_run_hooks(&BTreeMap::new(), None, true, true),
            "no hooks, nothing to run"
        );
    }

    fn gone_entry() -> Entry {
        Entry {
            api_version: "v1".into(),
            key: object("ConfigMap", "old").key,
            fingerprint: None,
        }
    }

    #[test]
    fn prune_deletes_only_with_prune_and_a_clean_apply() {
        assert_eq!(prune_decision(&[], true, false), PruneDecision::Nothing);
        let gone = [gone_entry()];
        assert_eq!(prune_decision(&gone, false, false), PruneDecision::KeepAll);
        assert_eq!(prune_decision(&gone, false, true), PruneDecision::KeepAll);
        assert!(matches!(
            prune_decision(&gone, true, true),
            PruneDecision::SkipAll(_)
        ));
        assert_eq!(prune_decision(&gone, true, false), PruneDecision::Prune);
    }

    #[test]
    fn post_hooks_need_a_successful_apply() {
        let plan = sorted(vec![
            object("ConfigMap", "a"),
            hook("notify", "post-install,post-upgrade", 0),
        ]);
        let staging = Staging::of(&plan, hook_class::DeployEvent::Upgrade);
        assert!(post_hooks_run(true, &staging, false, false));
        assert!(
            !post_hooks_run(false, &staging, false, false),
            "hooks not due"
        );
        assert!(
            !post_hooks_run(true, &staging, true, false),
            "an object failed"
        );
        assert!(
            !post_hooks_run(true, &staging, false, true),
            "not healthy in time"
        );
        let no_post = sorted(vec![object("ConfigMap", "a")]);
        assert!(!post_hooks_run(
            true,
            &Staging::of(&no_post, hook_class::DeployEvent::Upgrade),
            false,
            false
        ));
    }

    #[test]
    fn only_created_or_changed_crds_are_awaited() {
        let crd = planned(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\n",
        );
        let ns = object("Namespace", "ns");
        let batch = [&crd, &ns];
        let change = |p: &PlannedObject, action: Action| Change {
            key: p.key.clone(),
            result: Some(ObjectResult::new(p.key.clone(), p.api_version(), action)),
            fingerprint: None,
            stays: true,
        };
        let mut applied: HashMap<ObjectKey, Change> = [
            (crd.key.clone(), change(&crd, Action::Created)),
            (ns.key.clone(), change(&ns, Action::Created)),
        ]
        .into();
        let targets = crds_to_wait(&batch, &applied);
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].key, crd.key);
        applied.insert(crd.key.clone(), change(&crd, Action::Unchanged));
        assert!(crds_to_wait(&batch, &applied).is_empty());
    }

    #[test]
    fn the_narrowed_inventory_keeps_hooks_that_did_not_run() {
        let plan = sorted(vec![
            object("ConfigMap", "a"),
            hook("migrate", "pre-upgrade", 0),
        ]);
        let staging = Staging::of(&plan, hook_class::DeployEvent::Upgrade);
        let hook_entry = Entry {
            api_version: "batch/v1".into(),
            key: staging.pre_hooks[0].key.clone(),
            fingerprint: Some("g1".into()),
        };
        let previous = Inventory {
            objects: vec![hook_entry.clone()],
            hooks: vec![hook_record(staging.pre_hooks[0])],
            ..Default::default()
        };
        let applied: HashMap<ObjectKey, Change> = [(
            plan[0].key.clone(),
            Change {
                key: plan[0].key.clone(),
                result: None,
                fingerprint: Some("g7".into()),
                stays: true,
            },
        )]
        .into();
        let owned = owned_after(
            &plan,
            &staging,
            &applied,
            &[],
            false,
            Some(&previous),
            vec![gone_entry()],
        );
        assert_eq!(owned.applied.len(), 1);
        assert_eq!(owned.applied[0].fingerprint.as_deref(), Some("g7"));
        assert_eq!(owned.hooks, vec![hook_entry]);
        assert_eq!(owned.hook_records.len(), 1);
        assert_eq!(owned.kept, vec![gone_entry()]);
    }
}
