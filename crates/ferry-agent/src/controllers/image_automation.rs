//! Image automation in the agent: the ImageRepository, ImagePolicy and ImageUpdate controllers
//! (`image_repository.rs`, `image_policy.rs`, `image_update.rs`) and what they share besides the
//! agent's one [`Context`]: registry access and pacing, the in-memory tag lists that every
//! policy of a repository reads, per-branch git locks. They start with the other controllers
//! while the agent leads (`--image-automation`) and stop with them: running reconciles finish,
//! none is aborted. [`ScanTrigger`] is what registry webhooks call to ask for a scan now.
//!
//! The library parts (registry client, tag policies, markers, set-image edits, git write-back,
//! webhook payloads) are `ferry_images`; this module only runs them against the cluster.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_api::common::{READY, RECONCILE_REQUESTED_AT, find_condition};
use ferry_api::images::ImageRepository;
use ferry_images::reference::split_repository;
use ferry_images::registry::{Registries, RegistryLimits};
use ferry_images::webhook::RegistryEvent;
use futures::FutureExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Client, Resource, ResourceExt};
use thiserror::Error;

use crate::context::{Context, Key};

#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the write-back task failed: {0}")]
    WriteBackTask(#[source] tokio::task::JoinError),
}

/// A scan result shared by every policy on the repository.
#[derive(Debug, Clone)]
pub struct ScanData {
    pub tags: Arc<Vec<String>>,
    pub scanned_at: Instant,
    /// `spec.image` at scan time.
    pub image: String,
}

/// What the three image controllers share: the agent's [`Context`] (clients and tenancy,
/// options, metrics, events, backoff) plus the image automation's own state. One per leadership
/// term, like the Context.
pub struct ImageContext {
    pub agent: Arc<Context>,
    pub registries: Registries,
    /// (namespace, ImageRepository) → its last good scan.
    pub scans: Mutex<HashMap<Key, ScanData>>,
    /// Serialises write-backs to one repository branch within this process.
    pub git_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// ImageUpdate key → fingerprint of inputs and when it last ran.
    pub update_runs: Mutex<HashMap<Key, (String, Instant)>>,
}

impl ImageContext {
    pub fn new(agent: Arc<Context>) -> Self {
        Self {
            agent,
            registries: Registries::new(RegistryLimits::default()),
            scans: Mutex::default(),
            git_locks: Mutex::default(),
            update_runs: Mutex::default(),
        }
    }

    /// The client for reading Secrets that objects in `namespace` refer to: the namespace's
    /// tenant identity (see [`Context::secret_reader`]), so a tenant cannot make the controllers
    /// read a Secret the tenant may not read.
    pub(super) fn secret_client(&self, namespace: &str) -> Result<Client, String> {
        self.agent
            .secret_reader(namespace)
            .map(|(client, _identity)| client)
            .map_err(|e| e.to_string())
    }

    /// Where an ImageUpdate keeps its clone: `<cache-dir>/images/<namespace>/<name>`.
    pub(super) fn work_dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.agent
            .options
            .cache_dir
            .join("images")
            .join(namespace)
            .join(name)
    }

    /// Count a reconcile that ran to a decision in the agent's metrics, as the Release and
    /// GitSource controllers do: `success` when the object ended Ready, else `failure`.
    pub(super) fn observe(&self, kind: &str, key: &Key, ready: bool, started: Instant) {
        self.agent
            .metrics
            .observe_reconcile(kind, &key.0, &key.1, ready, started.elapsed());
    }
}

/// Publish an Event when an object's `Ready` condition changed (status, reason or message), with
/// the condition's message as the note: `Warning` with the condition's reason when it is not
/// Ready; `Normal` with the `news` reason when the reconcile brought news (`NewTags`,
/// `NewLatestImage`, `Pushed`), else with the condition's reason when it became Ready. A scan
/// that found the same tags, a run with nothing to write and a steady state publish nothing, so
/// a scan every interval does not flood the namespace's Events. News has reasons of its own, so
/// `kubectl get events` tells a push from a recovery (as GitSource's `NewArtifact` does). Status
/// messages never carry secret values. The same Event goes to the namespace's Alerts
/// (`eventSources` of the object's kind), with `revision` (the latest image, the pushed commit)
/// as its revision.
pub(super) async fn publish_ready_change<K>(
    ctx: &ImageContext,
    obj: &K,
    before: &[Condition],
    after: &[Condition],
    news: Option<&str>,
    revision: Option<&str>,
) where
    K: Resource<DynamicType = ()>,
{
    if let Some((type_, reason, note)) = ready_event(before, after, news) {
        ctx.agent.publish_event(obj, type_, reason, note).await;
        super::notification::dispatch(&ctx.agent, obj, revision, type_, reason, note);
    }
}

/// The decision of [`publish_ready_change`]: the Event's type, reason and note, or `None`.
fn ready_event<'a>(
    before: &[Condition],
    after: &'a [Condition],
    news: Option<&'a str>,
) -> Option<(EventType, &'a str, &'a str)> {
    let now = find_condition(after, READY)?;
    let was = find_condition(before, READY);
    let unchanged = was.is_some_and(|was| {
        was.status == now.status && was.reason == now.reason && was.message == now.message
    });
    if unchanged {
        return None;
    }
    let (type_, reason) = if now.status != "True" {
        (EventType::Warning, now.reason.as_str())
    } else if let Some(news) = news {
        (EventType::Normal, news)
    } else if was.is_some_and(|was| was.status == "True") {
        return None;
    } else {
        (EventType::Normal, now.reason.as_str())
    };
    Some((type_, reason, now.message.as_str()))
}

/// Run the three controllers (one set per watched namespace, or one cluster-wide) until the
/// Context's stop token is cancelled; running reconciles finish first.
pub async fn run(agent: Arc<Context>) {
    let stop = agent.stop.clone();
    let ctx = Arc::new(ImageContext::new(agent));
    let scopes: Vec<Option<String>> = if ctx.agent.options.watch_namespaces.is_empty() {
        vec![None]
    } else {
        ctx.agent
            .options
            .watch_namespaces
            .iter()
            .cloned()
            .map(Some)
            .collect()
    };
    let mut all = Vec::new();
    for ns in scopes {
        all.push(
            super::image_repository::controller(ctx.clone(), ns.clone(), stop.clone()).boxed(),
        );
        all.push(super::image_policy::controller(ctx.clone(), ns.clone(), stop.clone()).boxed());
        all.push(super::image_update::controller(ctx.clone(), ns, stop.clone()).boxed());
    }
    tracing::info!("image automation controllers started");
    futures::future::join_all(all).await;
    tracing::info!("image automation controllers stopped");
}

/// Asks for an immediate scan by setting `ferry.dev/reconcile-requested-at` on the
/// ImageRepository: the watch delivers it at once to whichever agent replica leads, and the
/// request survives a restart. Cheap to clone; hand one to the webhook receiver.
#[derive(Clone)]
pub struct ScanTrigger {
    client: Client,
}

impl ScanTrigger {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Scan `namespace/name` now.
    pub async fn trigger(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let api: Api<ImageRepository> = Api::namespaced(self.client.clone(), namespace);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let patch = serde_json::json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT: now}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// Scan every ImageRepository (in `namespace`, or all) whose image one of `events` names;
    /// all of them in the namespace when `events` is empty. Returns `namespace/name`s.
    pub async fn trigger_images(
        &self,
        namespace: Option<&str>,
        events: &[RegistryEvent],
    ) -> Result<Vec<String>, kube::Error> {
        request_scan(&self.client, namespace, events).await
    }
}

/// For the webhook receiver: ask every ImageRepository (in `namespace`, or everywhere) whose
/// image is one of `events` to scan now, by setting `ferry.dev/reconcile-requested-at` (works
/// whichever agent replica leads). An empty `events` means all ImageRepositories in the
/// namespace. Returns `namespace/name` of those asked.
pub async fn request_scan(
    client: &Client,
    namespace: Option<&str>,
    events: &[RegistryEvent],
) -> Result<Vec<String>, kube::Error> {
    let api: Api<ImageRepository> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let wanted: HashSet<String> = events.iter().map(RegistryEvent::canonical).collect();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut asked = Vec::new();
    for repo in api.list(&ListParams::default()).await? {
        let (host, path) = split_repository(&repo.spec.image);
        if !wanted.is_empty() && !wanted.contains(&format!("{host}/{path}")) {
            continue;
        }
        let ns = repo.namespace().unwrap_or_default();
        let api: Api<ImageRepository> = Api::namespaced(client.clone(), &ns);
        let patch = serde_json::json!({"metadata": {"annotations": {RECONCILE_REQUESTED_AT: now}}});
        api.patch(
            &repo.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        asked.push(format!("{ns}/{}", repo.name_any()));
    }
    Ok(asked)
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn parse_interval(text: Option<&str>, default: Duration) -> Result<Duration, String> {
    match text {
        None => Ok(default),
        Some(t) => ferry_api::parse_positive_duration(t).map_err(|e| e.to_string()),
    }
}

pub(super) fn now_time() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

#[cfg(test)]
mod tests {
    use ferry_api::common::set_condition;

    use super::*;

    fn ready(status: bool, reason: &str, message: &str) -> Vec<Condition> {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, READY, status, reason, message, Some(1));
        conditions
    }

    #[test]
    fn failures_are_warnings_once_per_change() {
        let failed = ready(false, "Unauthorized", "401 from r.example");
        assert_eq!(
            ready_event(&[], &failed, None),
            Some((EventType::Warning, "Unauthorized", "401 from r.example"))
        );
        let was_ready = ready(true, "Succeeded", "scan found 3 tags");
        assert_eq!(
            ready_event(&was_ready, &failed, Some("NewTags")),
            Some((EventType::Warning, "Unauthorized", "401 from r.example")),
            "a failure is never reported as news"
        );
        // The same failure again (a retry) publishes nothing.
        assert_eq!(ready_event(&failed, &failed.clone(), None), None);
        // Another message is another Event.
        let other = ready(false, "Unauthorized", "401 from r.example (token expired)");
        assert!(ready_event(&failed, &other, None).is_some());
    }

    #[test]
    fn ready_publishes_news_and_recovery_but_not_routine_runs() {
        let was_ready = ready(
            true,
            "Succeeded",
            "no changes: 2 reference(s) up to date at abc",
        );
        let routine = ready(
            true,
            "Succeeded",
            "no changes: 2 reference(s) up to date at def",
        );
        assert_eq!(ready_event(&was_ready, &routine, None), None);
        let pushed = ready(
            true,
            "Succeeded",
            "pushed 1234 to main: 1 value(s) in 1 file(s)",
        );
        assert_eq!(
            ready_event(&was_ready, &pushed, Some("Pushed")),
            Some((
                EventType::Normal,
                "Pushed",
                "pushed 1234 to main: 1 value(s) in 1 file(s)"
            ))
        );
        let failed = ready(false, "PushRefused", "refused");
        assert_eq!(
            ready_event(&failed, &routine, None),
            Some((
                EventType::Normal,
                "Succeeded",
                "no changes: 2 reference(s) up to date at def"
            )),
            "becoming Ready again is reported"
        );
        assert_eq!(ready_event(&routine, &[], None), None, "no Ready condition");
    }
}
