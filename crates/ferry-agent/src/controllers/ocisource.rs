//! The OCISource controller: pulls each source's artifact on its interval, on spec change and
//! on demand (annotation), publishes the unpacked directory to the artifact index Releases read
//! (the same one GitSources use, under the kind's own key), and wakes the Releases that use it
//! when the revision changes. A failed or refused pull keeps the last good artifact; status is
//! written only when something a user would see changed.
//!
//! Safety: the registry credentials come from a Secret of the source's own namespace, read with
//! the namespace's tenant identity, and the engine's registry client sends them only to the
//! registry named in `spec.url` (and an https token realm it declares). Plain HTTP only with
//! `spec.insecure`. Every byte pulled is verified against its digest and unpacked within the
//! agent's limits (see `ferry_engine::source::oci`).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ferry_api::common::{self, READY, RECONCILE_REQUESTED_AT};
use ferry_api::{OCISource, OCISourceStatus};
use ferry_engine::source::oci::{self, ArtifactRef, OciError, PullLimits, PullRequest};
use ferry_engine::source::registry::auth::{self, Credentials};
use ferry_engine::source::registry::{Registries, is_loopback_host};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::notification;
use crate::context::{Artifact, Context, Key, key_of};
use crate::metrics::ObjectLabels;

const KIND: &str = ferry_api::ocisource::OCI_SOURCE_KIND;

#[derive(Debug, thiserror::Error)]
pub enum OciSourceError {
    #[error("cannot update the status of OCISource {0}: {1}")]
    Status(String, String),
}

/// Why a pull did not produce an artifact: a reason for the condition and a message.
struct Failure {
    reason: &'static str,
    message: String,
    /// Only a spec change can fix it.
    stalled: bool,
}

impl Failure {
    fn spec(message: String) -> Self {
        Self {
            reason: "InvalidSpec",
            message,
            stalled: true,
        }
    }
}

impl From<OciError> for Failure {
    fn from(err: OciError) -> Self {
        Self {
            reason: err.reason(),
            stalled: err.is_spec_error(),
            message: err.to_string(),
        }
    }
}

/// One registry client per process: its token cache and per-host pacing are shared by every
/// OCISource (tokens are keyed by credentials, so no source uses another's).
fn registries() -> &'static Registries {
    static REGISTRIES: OnceLock<Registries> = OnceLock::new();
    REGISTRIES.get_or_init(Registries::default)
}

/// The last good artifact of the OCISource `key`.
pub fn artifact(ctx: &Context, key: &Key) -> Option<Artifact> {
    ctx.artifact(&artifact_key(key))
}

/// The artifact index is shared with GitSources; an OCISource's entry is kept apart by kind so
/// a GitSource and an OCISource of one name never read each other's files.
fn artifact_key(key: &Key) -> Key {
    (key.0.clone(), format!("{KIND}/{}", key.1))
}

/// Interval, or the Flux default of one minute.
pub fn interval(source: &OCISource) -> Duration {
    source
        .spec
        .interval
        .as_deref()
        .and_then(|i| common::parse_duration(i).ok())
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_secs(1))
}

fn reference(source: &OCISource) -> ArtifactRef {
    let r = source.spec.oci_ref.clone().unwrap_or_default();
    if let Some(digest) = r.digest {
        ArtifactRef::Digest(digest)
    } else if let Some(range) = r.semver {
        ArtifactRef::Semver(range)
    } else {
        ArtifactRef::Tag(r.tag.unwrap_or_else(|| "latest".to_string()))
    }
}

pub async fn reconcile(
    source: Arc<OCISource>,
    ctx: Arc<Context>,
) -> Result<Action, OciSourceError> {
    let started = Instant::now();
    let key = key_of(&*source);
    let _running = ctx.metrics.running(KIND);
    let (result, pulled) = reconcile_inner(&source, &ctx).await;
    if result.is_ok() {
        ctx.metrics
            .observe_reconcile(KIND, &key.0, &key.1, pulled, started.elapsed());
    }
    result
}

async fn reconcile_inner(
    source: &OCISource,
    ctx: &Arc<Context>,
) -> (Result<Action, OciSourceError>, bool) {
    let key = key_of(source);
    let shown = format!("{}/{}", key.0, key.1);
    let api: Api<OCISource> = Api::namespaced(ctx.client.clone(), &key.0);
    let old = source.status.clone().unwrap_or_default();
    let requested = source.annotations().get(RECONCILE_REQUESTED_AT).cloned();
    if source.spec.suspend
        && requested == old.last_handled_reconcile_at
        && artifact(ctx, &key).is_some()
    {
        return (Ok(Action::await_change()), true);
    }
    let mut status = old.clone();
    status.observed_generation = source.metadata.generation;
    status.last_handled_reconcile_at = requested;

    let pulled = pull(source, ctx).await;
    let good = pulled.is_ok();
    let action = match pulled {
        Ok(pulled) => {
            ctx.backoff.on_success(KIND, &key);
            let url = source.spec.url.clone();
            let changed = ctx.set_artifact(
                artifact_key(&key),
                Artifact {
                    path: pulled.path.clone(),
                    revision: pulled.revision.clone(),
                    url,
                },
            );
            if status.revision.as_deref() != Some(&pulled.revision) {
                status.revision = Some(pulled.revision.clone());
                status.last_fetch_time = Some(Time(k8s_openapi::jiff::Timestamp::now()));
            }
            status.origin_source = pulled.origin_source.clone();
            status.origin_revision = pulled.origin_revision.clone();
            // kstatus (ferry_api::kstatus): Ready=True, no Reconciling, no Stalled.
            common::set_ready(
                &mut status.conditions,
                "Succeeded",
                &format!("stored artifact revision {}", pulled.revision),
                source.metadata.generation,
            );
            if changed {
                tracing::info!(source = %shown, revision = %pulled.revision, "pulled new artifact");
                ctx.trigger_releases_of_source(&key);
            }
            if old.revision.as_deref() != Some(&pulled.revision) {
                let note = format!("stored artifact revision {}", pulled.revision);
                ctx.publish_event(source, EventType::Normal, "NewArtifact", &note)
                    .await;
                notification::dispatch(
                    ctx,
                    source,
                    Some(&pulled.revision),
                    EventType::Normal,
                    "NewArtifact",
                    &note,
                );
            }
            Action::requeue(ctx.backoff.interval(ctx.clamp_interval(interval(source))))
        }
        Err(failure) => {
            let prev_message = common::find_condition(&old.conditions, READY)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            let kept = status
                .revision
                .as_deref()
                .map(|r| format!("; still serving the last good revision {r}"))
                .unwrap_or_default();
            let full = format!("{}{kept}", failure.message);
            // kstatus: Stalled (only a spec change helps) for an invalid spec, else Reconciling
            // (ProgressingWithRetry: a failed pull, refused credentials, a missing Secret are
            // retried); Ready=False last either way.
            common::set_failure(
                &mut status.conditions,
                failure.reason,
                &full,
                failure.stalled,
                source.metadata.generation,
            );
            if prev_message != full {
                tracing::warn!(source = %shown, "pull failed: {}", failure.message);
                ctx.publish_event(source, EventType::Warning, failure.reason, &full)
                    .await;
                notification::dispatch(
                    ctx,
                    source,
                    status.revision.as_deref(),
                    EventType::Warning,
                    failure.reason,
                    &full,
                );
            }
            if failure.stalled {
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
            return (Err(OciSourceError::Status(shown, e.to_string())), good);
        }
    }
    (Ok(action), good)
}

/// Compare statuses ignoring condition timestamps, so unchanged state is never written.
fn status_differs(old: &OCISourceStatus, new: &OCISourceStatus) -> bool {
    let strip = |s: &OCISourceStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(old) != strip(new)
}

/// The spec checked before anything is sent anywhere: URL, reference, durations, plain HTTP.
fn validate(source: &OCISource) -> Result<(oci::OciUrl, ArtifactRef, Duration), Failure> {
    let url =
        oci::parse_url(&source.spec.url).map_err(|e| Failure::spec(format!("spec.url: {e}")))?;
    if url.tag.is_some() || url.digest.is_some() {
        return Err(Failure::spec(format!(
            "spec.url {:?} must not carry a tag or digest; put it in spec.ref (tag, semver or digest) and set spec.url to {}",
            source.spec.url,
            format_args!("{}{}", oci::SCHEME, url.repository())
        )));
    }
    // The registry client speaks plain HTTP to loopback hosts on its own (as Docker does); an
    // OCISource never sends anything in clear unless its author said so.
    if is_loopback_host(&url.host) && !source.spec.insecure {
        return Err(Failure::spec(format!(
            "registry {} is reached over plain HTTP; set spec.insecure: true to allow that",
            url.host
        )));
    }
    let reference = reference(source);
    oci::validate_ref(&reference).map_err(|e| Failure::spec(format!("spec.ref: {e}")))?;
    if let Some(i) = source.spec.interval.as_deref() {
        common::parse_duration(i).map_err(|e| Failure::spec(format!("spec.interval: {e}")))?;
    }
    let timeout = match source.spec.timeout.as_deref() {
        Some(t) => {
            common::parse_duration(t).map_err(|e| Failure::spec(format!("spec.timeout: {e}")))?
        }
        None => Duration::from_secs(60),
    };
    Ok((url, reference, timeout))
}

async fn pull(source: &OCISource, ctx: &Context) -> Result<oci::PulledArtifact, Failure> {
    let key = key_of(source);
    let (url, reference, timeout) = validate(source)?;
    let timeout = ctx.clamp_timeout(timeout);
    let credentials = match &source.spec.secret_ref {
        Some(r) => load_credentials(ctx, &key.0, &r.name, &url.host).await?,
        None => Credentials::Anonymous,
    };
    let options = &ctx.options;
    let request = PullRequest {
        url,
        reference,
        credentials,
        insecure: source.spec.insecure,
        owner: format!("{}/{}", key.0, key.1),
        timeout,
        limits: PullLimits {
            extract: oci::ExtractLimits {
                // The same ceilings as a git checkout: an artifact is a repository's files.
                max_bytes: options.git_max_checkout_bytes,
                max_entries: options.git_max_checkout_files,
                ..oci::ExtractLimits::default()
            },
            ..PullLimits::default()
        },
    };
    let _slot = ctx.fetch_slots.acquire().await.map_err(|_| Failure {
        reason: "FetchFailed",
        message: "agent is shutting down".into(),
        stalled: false,
    })?;
    let started = Instant::now();
    let result = oci::pull(registries(), &ctx.options.cache_dir, &request).await;
    ctx.metrics
        .fetch_duration
        .get_or_create(&ObjectLabels {
            kind: KIND.to_string(),
            namespace: key.0.clone(),
            name: key.1.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    result.map_err(Failure::from)
}

/// Registry credentials from the Secret, read as the namespace's tenant identity (never the
/// agent's): an OCISource must not send a Secret its author may not read to a registry of the
/// author's choosing. Values never reach messages.
async fn load_credentials(
    ctx: &Context,
    namespace: &str,
    name: &str,
    host: &str,
) -> Result<Credentials, Failure> {
    let fail = |reason: &'static str, message: String| Failure {
        reason,
        message,
        stalled: false,
    };
    let (reader, identity) = ctx
        .secret_reader(namespace)
        .map_err(|e| fail("SecretUnreadable", e.to_string()))?;
    let secrets: Api<Secret> = Api::namespaced(reader, namespace);
    let secret = secrets.get_opt(name).await.map_err(|e| {
        fail(
            "SecretUnreadable",
            format!(
                "cannot read Secret {namespace}/{name} (spec.secretRef) as {identity}: {e}; grant it get on that Secret"
            ),
        )
    })?;
    let Some(secret) = secret else {
        return Err(fail(
            "SecretNotFound",
            format!(
                "Secret {namespace}/{name} named in spec.secretRef does not exist; create it with `kubectl create secret docker-registry`"
            ),
        ));
    };
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    auth::from_secret_data(&format!("{namespace}/{name}"), &data, host)
        .map_err(|e| fail("InvalidSecret", e.to_string()))
}

/// For a Release whose OCISource has no artifact here yet: `Ok` when the source exists and is
/// not failing (its pull is under way and wakes the Release), else why not.
pub async fn source_wait(ctx: &Context, source: &Key) -> Result<(), String> {
    let watched =
        ctx.options.watch_namespaces.is_empty() || ctx.options.watch_namespaces.contains(&source.0);
    let not_found = || {
        format!(
            "OCISource {}/{} not found (is it created, and in a namespace this agent watches?)",
            source.0, source.1
        )
    };
    if !watched {
        return Err(not_found());
    }
    // Read from the API server, not a cache: only Releases whose source has no artifact here
    // yet ask (a new source, or the first pull after a start or a takeover).
    let api: Api<OCISource> = Api::namespaced(ctx.client.clone(), &source.0);
    let found = api
        .get_opt(&source.1)
        .await
        .map_err(|err| format!("cannot read OCISource {}/{}: {err}", source.0, source.1))?;
    let Some(found) = found else {
        return Err(not_found());
    };
    let conditions = found.status.unwrap_or_default().conditions;
    match common::find_condition(&conditions, READY) {
        Some(c) if c.status != "True" => Err(format!(
            "OCISource {}/{} has no artifact yet: {}",
            source.0, source.1, c.message
        )),
        _ => Ok(()),
    }
}

pub fn error_policy(source: Arc<OCISource>, err: &OciSourceError, ctx: Arc<Context>) -> Action {
    let key = key_of(&*source);
    tracing::warn!(source = %format!("{}/{}", key.0, key.1), "reconcile failed: {err}");
    ctx.metrics.observe_error(KIND);
    Action::requeue(
        ctx.backoff
            .on_error(KIND, &key, ctx.clamp_interval(interval(&source))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::{OCIRef, OCISourceSpec};

    fn source(url: &str, insecure: bool, r: OCIRef) -> OCISource {
        OCISource::new(
            "app",
            OCISourceSpec {
                url: url.into(),
                oci_ref: Some(r),
                insecure,
                ..OCISourceSpec::default()
            },
        )
    }

    #[test]
    fn spec_checks_before_any_request() {
        let tag = OCIRef {
            tag: Some("v1".into()),
            ..OCIRef::default()
        };
        assert!(validate(&source("oci://ghcr.io/org/app", false, tag.clone())).is_ok());
        for (url, insecure) in [
            ("oci://127.0.0.1:5000/app", false),
            ("oci://ghcr.io/org/app:v1", false),
            ("https://ghcr.io/org/app", false),
        ] {
            let err = validate(&source(url, insecure, tag.clone())).err().unwrap();
            assert!(err.stalled && err.reason == "InvalidSpec", "{url}");
        }
        let err = validate(&source("oci://127.0.0.1:5000/app", false, tag.clone()))
            .err()
            .unwrap();
        assert!(err.message.contains("spec.insecure"), "{}", err.message);
        assert!(validate(&source("oci://127.0.0.1:5000/app", true, tag)).is_ok());
        let digest = OCIRef {
            digest: Some("sha256:../../x".into()),
            ..OCIRef::default()
        };
        assert!(validate(&source("oci://ghcr.io/org/app", false, digest)).is_err());
    }

    #[test]
    fn precedence_digest_semver_tag() {
        let all = OCIRef {
            tag: Some("t".into()),
            semver: Some("1.x".into()),
            digest: Some(format!("sha256:{}", "a".repeat(64))),
        };
        let s = source("oci://ghcr.io/org/app", false, all);
        assert!(matches!(reference(&s), ArtifactRef::Digest(_)));
        let s = source("oci://ghcr.io/org/app", false, OCIRef::default());
        assert_eq!(reference(&s), ArtifactRef::Tag("latest".into()));
    }
}
