//! The image automation controllers (kube-runtime): ImageRepository scans, ImagePolicy
//! evaluation, ImageUpdate write-back. [`ImageAutomation`] owns the shared state (registry
//! access, the in-memory tag lists that every policy of a repository shares, per-repository git
//! locks); the agent builds one, hands its [`ScanTrigger`] to the webhook receiver, and runs it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_api::common::RECONCILE_REQUESTED_AT;
use ferry_api::images::ImageRepository;
use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use thiserror::Error;

use ferry_images::reference::split_repository;
use ferry_images::registry::{Registries, RegistryLimits};
use ferry_images::webhook::RegistryEvent;

pub use super::image_update::render_message;

/// Options for the image controllers.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Where the automation keeps its git clones (`<cache_dir>/images/<ns>/<name>`).
    pub cache_dir: PathBuf,
    /// Only watch these namespaces (default, empty: all). Scans, registry pacing and caches
    /// are shared across them.
    pub namespaces: Vec<String>,
    pub limits: RegistryLimits,
    /// Reconciles in parallel per controller.
    pub concurrency: u16,
    /// Allow ImageUpdates whose GitSource has a `file://` URL or a local path (the agent's
    /// `--allow-local-git-sources`; off by default).
    pub allow_local_git_sources: bool,
    /// Most pack bytes one write-back fetch may receive (the agent's `--git-max-fetch-bytes`).
    pub git_max_fetch_bytes: u64,
    /// Most bytes of files in one write-back clone (the agent's `--git-max-checkout-bytes`).
    pub git_max_checkout_bytes: u64,
    /// Who reads the Secrets an ImageRepository or ImageUpdate's GitSource names (the agent
    /// passes the namespace's tenant identity, so a tenant cannot make the controller read a
    /// Secret the tenant may not read). `None`: the controllers' own client.
    pub secret_reader: Option<SecretReader>,
    /// Floor for a tenant's `spec.interval` (ImageRepository, ImageUpdate): `interval: 1s` must
    /// not hammer the registry or the git server (the agent's `--min-interval`).
    pub min_interval: Duration,
    /// Ceiling for a tenant's `spec.timeout` (the agent's `--max-timeout`).
    pub max_timeout: Duration,
    /// Follow references into other namespaces (an ImagePolicy's `imageRepositoryRef`, an
    /// ImageUpdate's `sourceRef`): the agent's `--allow-cross-namespace-refs`, the same rule as
    /// for Releases ([`ferry_api::referenced_namespace`]). Off by default.
    pub allow_cross_namespace_refs: bool,
}

/// Namespace → the client that reads that namespace's tenant-referenced Secrets.
type SecretClientFn = dyn Fn(&str) -> Result<Client, String> + Send + Sync;

/// Builds the client that reads tenant-referenced Secrets of a namespace.
#[derive(Clone)]
pub struct SecretReader(Arc<SecretClientFn>);

impl SecretReader {
    pub fn new(f: impl Fn(&str) -> Result<Client, String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for SecretReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretReader")
    }
}

impl ImageOptions {
    pub fn new(cache_dir: PathBuf) -> Self {
        Self {
            cache_dir,
            namespaces: Vec::new(),
            limits: RegistryLimits::default(),
            concurrency: 4,
            allow_local_git_sources: false,
            git_max_fetch_bytes: 512 * 1024 * 1024,
            git_max_checkout_bytes: 1024 * 1024 * 1024,
            secret_reader: None,
            min_interval: Duration::from_secs(1),
            max_timeout: Duration::from_secs(15 * 60),
            allow_cross_namespace_refs: false,
        }
    }
}

#[derive(Debug, Error)]
pub enum ReconcileError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Other(String),
}

/// A scan result shared by every policy on the repository.
#[derive(Debug, Clone)]
pub struct ScanData {
    pub tags: Arc<Vec<String>>,
    pub scanned_at: Instant,
    /// `spec.image` at scan time.
    pub image: String,
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Context {
    /// The client for reading Secrets that objects in `namespace` refer to.
    pub(crate) fn secret_client(&self, namespace: &str) -> Result<Client, String> {
        match &self.options.secret_reader {
            Some(reader) => (reader.0)(namespace),
            None => Ok(self.client.clone()),
        }
    }
}

pub(crate) struct Context {
    pub client: Client,
    pub registries: Registries,
    pub scans: Mutex<HashMap<(String, String), ScanData>>,
    pub options: ImageOptions,
    /// Serialises write-backs to one repository branch within this process.
    pub git_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// ImageUpdate key → fingerprint of inputs and when it last ran.
    pub update_runs: Mutex<HashMap<(String, String), (String, Instant)>>,
}

/// The image automation: build with [`ImageAutomation::new`], take [`ImageAutomation::trigger`]
/// for the webhook receiver, then [`ImageAutomation::run`].
pub struct ImageAutomation {
    ctx: Arc<Context>,
}

impl ImageAutomation {
    pub fn new(client: Client, options: ImageOptions) -> Self {
        let ctx = Arc::new(Context {
            client,
            registries: Registries::new(options.limits.clone()),
            scans: Mutex::default(),
            options,
            git_locks: Mutex::default(),
            update_runs: Mutex::default(),
        });
        Self { ctx }
    }

    pub fn trigger(&self) -> ScanTrigger {
        ScanTrigger::new(self.ctx.client.clone())
    }

    /// Run the three controllers until one of them stops (it does not, unless the API goes away
    /// for good).
    pub async fn run(self) -> anyhow::Result<()> {
        let ctx = self.ctx;
        let scopes: Vec<Option<String>> = if ctx.options.namespaces.is_empty() {
            vec![None]
        } else {
            ctx.options.namespaces.iter().cloned().map(Some).collect()
        };
        let mut all: Vec<
            std::pin::Pin<Box<dyn std::future::Future<Output = &'static str> + Send>>,
        > = Vec::new();
        for ns in scopes {
            let c = ctx.clone();
            let n = ns.clone();
            all.push(Box::pin(async move {
                super::image_repository::controller(c, n).await;
                "ImageRepository"
            }));
            let c = ctx.clone();
            let n = ns.clone();
            all.push(Box::pin(async move {
                super::image_policy::controller(c, n).await;
                "ImagePolicy"
            }));
            let c = ctx.clone();
            all.push(Box::pin(async move {
                super::image_update::controller(c, ns).await;
                "ImageUpdate"
            }));
        }
        tracing::info!("image automation controllers started");
        let (stopped, _, _) = futures::future::select_all(all).await;
        anyhow::bail!("the {stopped} controller stopped")
    }
}

/// Convenience for the agent: build and run with default options.
pub async fn run_controllers(client: Client, options: ImageOptions) -> anyhow::Result<()> {
    ImageAutomation::new(client, options).run().await
}

/// The CRDs of image automation (for `ferry-agent crds` / install).
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    ferry_api::crds::image_crds()
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

pub(crate) fn parse_interval(text: Option<&str>, default: Duration) -> Result<Duration, String> {
    match text {
        None => Ok(default),
        Some(t) => ferry_api::parse_positive_duration(t).map_err(|e| e.to_string()),
    }
}

pub(crate) fn now_time() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

/// Drive a controller stream to completion, logging reconcile failures.
pub(crate) async fn drain<S, T, E>(stream: S, kind: &'static str)
where
    S: futures::Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    stream
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(kind, "reconcile: {e}");
            }
        })
        .await;
}
