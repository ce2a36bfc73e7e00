//! The ImageRepository controller: scan the tag list on the interval (or at once when
//! triggered), apply the exclusion list, keep the tags in memory for the policies, report in
//! status (and an Event when Ready changes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::common::{RECONCILE_REQUESTED_AT, is_ready, set_failure, set_ready};
use ferry_api::images::{ImageRepository, ImageRepositoryStatus, ScanResult};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use regex::Regex;

use tokio_util::sync::CancellationToken;

use super::image_automation::{
    ImageContext, ReconcileError, ScanData, lock, now_time, parse_interval, publish_ready_change,
};
use crate::context::{Key, key_of};
use ferry_images::reference::ImageRef;
use ferry_images::registry::auth::{self, Credentials};
use ferry_images::registry::{ConnectOptions, RegistryError, Target};

const KIND: &str = "ImageRepository";
/// Reconciles in parallel (each holds a registry connection while it scans).
const CONCURRENCY: u16 = 4;
/// Longest wait before retrying after an API error (the shared backoff starts at 2 s).
const ERROR_RETRY_CAP: Duration = Duration::from_secs(10);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_EXCLUSIONS: [&str; 1] = ["^.*\\.sig$"];

/// Run until `stop` is cancelled; running reconciles finish first.
pub(super) async fn controller(
    ctx: Arc<ImageContext>,
    namespace: Option<String>,
    stop: CancellationToken,
) {
    let api: Api<ImageRepository> = match &namespace {
        Some(ns) => Api::namespaced(ctx.agent.client.clone(), ns),
        None => Api::all(ctx.agent.client.clone()),
    };
    let controller = Controller::new(api, watcher::Config::default());
    // Deleted ImageRepositories are never reconciled again: drop their tag lists periodically.
    let store = controller.store();
    let sweeper_ctx = ctx.clone();
    let sweep_namespace = namespace.clone();
    let sweep_stop = stop.clone();
    let sweeper = async move {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        loop {
            tokio::select! {
                _ = sweep_stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if store.is_empty() {
                continue; // not synced yet (or really empty: nothing to keep either way)
            }
            let live: std::collections::HashSet<(String, String)> = store
                .state()
                .iter()
                .map(|r| (r.namespace().unwrap_or_default(), r.name_any()))
                .collect();
            lock(&sweeper_ctx.scans).retain(|key, _| {
                sweep_namespace.as_ref().is_some_and(|ns| *ns != key.0) || live.contains(key)
            });
        }
    };
    let controller = super::drive(
        KIND,
        controller,
        CONCURRENCY,
        reconcile,
        error_policy,
        ctx,
        stop,
    );
    tokio::join!(controller, sweeper);
}

fn error_policy(
    repo: Arc<ImageRepository>,
    err: &ReconcileError,
    ctx: Arc<ImageContext>,
) -> Action {
    let key = key_of(&*repo);
    tracing::warn!(repository = %format!("{}/{}", key.0, key.1), "reconcile failed: {err}");
    ctx.agent.metrics.observe_error(KIND);
    Action::requeue(ctx.agent.backoff.on_error(KIND, &key, ERROR_RETRY_CAP))
}

/// Credentials and TLS options from the referenced Secrets.
pub(super) async fn connect(
    ctx: &ImageContext,
    repo: &ImageRepository,
) -> Result<Target, (String, String)> {
    let ns = repo.namespace().unwrap_or_default();
    let image = ImageRef::parse(&repo.spec.image)
        .map_err(|e| ("InvalidImage".to_string(), format!("spec.image: {e}")))?;
    if image.tag.is_some() || image.digest.is_some() {
        return Err((
            "InvalidImage".into(),
            format!(
                "spec.image {:?} must not have a tag or digest; use {:?}",
                repo.spec.image, image.repository
            ),
        ));
    }
    let (host, _) = image.registry_and_path();
    let secrets: Api<Secret> = Api::namespaced(
        ctx.secret_client(&ns)
            .map_err(|e| ("SecretUnreadable".to_string(), e))?,
        &ns,
    );
    let read = |name: String| {
        let ns = ns.clone();
        let secrets = secrets.clone();
        async move {
            match secrets.get_opt(&name).await {
                Ok(Some(secret)) => Ok(secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect::<BTreeMap<_, _>>()),
                Ok(None) => Err((
                    "SecretNotFound".to_string(),
                    format!("Secret {ns}/{name} not found; create it or fix the reference"),
                )),
                Err(e) => Err((
                    "SecretUnreadable".to_string(),
                    format!("cannot read Secret {ns}/{name}: {e}"),
                )),
            }
        }
    };
    let credentials = match &repo.spec.secret_ref {
        None => Credentials::Anonymous,
        Some(r) => {
            let data = read(r.name.clone()).await?;
            auth::from_secret_data(
                &format!("{}/{}", repo.namespace().unwrap_or_default(), r.name),
                &data,
                &host,
            )
            .map_err(|e| ("InvalidSecret".to_string(), e.to_string()))?
        }
    };
    let ca_pem = match &repo.spec.cert_secret_ref {
        None => None,
        Some(r) => {
            let data = read(r.name.clone()).await?;
            Some(
                data.get("ca.crt")
                    .or_else(|| data.get("caFile"))
                    .cloned()
                    .ok_or_else(|| {
                        (
                            "InvalidSecret".to_string(),
                            format!("Secret {} has no `ca.crt`", r.name),
                        )
                    })?,
            )
        }
    };
    Ok(Target::new(
        &image.repository,
        credentials,
        ConnectOptions {
            insecure: repo.spec.insecure,
            ca_pem,
        },
    ))
}

/// Write the status (and publish an Event if Ready changed); returns whether it is Ready.
async fn patch_status(
    ctx: &ImageContext,
    repo: &ImageRepository,
    status: &ImageRepositoryStatus,
) -> Result<bool, ReconcileError> {
    let api: Api<ImageRepository> = Api::namespaced(
        ctx.agent.client.clone(),
        &repo.namespace().unwrap_or_default(),
    );
    api.patch_status(
        &repo.name_any(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    let before = repo.status.clone().unwrap_or_default();
    let found = |s: &ImageRepositoryStatus| {
        s.last_scan_result
            .as_ref()
            .map(|r| (r.tag_count, r.latest_tags.clone()))
    };
    let news = (found(&before) != found(status)).then_some("NewTags");
    publish_ready_change(
        ctx,
        repo,
        &before.conditions,
        &status.conditions,
        news,
        None,
    )
    .await;
    Ok(is_ready(&status.conditions))
}

async fn reconcile(
    repo: Arc<ImageRepository>,
    ctx: Arc<ImageContext>,
) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    let _running = ctx.agent.metrics.running(KIND);
    let result = reconcile_inner(&repo, &ctx).await;
    if let Ok((_, ready)) = &result {
        ctx.observe(KIND, &key_of(&*repo), *ready, started);
    }
    result.map(|(action, _)| action)
}

/// One scan; returns what to do next and whether the repository ended Ready.
async fn reconcile_inner(
    repo: &ImageRepository,
    ctx: &ImageContext,
) -> Result<(Action, bool), ReconcileError> {
    let ns = repo.namespace().unwrap_or_default();
    let name = repo.name_any();
    let key = (ns.clone(), name.clone());
    let mut status = repo.status.clone().unwrap_or_default();
    let was_ready = is_ready(&status.conditions);
    if repo.meta().deletion_timestamp.is_some() {
        lock(&ctx.scans).remove(&key);
        return Ok((Action::await_change(), was_ready));
    }
    if repo.spec.suspend {
        return Ok((Action::await_change(), was_ready));
    }
    let generation = repo.meta().generation;
    let interval = match parse_interval(repo.spec.interval.as_deref(), DEFAULT_INTERVAL) {
        Ok(i) => i,
        Err(e) => {
            return stall(
                ctx,
                repo,
                status,
                "InvalidInterval",
                &format!("spec.interval: {e}"),
            )
            .await;
        }
    };
    // The agent's floor and ceiling over what the tenant asked for.
    let interval = ctx.agent.clamp_interval(interval);
    let timeout = ctx.agent.clamp_timeout(
        parse_interval(repo.spec.timeout.as_deref(), DEFAULT_TIMEOUT).unwrap_or(DEFAULT_TIMEOUT),
    );
    let requested = repo.annotations().get(RECONCILE_REQUESTED_AT).cloned();
    let request_pending = requested.is_some() && requested != status.last_handled_reconcile_at;
    // Skip when the last scan is fresh and nothing asks for a new one.
    let last = lock(&ctx.scans).get(&key).cloned();
    if let Some(last) = &last
        && !request_pending
        && status.observed_generation == generation
        && last.image == repo.spec.image
    {
        let age = last.scanned_at.elapsed();
        if age < interval {
            return Ok((Action::requeue(interval - age), was_ready));
        }
    }
    // The ImageRepository may be unknown to the registry pacing for a while after a 429.
    let exclusions = match compile_exclusions(repo) {
        Ok(e) => e,
        Err(message) => return stall(ctx, repo, status, "InvalidExclusionList", &message).await,
    };
    let target = match connect(ctx, repo).await {
        Ok(t) => t,
        Err((reason, message)) => {
            let permanent = reason == "InvalidImage";
            set_failure(
                &mut status.conditions,
                &reason,
                &message,
                permanent,
                generation,
            );
            status.observed_generation = generation;
            status.last_handled_reconcile_at = requested.clone();
            let ready = patch_status(ctx, repo, &status).await?;
            let action = if permanent {
                Action::await_change()
            } else {
                // Probably being fixed (a Secret created, a CA added): retry soon.
                Action::requeue(ctx.agent.backoff.on_error(
                    KIND,
                    &key,
                    Duration::from_secs(30).min(interval),
                ))
            };
            return Ok((action, ready));
        }
    };
    status.canonical_image_name = Some(format!("{}/{}", target.host, target.path));
    let started = Instant::now();
    match ctx.registries.list_tags(&target, timeout).await {
        Ok(list) => {
            let mut tags: Vec<String> = list
                .tags
                .into_iter()
                .filter(|t| !exclusions.iter().any(|r| r.is_match(t)))
                .collect();
            tags.sort_unstable();
            tags.dedup();
            let count = tags.len();
            let latest_tags: Vec<String> = tags.iter().rev().take(10).cloned().collect();
            let unchanged = last
                .as_ref()
                .is_some_and(|l| *l.tags == tags && l.image == repo.spec.image);
            lock(&ctx.scans).insert(
                key,
                ScanData {
                    tags: Arc::new(tags),
                    scanned_at: Instant::now(),
                    image: repo.spec.image.clone(),
                },
            );
            tracing::info!(repository = %format!("{ns}/{name}"), tags = count, requests = list.requests, not_modified = list.not_modified, ms = started.elapsed().as_millis() as u64, "scanned");
            status.last_scan_result = Some(ScanResult {
                tag_count: count as i64,
                scan_time: Some(now_time()),
                latest_tags,
                requests: i64::from(list.requests),
            });
            let message = if unchanged {
                format!("scan found {count} tags (unchanged)")
            } else {
                format!("scan found {count} tags")
            };
            set_ready(&mut status.conditions, "Succeeded", &message, generation);
        }
        Err(err) => {
            let (retry, within) = retry_delay(ctx, &key, &err, interval);
            // The bound, not the jittered delay: the message (and so the Event) stays the same
            // from one failed attempt to the next.
            let message = format!(
                "{err}; last good scan kept, retrying within {}s",
                within.as_secs()
            );
            tracing::warn!(repository = %format!("{ns}/{name}"), "{message}");
            set_failure(
                &mut status.conditions,
                err.reason(),
                &message,
                false,
                generation,
            );
            status.observed_generation = generation;
            status.last_handled_reconcile_at = requested.clone();
            let ready = patch_status(ctx, repo, &status).await?;
            return Ok((Action::requeue(retry), ready));
        }
    }
    status.observed_generation = generation;
    status.last_handled_reconcile_at = requested;
    let ready = patch_status(ctx, repo, &status).await?;
    ctx.agent.backoff.on_success(KIND, &(ns, name));
    Ok((Action::requeue(ctx.agent.backoff.interval(interval)), ready))
}

/// When to retry a failed scan, and the bound of that delay: the shared backoff (2 s, 4 s, …
/// with jitter), capped at 30 s for auth/not-found problems (someone is probably fixing them)
/// and 15 s for outages (never past the interval), and exactly what the registry asked for
/// after a 429.
fn retry_delay(
    ctx: &ImageContext,
    key: &Key,
    err: &RegistryError,
    interval: Duration,
) -> (Duration, Duration) {
    let cap = match err {
        RegistryError::RateLimited { retry_after, .. } => {
            (*retry_after).max(Duration::from_secs(1))
        }
        RegistryError::Unauthorized { .. }
        | RegistryError::Forbidden { .. }
        | RegistryError::NotFound { .. } => Duration::from_secs(30).min(interval),
        _ => Duration::from_secs(15).min(interval),
    };
    let delay = ctx.agent.backoff.on_error(KIND, key, cap);
    match err {
        RegistryError::RateLimited { .. } => (cap, cap),
        _ => (delay, cap),
    }
}

fn compile_exclusions(repo: &ImageRepository) -> Result<Vec<Regex>, String> {
    let list: Vec<String> = match &repo.spec.exclusion_list {
        Some(list) => list.clone(),
        None => DEFAULT_EXCLUSIONS.iter().map(|s| s.to_string()).collect(),
    };
    list.iter()
        .enumerate()
        .map(|(i, p)| {
            Regex::new(p)
                .map_err(|e| format!("spec.exclusionList[{i}] {p:?} is not a valid regex: {e}"))
        })
        .collect()
}

async fn stall(
    ctx: &ImageContext,
    repo: &ImageRepository,
    mut status: ImageRepositoryStatus,
    reason: &str,
    message: &str,
) -> Result<(Action, bool), ReconcileError> {
    let generation = repo.meta().generation;
    set_failure(&mut status.conditions, reason, message, true, generation);
    status.observed_generation = generation;
    let ready = patch_status(ctx, repo, &status).await?;
    Ok((Action::await_change(), ready))
}
