//! The Release controller: for each Release, take its source's current files (a GitSource's
//! checkout or an OCISource's unpacked artifact), render the
//! path with the engine, and apply it with the engine's pipeline as the Release's service account.
//! Writes conditions (Ready / Reconciling / Stalled), revisions, inventory and a short history.
//! A finalizer prunes what the Release applied when it is deleted (unless `Orphan`).
//!
//! Safety rules: a Release applies, prunes and reads its decryption Secret as the identity of
//! [`crate::context::resolve_identity`] (its `serviceAccountName`, else its namespace's
//! `--default-service-account`; never the agent's own rights unless
//! `--insecure-agent-identity-for-tenants`); it decrypts only with the keys of its own
//! `spec.decryption` Secret, never with keys given to the agent process; tenant-set intervals and
//! timeouts are held to the agent's floor and ceiling; cross-namespace references are refused
//! unless allowed; a failing render or fetch keeps the last applied state (nothing is pruned from
//! a broken source).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::common::{self, READY, RECONCILE_REQUESTED_AT};
use ferry_api::kstatus;
use ferry_api::release::{DeletionPolicy, HISTORY_LIMIT, InventoryEntry, SyncRecord};
use ferry_api::{GitSource, Release, ReleaseStatus};
use ferry_engine::decrypt::sops::AgeKeys;
use ferry_engine::inventory::Legacy;
use ferry_engine::ownership::legacy_release_app;
use ferry_engine::pipeline::{self, ApplyOptions, DeleteOptions};
use ferry_engine::render;
use ferry_engine::report::{Action as ObjAction, ApplyReport};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use crate::context::{Context, Identity, Key, key_of};

const KIND: &str = "Release";
/// How soon a Release whose GitSource is being fetched by this replica looks again (the fetch
/// also wakes it at once).
const SOURCE_PENDING_RECHECK: Duration = Duration::from_secs(5);
/// Finalizer that makes deletion prune what the Release applied.
pub const FINALIZER: &str = "ferry.dev/finalizer";

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("cannot update the status of Release {0}: {1}")]
    Status(String, String),
    #[error("deleting the objects of Release {0} failed: {1}")]
    Cleanup(String, String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// Durations of a Release, with Flux-like defaults.
struct Timing {
    interval: Duration,
    retry: Duration,
    timeout: Duration,
}

/// The Release's durations, held to the agent's floor (`--min-interval`) and ceiling
/// (`--max-timeout`): a tenant's `interval: 1s` or `timeout: 24h` must not hammer the API server
/// or hold a reconcile slot for a day.
fn timing(release: &Release, ctx: &Context) -> Result<Timing, String> {
    let parse = |field: &str, value: &Option<String>, default: Duration| match value {
        Some(v) => common::parse_duration(v).map_err(|e| format!("spec.{field}: {e}")),
        None => Ok(default),
    };
    let interval = ctx.clamp_interval(parse(
        "interval",
        &release.spec.interval,
        Duration::from_secs(600),
    )?);
    let retry = ctx.clamp_interval(parse(
        "retryInterval",
        &release.spec.retry_interval,
        interval.min(Duration::from_secs(120)),
    )?);
    let timeout = ctx.clamp_timeout(parse(
        "timeout",
        &release.spec.timeout,
        Duration::from_secs(300),
    )?);
    Ok(Timing {
        interval,
        retry,
        timeout,
    })
}

// A Release's engine identity lives with the context (drift detection maps objects back to
// Releases with it); re-exported here, where callers look for it.
pub use crate::context::{owner_id, release_ref, target_namespace};

/// Annotation on a Release asking it to take over the push app of that name in its target
/// namespace (`ferry apply --app NAME` from CI first, then the agent from git): its inventory and
/// objects become the Release's. Push apps and Releases never share an identity, so this
/// hand-over is explicit; it grants nothing, since every write and delete still runs as the
/// Release's service account.
pub const ANNOTATION_ADOPT_PUSH_APP: &str = "ferry.dev/adopt-push-app";

/// The app this Release takes over: the push app named by [`ANNOTATION_ADOPT_PUSH_APP`], else the
/// app ferry used for this Release before identities were made injective, when it is safe
/// to adopt that app's inventory: only if no other Release this agent sees mapped to the same
/// name in the same namespace (then the old inventory may hold either's objects, and neither
/// adopts it: see docs/push.md), and only an inventory that recorded this Release's git URL as
/// its source (a push app of the same name recorded local paths).
fn legacy_app(release: &Release, ctx: &Context, url: &str) -> Option<Legacy> {
    if let Some(app) = release.annotations().get(ANNOTATION_ADOPT_PUSH_APP) {
        return Some(Legacy {
            app: app.clone(),
            source_prefix: None,
            push_takeover: true,
        });
    }
    // A Release that never got as far as an apply attempt (a new one) cannot have a
    // pre-upgrade inventory; one this process has applied already has its inventory under the
    // new identity (the engine looks for the old one only when there is none). Either way no
    // lookup: it saves a GET per new Release and the scan of every Release below, which made
    // the first sync of 10,000 Releases quadratic.
    let status = release.status.as_ref();
    let attempted = status.is_some_and(|s| {
        s.last_attempted_revision.is_some()
            || s.last_applied_revision.is_some()
            || !s.inventory.is_empty()
    });
    if !attempted || ctx.drift.applied_in_this_process(&key_of(release)) {
        return None;
    }
    let me = release_ref(release);
    let target = target_namespace(release);
    let legacy = legacy_release_app(&me, &target);
    let store = ctx.releases.get()?;
    let shared = store.state().iter().any(|other| {
        let them = release_ref(other);
        let their_target = target_namespace(other);
        them != me && their_target == target && legacy_release_app(&them, &their_target) == legacy
    });
    if shared {
        tracing::warn!(release = %me, "not adopting pre-upgrade inventory {target}/ferry-inventory-{legacy}: another Release mapped to the same name");
        return None;
    }
    Some(Legacy {
        app: legacy,
        source_prefix: Some(format!("{url}//")),
        push_takeover: false,
    })
}

pub async fn reconcile(release: Arc<Release>, ctx: Arc<Context>) -> Result<Action, ReleaseError> {
    let key = key_of(&*release);
    // Sharding (--shards): another replica owns this Release; it is looked at again when this
    // replica takes its shard (the controller re-runs everything cached then).
    let Some(_shard) = ctx.shards.enter(&key.0, &key.1) else {
        return Ok(Action::await_change());
    };
    // Fairness: a namespace over --max-concurrent-per-namespace waits outside the controller's
    // shared slots, so other tenants' Releases keep being reconciled.
    let Some(_slot) = ctx.try_namespace_slot(&key.0) else {
        return Ok(Action::requeue(
            ctx.backoff.interval(Duration::from_secs(1)),
        ));
    };
    let _running = ctx.metrics.running(KIND);
    let api: Api<Release> = Api::namespaced(ctx.client.clone(), &key.0);
    let result = finalizer(&api, FINALIZER, release, |event| async {
        match event {
            FinalizerEvent::Apply(r) => sync(&r, &ctx).await,
            FinalizerEvent::Cleanup(r) => cleanup(&r, &ctx).await,
        }
    })
    .await;
    match result {
        Ok(action) => Ok(action),
        Err(kube::runtime::finalizer::Error::ApplyFailed(e))
        | Err(kube::runtime::finalizer::Error::CleanupFailed(e)) => Err(e),
        Err(other) => Err(ReleaseError::Finalizer(other.to_string())),
    }
}

/// What a sync decided, before it is written to status.
struct Decision {
    ready: bool,
    reason: &'static str,
    message: String,
    stalled: bool,
    requeue: Action,
    /// Source revision attempted (None when it never got that far).
    attempted: Option<String>,
    report: Option<ApplyReport>,
    /// Nothing to report yet (e.g. the source is being re-fetched after an agent restart):
    /// leave the status as it is.
    keep_status: bool,
}

impl Decision {
    fn waiting(reason: &'static str, message: String, retry: Duration) -> Self {
        Self {
            ready: false,
            reason,
            message,
            stalled: false,
            requeue: Action::requeue(retry),
            attempted: None,
            report: None,
            keep_status: false,
        }
    }

    /// Nothing changed (see `release_drift::at_rest`), or only drift was reported: Ready as
    /// before, with the same message, so the status write is skipped.
    fn unchanged(release: &Release, revision: String, requeue: Duration) -> Self {
        let old = release.status.clone().unwrap_or_default();
        let message = common::find_condition(&old.conditions, READY)
            .filter(|c| c.status == "True")
            .map(|c| c.message.clone())
            .unwrap_or_else(|| format!("Applied revision: {revision}"));
        Self {
            ready: true,
            reason: "ReconciliationSucceeded",
            message,
            stalled: false,
            requeue: Action::requeue(requeue),
            attempted: Some(revision),
            report: None,
            keep_status: false,
        }
    }

    fn stalled(reason: &'static str, message: String) -> Self {
        Self {
            ready: false,
            reason,
            message,
            stalled: true,
            requeue: Action::await_change(),
            attempted: None,
            report: None,
            keep_status: false,
        }
    }
}

async fn sync(release: &Release, ctx: &Arc<Context>) -> Result<Action, ReleaseError> {
    let started = Instant::now();
    let key = key_of(release);
    let requested = release.annotations().get(RECONCILE_REQUESTED_AT).cloned();
    let old = release.status.clone().unwrap_or_default();
    if release.spec.suspend && requested == old.last_handled_reconcile_at {
        return Ok(Action::await_change());
    }
    // kstatus: Reconciling=True before new work (a new generation or revision).
    let old = super::release_progress::announce(release, ctx, old).await;
    let decision = decide(release, ctx).await;
    tracing::debug!(release = %format!("{}/{}", key.0, key.1), ready = decision.ready, reason = decision.reason, message = %decision.message, summary = %summary(decision.report.as_ref()), "sync finished");
    if decision.keep_status {
        return Ok(decision.requeue);
    }
    let ok = decision.ready;
    let requeue = decision.requeue.clone();
    let applied_new = decision.ready && decision.report.is_some();
    let (mut status, mut events) = next_status(release, &old, decision, requested);
    super::release_drift::update_status(ctx, release, &mut status, &mut events, applied_new);
    let became_ready = common::is_ready(&status.conditions)
        && (!common::is_ready(&old.conditions)
            || old.observed_generation != status.observed_generation);
    let mut status_error = None;
    if status_differs(&old, &status) {
        let api: Api<Release> = Api::namespaced(ctx.client.clone(), &key.0);
        let mut patch = serde_json::json!({ "status": status });
        // A merge patch keeps what it leaves out: a cleared drift finding is removed explicitly.
        if status.drift.is_none() {
            patch["status"]["drift"] = serde_json::Value::Null;
        }
        if let Err(e) = api
            .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            status_error = Some(ReleaseError::Status(
                format!("{}/{}", key.0, key.1),
                e.to_string(),
            ));
        }
    }
    for (type_, reason, note) in events {
        ctx.publish_event(release, type_, reason, &note).await;
        let revision = status.last_attempted_revision.as_deref();
        super::notification::dispatch(ctx, release, revision, type_, reason, &note);
    }
    if became_ready {
        ctx.trigger_dependents(&key);
    }
    if ok {
        ctx.backoff.on_success(KIND, &key);
    }
    ctx.metrics
        .observe_reconcile(KIND, &key.0, &key.1, ok, started.elapsed());
    status_error.map_or(Ok(requeue), Err)
}

/// Work out the next status from the decision; also returns the Events to publish.
fn next_status(
    release: &Release,
    old: &ReleaseStatus,
    decision: Decision,
    requested: Option<String>,
) -> (ReleaseStatus, Vec<(EventType, &'static str, String)>) {
    let generation = release.metadata.generation;
    let mut status = old.clone();
    let mut events = Vec::new();
    status.observed_generation = generation;
    status.last_handled_reconcile_at = requested;
    status.last_handled_deploy_request = release
        .annotations()
        .get(ferry_api::deploy::DEPLOY_REQUEST)
        .cloned();
    let previous_message = common::find_condition(&old.conditions, READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    // Ready / Reconciling (retrying) / Stalled, by the one rule of `ferry_api::kstatus`.
    let outcome = if decision.ready {
        kstatus::Outcome::Ready {
            reason: decision.reason,
            message: &decision.message,
        }
    } else {
        kstatus::failure(decision.reason, &decision.message, decision.stalled)
    };
    kstatus::set_outcome(&mut status.conditions, outcome, generation);
    if let Some(revision) = &decision.attempted {
        status.last_attempted_revision = Some(revision.clone());
        let changed_objects = decision
            .report
            .as_ref()
            .map(|r| {
                r.objects
                    .iter()
                    .filter(|o| {
                        matches!(
                            o.action,
                            ObjAction::Created
                                | ObjAction::Configured
                                | ObjAction::Pruned
                                | ObjAction::Deleted
                        )
                    })
                    .count()
            })
            .unwrap_or(0);
        let result = if decision.ready {
            "Succeeded"
        } else {
            "Failed"
        };
        let last = status.history.first();
        let new_entry = last.is_none_or(|h| h.revision != *revision || h.result != result)
            || changed_objects > 0;
        if decision.ready {
            status.last_applied_revision = Some(revision.clone());
            if let Some(report) = &decision.report {
                status.inventory = inventory_of(report);
            }
        }
        if new_entry {
            let message = if decision.ready {
                summary(decision.report.as_ref())
            } else {
                decision.message.clone()
            };
            status.history.insert(
                0,
                SyncRecord {
                    revision: revision.clone(),
                    time: Time(k8s_openapi::jiff::Timestamp::now()),
                    result: result.to_string(),
                    message: Some(message.chars().take(300).collect()),
                },
            );
            status.history.truncate(HISTORY_LIMIT);
            let type_ = if decision.ready {
                EventType::Normal
            } else {
                EventType::Warning
            };
            let reason = if decision.ready {
                "Synced"
            } else {
                decision.reason
            };
            let note = if decision.ready {
                format!("{revision}: {}", summary(decision.report.as_ref()))
            } else {
                format!("{revision}: {}", decision.message)
            };
            events.push((type_, reason, note));
        }
    } else if !decision.ready && previous_message != decision.message {
        events.push((
            EventType::Warning,
            decision.reason,
            decision.message.clone(),
        ));
    }
    (status, events)
}

fn summary(report: Option<&ApplyReport>) -> String {
    let Some(report) = report else {
        return String::new();
    };
    let mut parts = Vec::new();
    for action in [
        ObjAction::Created,
        ObjAction::Configured,
        ObjAction::Unchanged,
        ObjAction::Pruned,
        ObjAction::Kept,
    ] {
        let n = report.count(action);
        if n > 0 {
            parts.push(format!("{n} {}", action.as_str()));
        }
    }
    if parts.is_empty() {
        "no objects".to_string()
    } else {
        parts.join(", ")
    }
}

fn inventory_of(report: &ApplyReport) -> Vec<InventoryEntry> {
    let mut entries: Vec<InventoryEntry> = report
        .objects
        .iter()
        .filter(|o| {
            matches!(
                o.action,
                ObjAction::Created | ObjAction::Configured | ObjAction::Unchanged | ObjAction::Kept
            )
        })
        .map(|o| InventoryEntry {
            api_version: o.api_version.clone(),
            kind: o.key.kind.clone(),
            namespace: o.key.namespace.clone(),
            name: o.key.name.clone(),
        })
        .collect();
    entries.sort();
    entries
}

/// Compare statuses ignoring timestamps (conditions and history), so a no-op sync writes nothing.
pub fn status_differs(old: &ReleaseStatus, new: &ReleaseStatus) -> bool {
    let strip = |s: &ReleaseStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(old) != strip(new)
}

/// The namespace a reference points to, refusing cross-namespace references unless allowed
/// (THE rule, shared with the image controllers: [`ferry_api::referenced_namespace`]).
fn referenced_namespace(
    ctx: &Context,
    own: &str,
    referenced: Option<&str>,
    what: &str,
) -> Result<String, String> {
    ferry_api::referenced_namespace(
        ctx.options.allow_cross_namespace_refs,
        "Release",
        own,
        referenced,
        what,
    )
    .map_err(|refused| refused.to_string())
}

async fn decide(release: &Release, ctx: &Arc<Context>) -> Decision {
    let (ns, _name) = key_of(release);
    let timing = match timing(release, ctx) {
        Ok(t) => t,
        Err(e) => return Decision::stalled("InvalidSpec", e),
    };
    // Source.
    let source_kind = release.spec.source_ref.kind.as_str();
    let oci_source = source_kind == ferry_api::ocisource::OCI_SOURCE_KIND;
    if source_kind != "GitSource" && !oci_source {
        return Decision::stalled(
            "InvalidSpec",
            format!(
                "spec.sourceRef.kind {:?} is not supported; use GitSource or OCISource",
                release.spec.source_ref.kind
            ),
        );
    }
    let source_ns = match referenced_namespace(
        ctx,
        &ns,
        release.spec.source_ref.namespace.as_deref(),
        &format!("{source_kind} {}", release.spec.source_ref.name),
    ) {
        Ok(n) => n,
        Err(e) => return Decision::stalled(ferry_api::CROSS_NAMESPACE_REF_DENIED, e),
    };
    // Dependencies.
    for dep in &release.spec.depends_on {
        let dep_ns = match referenced_namespace(
            ctx,
            &ns,
            dep.namespace.as_deref(),
            &format!("dependency Release {}", dep.name),
        ) {
            Ok(n) => n,
            Err(e) => return Decision::stalled(ferry_api::CROSS_NAMESPACE_REF_DENIED, e),
        };
        if let Err(e) = dependency_ready(ctx, &(dep_ns, dep.name.clone())) {
            return Decision::waiting("DependencyNotReady", e, ctx.backoff.interval(timing.retry));
        }
    }
    let source_key: Key = (source_ns.clone(), release.spec.source_ref.name.clone());
    // A deploy request (`ferry deploy`) pins the Release to a commit: see crate::deploy::pin.
    let artifact = match crate::deploy::pin::checkout(release, ctx, &source_key).await {
        Ok(Some(pinned)) => Some(pinned),
        Ok(None) if oci_source => crate::controllers::ocisource::artifact(ctx, &source_key),
        Ok(None) => ctx.artifact(&source_key),
        Err(e) => {
            return Decision::waiting("DeployFetchFailed", e, ctx.backoff.interval(timing.retry));
        }
    };
    let Some(artifact) = artifact else {
        let wait = if oci_source {
            match crate::controllers::ocisource::source_wait(ctx, &source_key).await {
                Ok(()) => SourceWait::Pending,
                Err(message) => SourceWait::NotReady(message),
            }
        } else {
            source_state(ctx, &source_key).await
        };
        return match wait {
            // Its fetch wakes this Release; look again soon in case it is slow.
            SourceWait::Pending => {
                let mut d = Decision::waiting(
                    "SourceNotReady",
                    String::new(),
                    ctx.backoff
                        .interval(SOURCE_PENDING_RECHECK.min(timing.retry)),
                );
                d.keep_status = true;
                d
            }
            SourceWait::NotReady(message) => Decision::waiting(
                "SourceNotReady",
                message,
                ctx.backoff.interval(timing.retry),
            ),
        };
    };
    let revision = artifact.revision.clone();
    let failed = |reason: &'static str, message: String| Decision {
        ready: false,
        reason,
        message,
        stalled: false,
        requeue: Action::requeue(ctx.backoff.on_error(KIND, &key_of(release), timing.retry)),
        attempted: Some(revision.clone()),
        report: None,
        keep_status: false,
    };
    // Drift policy; a Release at rest needs no API request at all (issue 17).
    let drift_policy = match super::release_drift::Policy::of_release(release) {
        Ok(policy) => policy,
        Err(e) => return Decision::stalled("InvalidSpec", e),
    };
    // A Release reading ConfigMaps/Secrets (valuesFrom, substituteFrom) never rests: they can
    // change while nothing else does.
    if !super::release_inputs::reads_cluster_objects(release)
        && super::release_drift::at_rest(release, ctx, &revision)
    {
        return Decision::unchanged(release, revision, ctx.backoff.interval(timing.interval));
    }
    let drift_mark = ctx.drift.mark(&key_of(release));
    // Custom health rules: a bad expression is the spec's fault (Stalled).
    let health_checks =
        match ferry_engine::health::CustomHealth::compile(&release.spec.health_check_exprs) {
            Ok(compiled) => Arc::new(compiled),
            Err(e) => return Decision::stalled("InvalidSpec", format!("spec.{e}")),
        };
    // Identity.
    let (client, identity) = match client_for(release, ctx) {
        Ok(c) => c,
        Err(e) => return Decision::stalled("ImpersonationFailed", e),
    };
    // Render (blocking: file IO and renderer processes).
    let keys = match decryption_keys(release, &client, &identity).await {
        Ok(k) => k,
        Err(e) => return failed("DecryptionFailed", e),
    };
    // valuesFrom / postBuild: read as the Release's identity, layered over spec.render.
    let inputs = match super::release_inputs::read(release, &client, &identity).await {
        Ok(inputs) => inputs,
        Err(e) if e.stalled() => return Decision::stalled(e.reason(), e.to_string()),
        Err(e) => return failed(e.reason(), e.to_string()),
    };
    // Secret values are known to the redactor before anything can show them.
    let mut redactor = ferry_engine::render::safety::Redactor::new();
    inputs.redact_with(&mut redactor);
    let render_spec = match inputs.layer(release.spec.render.as_ref()) {
        Ok(layered) => layered,
        Err(e) => return Decision::stalled(e.reason(), e.to_string()),
    };
    let has_decryption = release.spec.decryption.is_some();
    let target_ns = release
        .spec
        .target_namespace
        .clone()
        .unwrap_or_else(|| ns.clone());
    let path = release.spec.path.clone().unwrap_or_else(|| ".".to_string());
    // Path, target namespace, spec.render, deploy images: the engine's one definition, which
    // `ferry diff release` renders with too.
    let mut request = match render::release::request_for(
        release,
        &artifact.path,
        render_spec,
        ctx.options.render_policy(),
    ) {
        Ok(request) => request,
        Err(e) => return Decision::stalled("InvalidSpec", redactor.redact(&e.to_string())),
    };
    request.age_keys = keys;
    // Helm's inputs from the cluster: chart credentials (read as the Release), capabilities.
    if let Err(e) = super::release_helm::prepare(&mut request, &ns, &client, &identity, ctx).await {
        return failed("RenderFailed", e.to_string());
    }
    // Decrypted values are collected so that status, events and logs never show them.
    let log_key = format!("{ns}/{}", release.name_any());
    let rendered = tokio::task::spawn_blocking(move || {
        let mut redactor = redactor;
        let rendered = render::render_collecting(&request, &mut redactor);
        // Libraries log too (kube-client logs the API server's refusal, echoed value and all).
        ferry_engine::report::redact::publish_for_logs(&log_key, &redactor);
        rendered.map(|m| (m, redactor))
    })
    .await;
    let (mut manifests, redactor) = match rendered {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            // Typed check, not message text: a SOPS file in a Release without spec.decryption.
            let hint = match &e {
                ferry_engine::Error::Decrypt { .. } if !has_decryption => {
                    " (this Release has no spec.decryption: the agent never decrypts with its own keys; \
                     put the age key in a Secret of this namespace under a `*.agekey` entry and set \
                     spec.decryption: {provider: sops, secretRef: {name: ...}})"
                }
                _ => "",
            };
            let mut d = failed(
                "RenderFailed",
                format!(
                    "rendering {path} of {} at {revision} failed: {e}{hint}; the last applied revision stays in place",
                    artifact.url
                ),
            );
            // kstatus: a revision that does not render needs a new commit (Stalled); retries
            // go on at the retry interval in case the cause was outside the revision.
            d.stalled = render_needs_a_change(&e);
            return d;
        }
        Err(e) => return failed("RenderFailed", format!("render task failed: {e}")),
    };
    // Watch the kinds before writing them, so drift right after the apply is seen.
    let kinds: std::collections::BTreeSet<(String, String)> = manifests
        .iter()
        .map(|m| (m.api_version().to_string(), m.kind().to_string()))
        .collect();
    let mut watched = true;
    for (api_version, kind) in &kinds {
        watched &= crate::drift::ensure(ctx, api_version, kind).await;
    }
    // The intent as the source states it: which objects exist already (and so lose their
    // ignored fields below) must not make the same intent look new.
    let digest = super::release_drift::digest(&manifests);
    // Fields left to other managers are not applied to existing objects.
    super::release_drift::strip_ignored(release, &mut manifests, &drift_policy.rules);
    let intents = super::release_drift::intents_of(release, &manifests);
    // Apply through the one engine.
    let options = ApplyOptions {
        release: Some(release_ref(release)),
        legacy_app: legacy_app(release, ctx, &artifact.url),
        namespace: Some(target_ns),
        prune: release.spec.prune.unwrap_or(true),
        wait: release.spec.wait,
        timeout: timing.timeout,
        revision: Some(revision.clone()),
        source: format!(
            "{}//{}",
            artifact.url,
            release.spec.path.as_deref().unwrap_or(".")
        ),
        concurrency: 8,
        // Git is the source of truth: take back fields someone edited by hand (self-heal),
        // as Flux's server-side apply does.
        force_conflicts: true,
        discovery: Some(ctx.discovery.clone()),
        redactor,
        health_checks,
        ..ApplyOptions::default()
    };
    // The same intent as the last apply: this reconcile is about drift. Look at what differs
    // first: to report it (detect: and change nothing), or to say what was corrected.
    if let Some(found) = super::release_drift::check(
        release,
        ctx,
        &client,
        &manifests,
        &options,
        &drift_policy,
        &revision,
        digest,
    )
    .await
    {
        match found {
            Ok(super::release_drift::Checked::Reported) => {
                return Decision::unchanged(
                    release,
                    revision,
                    ctx.backoff.interval(timing.interval),
                );
            }
            Ok(super::release_drift::Checked::Correct) => {}
            Err(e) => return failed("DriftCheckFailed", e),
        }
    }
    // A revision not attempted before: the Alerts hear that it is being applied (a `pending`
    // commit status) now, and its result (`Synced` or the failure, always recorded for a new
    // revision) after the apply. A notification only: no Kubernetes Event, no API request.
    if super::release_progress::first_attempt(release, &revision) {
        super::notification::dispatch(
            ctx,
            release,
            Some(&revision),
            EventType::Normal,
            super::notification::PROGRESSING,
            &format!("{revision}: applying"),
        );
    }
    // The engine's futures are Send: the apply runs on this reconcile's own task (no blocking
    // thread pinned per Release).
    let applied = tokio::time::timeout(
        timing.timeout + Duration::from_secs(30),
        pipeline::apply(
            &client,
            manifests,
            &options,
            &*crate::deploy::pin::progress(release),
        ),
    )
    .await;
    let report = match applied {
        Err(_) => {
            return failed(
                "ApplyFailed",
                format!("apply timed out after {:?}", timing.timeout),
            );
        }
        Ok(Err(e)) => {
            return failed(
                "ApplyFailed",
                format!("applying {revision} as {identity}: {e}"),
            );
        }
        Ok(Ok(report)) => report,
    };
    crate::deploy::pin::report(release, &report);
    let failures = report.failures();
    if !failures.is_empty() {
        let listed: Vec<String> = failures
            .iter()
            .take(3)
            .map(|o| {
                format!(
                    "{}: {}",
                    o.key,
                    o.message
                        .clone()
                        .or_else(|| o.health.as_ref().map(|h| h.message.clone()))
                        .unwrap_or_default()
                )
            })
            .collect();
        let more = failures.len().saturating_sub(3);
        let reason = if report.timed_out {
            "HealthCheckFailed"
        } else {
            "ApplyFailed"
        };
        let mut message = format!(
            "{} object(s) failed at {revision}: {}",
            failures.len(),
            listed.join("; ")
        );
        if more > 0 {
            message.push_str(&format!(" (and {more} more)"));
        }
        // Say who was refused, and what to do about it.
        message.push_str(&format!(
            "; applied as {identity}{}",
            match &identity {
                Identity::ServiceAccount { .. } if release.spec.service_account_name.is_none() => {
                    " (no spec.serviceAccountName: the namespace's default; grant it the rights, or name a service account that has them)"
                }
                _ => "",
            }
        ));
        let mut d = failed(reason, message);
        d.report = Some(report);
        return d;
    }
    ctx.drift.record_intents(intents);
    let app_dir = artifact.path.join(path.trim_start_matches("./"));
    super::release_drift::record(
        ctx,
        release,
        &revision,
        digest,
        drift_mark,
        watched && !super::release_drift::reads_outside_inputs(release, &app_dir),
    );
    let mut message = format!("Applied revision: {revision}");
    if let Some(skipped) = &report.prune_skipped {
        message.push_str(&format!(" (prune skipped: {skipped})"));
    }
    Decision {
        ready: true,
        reason: "ReconciliationSucceeded",
        message,
        stalled: false,
        requeue: Action::requeue(ctx.backoff.interval(timing.interval)),
        attempted: Some(revision),
        report: Some(report),
        keep_status: false,
    }
}

/// Whether a render error is in the source itself (bad YAML, a failing kustomize or Helm render,
/// a refused path): the same revision will fail the same way, so the Release is Stalled until
/// a change. Decryption (a key Secret may still be added), cluster and other errors are retried.
fn render_needs_a_change(err: &ferry_engine::Error) -> bool {
    matches!(
        err,
        ferry_engine::Error::Source { .. }
            | ferry_engine::Error::Render { .. }
            | ferry_engine::Error::Refused(_)
    )
}

/// Which of these namespaces are being deleted, read with the agent's own identity (a tenant's
/// may not read Namespaces, or may have lost its RoleBinding already).
async fn terminating(ctx: &Context, namespaces: &[&str]) -> std::collections::BTreeSet<String> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(ctx.client.clone());
    let mut out = std::collections::BTreeSet::new();
    for ns in namespaces {
        if let Ok(Some(live)) = api.get_opt(ns).await
            && ferry_engine::cluster::manager::delete::is_terminating(&live)
        {
            out.insert(ns.to_string());
        }
    }
    out
}

/// What a Release without a local artifact of its GitSource does.
#[derive(Debug, PartialEq, Eq)]
enum SourceWait {
    /// The GitSource exists and is not failing: this replica's fetch is under way (a restart, or
    /// a new leader whose cache is still empty) and wakes the Release when it lands. Keep the
    /// status as it is: the last leader's Ready=True stays true (no flap on takeover).
    Pending,
    /// Not found, or failing: say so in Ready=False.
    NotReady(String),
}

/// The decision, from what is known of the GitSource: `found` from this replica's cache or, when
/// the cache does not have it yet, from the API server; `watched` whether this agent watches its
/// namespace (else nobody here will ever fetch it).
fn source_wait(source: &Key, found: Option<&GitSource>, watched: bool) -> SourceWait {
    let Some(gs) = found.filter(|_| watched) else {
        return SourceWait::NotReady(format!(
            "GitSource {}/{} not found (is it created, and in a namespace this agent watches?)",
            source.0, source.1
        ));
    };
    let conditions = gs.status.clone().unwrap_or_default().conditions;
    match common::find_condition(&conditions, READY) {
        None => SourceWait::Pending,
        Some(c) if c.status == "True" => SourceWait::Pending,
        Some(c) => SourceWait::NotReady(format!(
            "GitSource {}/{} has no revision yet: {}",
            source.0, source.1, c.message
        )),
    }
}

/// [`source_wait`] for a GitSource this replica has no artifact of. A GitSource missing from the
/// cache is looked up in the API server: right after a leader takeover the Release cache can
/// list before the GitSource cache does, and "not found" would flip a Ready Release to False
/// until the fetch (issue 12). Only then is the API read, once per such reconcile.
async fn source_state(ctx: &Context, source: &Key) -> SourceWait {
    let watched =
        ctx.options.watch_namespaces.is_empty() || ctx.options.watch_namespaces.contains(&source.0);
    let cached = ctx
        .sources
        .get()
        .and_then(|store| store.get(&ObjectRef::<GitSource>::new(&source.1).within(&source.0)));
    if let Some(gs) = cached {
        return source_wait(source, Some(&gs), watched);
    }
    if !watched {
        return source_wait(source, None, watched);
    }
    let api: Api<GitSource> = Api::namespaced(ctx.client.clone(), &source.0);
    match api.get_opt(&source.1).await {
        Ok(found) => source_wait(source, found.as_ref(), watched),
        Err(err) => SourceWait::NotReady(format!(
            "cannot read GitSource {}/{}: {err}",
            source.0, source.1
        )),
    }
}

fn dependency_ready(ctx: &Context, dep: &Key) -> Result<(), String> {
    let store = ctx
        .releases
        .get()
        .ok_or_else(|| "the Release cache is not ready".to_string())?;
    let Some(other) = store.get(&ObjectRef::<Release>::new(&dep.1).within(&dep.0)) else {
        return Err(format!("dependency Release {}/{} not found", dep.0, dep.1));
    };
    let status = other.status.clone().unwrap_or_default();
    if status.observed_generation != other.metadata.generation
        || !common::is_ready(&status.conditions)
    {
        return Err(format!(
            "dependency Release {}/{} is not Ready",
            dep.0, dep.1
        ));
    }
    Ok(())
}

/// The client a Release applies, prunes and reads its decryption Secret with, and who that is
/// (see [`crate::context::resolve_identity`]).
fn client_for(release: &Release, ctx: &Context) -> Result<(Client, Identity), String> {
    let ns = release.namespace().unwrap_or_default();
    let identity = ctx.identity_for(&ns, release.spec.service_account_name.as_deref());
    let client = ctx.client_as(&identity).map_err(|e| e.to_string())?;
    Ok((client, identity))
}

/// Age keys from the decryption Secret (every value whose key ends in `.agekey`), read as the
/// Release's own identity: a Release whose service account may not `get` that Secret cannot use
/// it. Without `spec.decryption` the set is empty, never the keys of the agent process
/// (`SOPS_AGE_KEY`, `SOPS_AGE_KEY_FILE`, `~/.config/sops/age/keys.txt`), which the engine would
/// otherwise load: SOPS files in such a Release fail to render.
async fn decryption_keys(
    release: &Release,
    client: &Client,
    identity: &Identity,
) -> Result<Option<AgeKeys>, String> {
    let Some(decryption) = &release.spec.decryption else {
        return Ok(Some(AgeKeys::empty()));
    };
    if decryption.provider != "sops" {
        return Err(format!(
            "spec.decryption.provider {:?} is not supported; use sops",
            decryption.provider
        ));
    }
    let ns = release.namespace().unwrap_or_default();
    let name = &decryption.secret_ref.name;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| {
            format!("cannot read decryption Secret {ns}/{name} as {identity}: {e}; grant it `get` on that Secret (spec.decryption.secretRef)")
        })?
        .ok_or_else(|| format!("decryption Secret {ns}/{name} does not exist"))?;
    let mut data = secret.data.unwrap_or_default();
    let keys = AgeKeys::from_secret_data(
        &format!("decryption Secret {ns}/{name}"),
        data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())),
    )
    .map(Some)
    .map_err(|e| e.to_string());
    AgeKeys::wipe_secret_data(data.values_mut().map(|v| &mut v.0));
    keys
}

/// Deletion: prune everything the Release applied (unless `deletionPolicy: Orphan`).
async fn cleanup(release: &Release, ctx: &Context) -> Result<Action, ReleaseError> {
    let key = key_of(release);
    ferry_engine::report::redact::unpublish_for_logs(&format!("{}/{}", key.0, key.1));
    let policy = release.spec.deletion_policy.unwrap_or_default();
    if policy == DeletionPolicy::Orphan || release.spec.suspend {
        tracing::info!(release = %format!("{}/{}", key.0, key.1), "deleted; objects orphaned");
        return Ok(Action::await_change());
    }
    let (client, _identity) = client_for(release, ctx)
        .map_err(|e| ReleaseError::Cleanup(format!("{}/{}", key.0, key.1), e))?;
    let target_ns = target_namespace(release);
    // Objects in a namespace being deleted go with it; trying to delete them one by one could
    // block this finalizer (and the namespace) once the tenant's RoleBinding is gone.
    let terminating = terminating(ctx, &[&target_ns, &key.0]).await;
    let options = DeleteOptions {
        release: Some(release_ref(release)),
        // A Release deleted before it ever ran under this version does not adopt its
        // pre-upgrade inventory: its objects are left in place (never pruned by a guess).
        legacy_app: None,
        namespace: Some(target_ns),
        concurrency: 8,
        // A Release's deletion is not the operator's explicit `ferry delete`: Namespaces,
        // CRDs, PVCs and PVs go only with their opt-in annotation.
        allow_destructive: false,
        terminating,
        ..DeleteOptions::default()
    };
    match pipeline::delete(&client, &options).await {
        Ok(report) => {
            if let Some(why) = report.prune_skipped {
                return Err(ReleaseError::Cleanup(format!("{}/{}", key.0, key.1), why));
            }
            tracing::info!(release = %format!("{}/{}", key.0, key.1), deleted = report.count(ObjAction::Deleted), "deleted with its objects");
            Ok(Action::await_change())
        }
        // Never applied (no inventory): nothing of ours to delete.
        Err(ferry_engine::Error::NoInventory { .. }) => Ok(Action::await_change()),
        Err(e) => Err(ReleaseError::Cleanup(
            format!("{}/{}", key.0, key.1),
            e.to_string(),
        )),
    }
}

pub fn error_policy(release: Arc<Release>, err: &ReleaseError, ctx: Arc<Context>) -> Action {
    let key = key_of(&*release);
    tracing::warn!(release = %format!("{}/{}", key.0, key.1), "reconcile failed: {err}");
    let retry = timing(&release, &ctx)
        .map(|t| t.retry)
        .unwrap_or(Duration::from_secs(30));
    ctx.metrics.observe_error(KIND);
    Action::requeue(ctx.backoff.on_error(KIND, &key, retry))
}

#[cfg(test)]
mod tests {
    use ferry_api::GitSourceStatus;
    use ferry_api::gitsource::GitSourceSpec;

    use super::*;

    fn source(ready: Option<(bool, &str)>) -> GitSource {
        let mut gs = GitSource::new("app", GitSourceSpec::default());
        gs.metadata.namespace = Some("team-a".to_string());
        if let Some((ok, message)) = ready {
            let mut status = GitSourceStatus::default();
            let reason = if ok { "Succeeded" } else { "FetchFailed" };
            common::set_condition(&mut status.conditions, READY, ok, reason, message, Some(1));
            gs.status = Some(status);
        }
        gs
    }

    fn key() -> Key {
        ("team-a".to_string(), "app".to_string())
    }

    fn release() -> Release {
        let mut r = Release::new("web", ferry_api::ReleaseSpec::default());
        r.metadata.namespace = Some("team-a".to_string());
        r.metadata.generation = Some(3);
        r
    }

    fn decision(
        ready: bool,
        reason: &'static str,
        message: &str,
        attempted: Option<&str>,
    ) -> Decision {
        Decision {
            ready,
            reason,
            message: message.to_string(),
            stalled: false,
            requeue: Action::await_change(),
            attempted: attempted.map(str::to_string),
            report: None,
            keep_status: false,
        }
    }

    fn ready(status: &ReleaseStatus) -> (String, String) {
        let c = common::find_condition(&status.conditions, READY).expect("a Ready condition");
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn a_sync_at_a_new_revision_is_recorded_once_and_then_writes_nothing() {
        let r = release();
        let ok = || {
            decision(
                true,
                "ReconciliationSucceeded",
                "Applied revision: main@sha1:aaa",
                Some("main@sha1:aaa"),
            )
        };
        let (first, events) = next_status(&r, &ReleaseStatus::default(), ok(), None);
        assert_eq!(
            ready(&first),
            ("True".into(), "ReconciliationSucceeded".into())
        );
        assert_eq!(
            first.last_applied_revision.as_deref(),
            Some("main@sha1:aaa")
        );
        assert_eq!(first.observed_generation, Some(3));
        assert_eq!(first.history.len(), 1);
        assert_eq!(first.history[0].result, "Succeeded");
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].0, events[0].1), (EventType::Normal, "Synced"));
        // The same outcome again (the interval re-apply): no new history, no event, no write.
        let (second, events) = next_status(&r, &first, ok(), None);
        assert!(events.is_empty(), "{events:?}");
        assert!(!status_differs(&first, &second));
    }

    #[test]
    fn a_failed_revision_keeps_the_last_applied_one_and_warns_once() {
        let r = release();
        let ok = decision(
            true,
            "ReconciliationSucceeded",
            "Applied",
            Some("main@sha1:aaa"),
        );
        let (good, _) = next_status(&r, &ReleaseStatus::default(), ok, None);
        let failed = || {
            decision(
                false,
                "RenderFailed",
                "rendering . failed: bad yaml",
                Some("main@sha1:bbb"),
            )
        };
        let (bad, events) = next_status(&r, &good, failed(), None);
        assert_eq!(ready(&bad), ("False".into(), "RenderFailed".into()));
        assert_eq!(bad.last_applied_revision.as_deref(), Some("main@sha1:aaa"));
        assert_eq!(
            bad.last_attempted_revision.as_deref(),
            Some("main@sha1:bbb")
        );
        assert_eq!(bad.history[0].result, "Failed");
        assert_eq!(bad.history[1].result, "Succeeded");
        assert_eq!(events.len(), 1);
        assert_eq!(
            (events[0].0, events[0].1),
            (EventType::Warning, "RenderFailed")
        );
        // Retried with the same failure: nothing new to say.
        let (again, events) = next_status(&r, &bad, failed(), None);
        assert!(events.is_empty(), "{events:?}");
        assert!(!status_differs(&bad, &again));
    }

    #[test]
    fn waiting_warns_only_when_the_reason_changes_and_stalled_clears_on_success() {
        let r = release();
        let waiting = || {
            decision(
                false,
                "DependencyNotReady",
                "dependency Release team-a/db is not Ready",
                None,
            )
        };
        let (first, events) = next_status(&r, &ReleaseStatus::default(), waiting(), None);
        assert_eq!(events.len(), 1);
        assert!(first.history.is_empty(), "waiting is no sync attempt");
        let (_, events) = next_status(&r, &first, waiting(), None);
        assert!(events.is_empty());
        let mut stalled = decision(false, "InvalidSpec", "spec.interval: not a duration", None);
        stalled.stalled = true;
        let (stuck, _) = next_status(&r, &first, stalled, None);
        assert!(common::find_condition(&stuck.conditions, common::STALLED).is_some());
        let ok = decision(
            true,
            "ReconciliationSucceeded",
            "Applied",
            Some("main@sha1:aaa"),
        );
        let (fixed, _) = next_status(&r, &stuck, ok, Some("2026-12-02T08:00:00Z".to_string()));
        assert!(common::find_condition(&fixed.conditions, common::STALLED).is_none());
        // `ferry sync` asked for this run: it is recorded as handled.
        assert_eq!(
            fixed.last_handled_reconcile_at.as_deref(),
            Some("2026-12-02T08:00:00Z")
        );
    }

    #[test]
    fn a_ready_source_not_yet_fetched_here_keeps_the_release_status() {
        // A new leader: the GitSource was Ready under the last leader, this replica has not
        // fetched it yet. No Ready=False in between.
        let ready = source(Some((true, "stored revision main@sha1:abc")));
        assert_eq!(source_wait(&key(), Some(&ready), true), SourceWait::Pending);
        // A GitSource never reconciled yet: its first fetch is under way.
        assert_eq!(
            source_wait(&key(), Some(&source(None)), true),
            SourceWait::Pending
        );
    }

    #[test]
    fn a_failing_missing_or_unwatched_source_is_reported() {
        let failing = source(Some((false, "authentication required")));
        match source_wait(&key(), Some(&failing), true) {
            SourceWait::NotReady(message) => {
                assert!(message.contains("team-a/app"), "{message}");
                assert!(message.contains("authentication required"), "{message}");
            }
            SourceWait::Pending => panic!("a failing source must be reported"),
        }
        match source_wait(&key(), None, true) {
            SourceWait::NotReady(message) => assert!(message.contains("not found"), "{message}"),
            SourceWait::Pending => panic!("a missing source must be reported"),
        }
        // Ready under another agent, but nobody here fetches that namespace: waiting would be
        // silent forever.
        let ready = source(Some((true, "stored revision main@sha1:abc")));
        assert!(matches!(
            source_wait(&key(), Some(&ready), false),
            SourceWait::NotReady(_)
        ));
    }
}
