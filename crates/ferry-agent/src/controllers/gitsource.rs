//! The GitSource controller: fetches each source on its interval, on spec change and on demand
//! (annotation, webhook), publishes the checkout to the in-memory artifact index, and wakes the
//! Releases that use it when the revision changes. A failed fetch keeps the last good artifact.
//! Status is only written when something a user would see changed (zero writes in steady state).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::common::{self, READY, RECONCILE_REQUESTED_AT};
use ferry_api::{GitSource, GitSourceStatus};
use ferry_engine::source::git::{self, FetchRequest, GitAuth, GitReference};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::notification;
use crate::context::{Artifact, Context, key_of};
use crate::metrics::ObjectLabels;

const KIND: &str = "GitSource";

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Fetch(String),
    #[error("cannot update the status of GitSource {0}: {1}")]
    Status(String, String),
}

/// Interval, or the Flux default of one minute.
pub fn interval(source: &GitSource) -> Duration {
    source
        .spec
        .interval
        .as_deref()
        .and_then(|i| common::parse_duration(i).ok())
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_secs(1))
}

fn reference(source: &GitSource) -> GitReference {
    let r = source.spec.git_ref.clone().unwrap_or_default();
    if let Some(commit) = r.commit {
        GitReference::Commit(commit)
    } else if let Some(range) = r.semver {
        GitReference::Semver(range)
    } else if let Some(tag) = r.tag {
        GitReference::Tag(tag)
    } else {
        GitReference::Branch(r.branch.unwrap_or_else(|| "main".to_string()))
    }
}

pub async fn reconcile(source: Arc<GitSource>, ctx: Arc<Context>) -> Result<Action, SourceError> {
    let started = Instant::now();
    let key = key_of(&*source);
    let _running = ctx.metrics.running(KIND);
    let (result, fetched) = reconcile_inner(&source, &ctx).await;
    // A fetch that failed is a failed reconcile even though its status was written.
    if result.is_ok() {
        ctx.metrics
            .observe_reconcile(KIND, &key.0, &key.1, fetched, started.elapsed());
    }
    result
}

/// The reconcile, and whether the source is good (fetched, or suspended with an artifact).
async fn reconcile_inner(
    source: &GitSource,
    ctx: &Arc<Context>,
) -> (Result<Action, SourceError>, bool) {
    let key = key_of(source);
    let api: Api<GitSource> = Api::namespaced(ctx.client.clone(), &key.0);
    let old = source.status.clone().unwrap_or_default();
    let requested = source.annotations().get(RECONCILE_REQUESTED_AT).cloned();
    // A suspended source still fetches once per process so its Releases have files to read.
    if source.spec.suspend
        && requested == old.last_handled_reconcile_at
        && ctx.artifact(&key).is_some()
    {
        tracing::debug!(source = %format!("{}/{}", key.0, key.1), "suspended");
        return (Ok(Action::await_change()), true);
    }
    let mut status = old.clone();
    status.observed_generation = source.metadata.generation;
    status.last_handled_reconcile_at = requested.clone();

    let fetched = fetch(source, ctx).await;
    let good = fetched.is_ok();
    let action = match fetched {
        Ok(checkout) => {
            ctx.backoff.on_success(KIND, &key);
            let artifact = Artifact {
                path: checkout.path,
                revision: checkout.revision.clone(),
                url: git::redact_url(&source.spec.url),
            };
            let changed = ctx.set_artifact(key.clone(), artifact);
            if status.revision.as_deref() != Some(&checkout.revision) {
                status.revision = Some(checkout.revision.clone());
                status.last_fetch_time = Some(Time(k8s_openapi::jiff::Timestamp::now()));
            }
            common::set_ready(
                &mut status.conditions,
                "Succeeded",
                &format!("stored revision {}", checkout.revision),
                source.metadata.generation,
            );
            if changed {
                tracing::info!(source = %format!("{}/{}", key.0, key.1), revision = %checkout.revision, "fetched new revision");
                ctx.trigger_releases_of_source(&key);
            }
            // A revision new to the status (not one re-fetched after a restart or a takeover) is
            // a Normal event, as Flux's source-controller reports `NewArtifact`, and goes to the
            // namespace's Alerts.
            if old.revision.as_deref() != Some(&checkout.revision) {
                let note = format!("stored revision {}", checkout.revision);
                ctx.publish_event(source, EventType::Normal, "NewArtifact", &note)
                    .await;
                notification::dispatch(
                    ctx,
                    source,
                    Some(&checkout.revision),
                    EventType::Normal,
                    "NewArtifact",
                    &note,
                );
            }
            Action::requeue(ctx.backoff.interval(ctx.clamp_interval(interval(source))))
        }
        Err(err) => {
            let (reason, stalled) = match &err {
                SourceError::Invalid(_) => ("InvalidSpec", true),
                _ => ("FetchFailed", false),
            };
            let message = err.to_string();
            let prev_message = common::find_condition(&old.conditions, READY)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            let kept = status
                .revision
                .as_deref()
                .map(|r| format!("; still serving the last good revision {r}"))
                .unwrap_or_default();
            let full = format!("{message}{kept}");
            // kstatus: Stalled for an invalid spec, Reconciling (retrying) for a failed fetch.
            common::set_failure(
                &mut status.conditions,
                reason,
                &full,
                stalled,
                source.metadata.generation,
            );
            if prev_message != full {
                tracing::warn!(source = %format!("{}/{}", key.0, key.1), "fetch failed: {message}");
                ctx.publish_event(source, EventType::Warning, reason, &full)
                    .await;
                notification::dispatch(
                    ctx,
                    source,
                    status.revision.as_deref(),
                    EventType::Warning,
                    reason,
                    &full,
                );
            }
            if stalled {
                Action::await_change()
            } else {
                Action::requeue(ctx.backoff.on_error(
                    KIND,
                    &key,
                    ctx.clamp_interval(interval(source)),
                ))
            }
        }
    };
    if status_differs(&old, &status) {
        let patch = serde_json::json!({ "status": status });
        if let Err(e) = api
            .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            let err = SourceError::Status(format!("{}/{}", key.0, key.1), e.to_string());
            return (Err(err), good);
        }
    }
    (Ok(action), good)
}

/// Compare statuses ignoring condition timestamps, so unchanged state is never written.
pub fn status_differs(old: &GitSourceStatus, new: &GitSourceStatus) -> bool {
    let strip = |s: &GitSourceStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(old) != strip(new)
}

async fn fetch(source: &GitSource, ctx: &Context) -> Result<git::Checkout, SourceError> {
    let key = key_of(source);
    let url = source.spec.url.clone();
    // Local repositories read the agent's disk (other tenants' caches included): refused unless
    // the operator allows them. Not retried: only a spec change can fix it.
    git::check_url(&url, ctx.options.allow_local_git_sources)
        .map_err(|e| SourceError::Invalid(format!("spec.url: {e}")))?;
    let timeout = match source.spec.timeout.as_deref() {
        Some(t) => common::parse_duration(t)
            .map_err(|e| SourceError::Invalid(format!("spec.timeout: {e}")))?,
        None => Duration::from_secs(60),
    };
    // The agent's ceiling (--max-timeout) over what the tenant asked for.
    let timeout = ctx.clamp_timeout(timeout);
    if let Some(i) = source.spec.interval.as_deref() {
        common::parse_duration(i)
            .map_err(|e| SourceError::Invalid(format!("spec.interval: {e}")))?;
    }
    let auth = match &source.spec.secret_ref {
        Some(secret_ref) => load_auth(ctx, &key.0, &secret_ref.name).await?,
        None => GitAuth::default(),
    };
    let options = &ctx.options;
    let request = FetchRequest {
        url,
        reference: reference(source),
        auth,
        timeout,
        // The cache is per source: no tenant reads another's clone or is served a commit it
        // has not fetched with its own credentials.
        owner: format!("{}/{}", key.0, key.1),
        allow_local: options.allow_local_git_sources,
        limits: git::FetchLimits {
            max_fetch_bytes: options.git_max_fetch_bytes,
            checkout: git::CheckoutLimits {
                max_bytes: options.git_max_checkout_bytes,
                max_entries: options.git_max_checkout_files,
                ..git::CheckoutLimits::default()
            },
            max_cache_bytes: (options.git_cache_max_bytes > 0)
                .then_some(options.git_cache_max_bytes),
        },
    };
    let cache_dir = ctx.options.cache_dir.clone();
    let _slot = ctx
        .fetch_slots
        .acquire()
        .await
        .map_err(|_| SourceError::Fetch("agent is shutting down".to_string()))?;
    let started = Instant::now();
    let task = tokio::task::spawn_blocking(move || git::fetch(&cache_dir, &request));
    // The blocking fetch aborts itself at the deadline; this is the backstop.
    let joined = tokio::time::timeout(timeout + Duration::from_secs(5), task).await;
    ctx.metrics
        .fetch_duration
        .get_or_create(&ObjectLabels {
            kind: KIND.to_string(),
            namespace: key.0.clone(),
            name: key.1.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    match joined {
        Err(_) => Err(SourceError::Fetch(format!(
            "fetch of {} timed out after {timeout:?}",
            git::redact_url(&source.spec.url)
        ))),
        Ok(Err(join)) => Err(SourceError::Fetch(format!("fetch task failed: {join}"))),
        Ok(Ok(Err(err))) => Err(SourceError::Fetch(err.to_string())),
        Ok(Ok(Ok(checkout))) => Ok(checkout),
    }
}

/// Read credentials from the Secret; values are never logged or copied into messages.
async fn load_auth(ctx: &Context, namespace: &str, name: &str) -> Result<GitAuth, SourceError> {
    // Read as the namespace's tenant identity, never the agent's: a GitSource must not send a
    // Secret its author may not read to a git server of the author's choosing.
    let (reader, _identity) = ctx
        .secret_reader(namespace)
        .map_err(|e| SourceError::Fetch(e.to_string()))?;
    let secrets: Api<Secret> = Api::namespaced(reader, namespace);
    let secret = secrets.get_opt(name).await.map_err(|e| {
        SourceError::Fetch(format!(
            "cannot read Secret {namespace}/{name} (spec.secretRef): {e}"
        ))
    })?;
    let Some(secret) = secret else {
        return Err(SourceError::Fetch(format!(
            "Secret {namespace}/{name} named in spec.secretRef does not exist; create it with username/password, bearerToken or identity/known_hosts"
        )));
    };
    let data = secret.data.unwrap_or_default();
    let auth = GitAuth::from_secret_keys(|k| data.get(k).map(|v| v.0.as_slice()));
    if auth.username.is_none() && auth.bearer_token.is_none() && auth.ssh_identity.is_none() {
        return Err(SourceError::Invalid(format!(
            "Secret {namespace}/{name} has none of the keys username/password, bearerToken, identity"
        )));
    }
    Ok(auth)
}

pub fn error_policy(source: Arc<GitSource>, err: &SourceError, ctx: Arc<Context>) -> Action {
    let key = key_of(&*source);
    tracing::warn!(source = %format!("{}/{}", key.0, key.1), "reconcile failed: {err}");
    ctx.metrics.observe_error(KIND);
    Action::requeue(
        ctx.backoff
            .on_error(KIND, &key, ctx.clamp_interval(interval(&source))),
    )
}
