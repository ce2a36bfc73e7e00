//! State shared by the agent's controllers: the admin client, per-tenant clients, the in-memory
//! artifact index (GitSource → checkout), trigger channels between controllers, backoff counters,
//! metrics and the event recorder.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use ferry_api::{GitSource, Release};
use ferry_engine::discovery::DiscoveryCache;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Config};
use tokio::sync::{Semaphore, mpsc};

use crate::metrics::Metrics;
use crate::options::AgentOptions;

/// Read timeout for engine requests (watches keep kube's default, which is sized for them).
const ENGINE_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A fetched revision of a GitSource, shared by every Release that uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub path: PathBuf,
    pub revision: String,
    pub url: String,
}

/// Key of a namespaced object: (namespace, name).
pub type Key = (String, String);

pub struct Context {
    /// The agent's own client (reads sources and secrets, writes status and events, watches).
    pub client: Client,
    /// The agent's identity for engine runs (Releases without a service account): the same
    /// credentials with a short read timeout, so a request lost by an overloaded API server
    /// fails the run (and is retried) instead of blocking it for the watch-sized default.
    pub apply_client: Client,
    /// The agent's config, cloned with an impersonation identity for tenant clients.
    pub config: Config,
    pub options: AgentOptions,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// GitSource → last good checkout.
    pub artifacts: RwLock<HashMap<Key, Artifact>>,
    /// Limits parallel git fetches.
    pub fetch_slots: Semaphore,
    /// Asks the Release controller to reconcile one Release now.
    pub release_trigger: mpsc::UnboundedSender<ObjectRef<Release>>,
    /// The Release controller's cache (set once the controller is built).
    pub releases: OnceLock<Store<Release>>,
    /// The GitSource controller's cache.
    pub sources: OnceLock<Store<GitSource>>,
    /// Consecutive failures per object, for exponential retry backoff.
    failures: Mutex<HashMap<(String, Key), u32>>,
    /// Drift watches by (apiVersion, kind): ready once listed.
    pub drift_watches: Mutex<HashMap<(String, String), tokio::sync::watch::Receiver<bool>>>,
    /// Cancelled when the controllers stop (drift watches end with them).
    pub stop: OnceLock<tokio_util::sync::CancellationToken>,
    /// Clients impersonating `system:serviceaccount:<ns>:<sa>`.
    tenant_clients: Mutex<HashMap<Key, Client>>,
    /// API discovery shared by every engine run, whatever identity it applies as: which kinds
    /// exist does not depend on who asks (every authenticated user may read discovery,
    /// `system:discovery`), and RBAC is still enforced on each request that follows.
    pub discovery: Arc<DiscoveryCache>,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        options: AgentOptions,
        metrics: Arc<Metrics>,
        release_trigger: mpsc::UnboundedSender<ObjectRef<Release>>,
    ) -> Self {
        let reporter = Reporter {
            controller: "ferry-agent".to_string(),
            instance: options.identity.clone(),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let fetch_slots = Semaphore::new(options.fetch_concurrency.max(1) as usize);
        let mut apply_config = config.clone();
        apply_config.read_timeout = Some(ENGINE_READ_TIMEOUT);
        let apply_client = counted_client(apply_config, metrics.clone()).unwrap_or_else(|err| {
            tracing::warn!("cannot build the apply client ({err}); using the watch client");
            client.clone()
        });
        Self {
            client,
            apply_client,
            config,
            options,
            metrics,
            recorder,
            artifacts: RwLock::default(),
            fetch_slots,
            release_trigger,
            releases: OnceLock::new(),
            sources: OnceLock::new(),
            failures: Mutex::default(),
            drift_watches: Mutex::default(),
            stop: OnceLock::new(),
            tenant_clients: Mutex::default(),
            discovery: Arc::new(DiscoveryCache::default()),
        }
    }

    pub fn artifact(&self, key: &Key) -> Option<Artifact> {
        self.artifacts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Record a new artifact; returns true when the revision changed.
    pub fn set_artifact(&self, key: Key, artifact: Artifact) -> bool {
        let mut map = self.artifacts.write().unwrap_or_else(|p| p.into_inner());
        let changed = map
            .get(&key)
            .is_none_or(|a| a.revision != artifact.revision);
        map.insert(key, artifact);
        changed
    }

    /// Next retry delay after a failure: 2s, 4s, 8s … capped at `cap`.
    pub fn failure_backoff(&self, kind: &str, key: &Key, cap: Duration) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry((kind.to_string(), key.clone())).or_insert(0);
        *count = count.saturating_add(1);
        let secs = 2u64.saturating_pow((*count).min(16));
        Duration::from_secs(secs).min(cap.max(Duration::from_secs(1)))
    }

    pub fn clear_failures(&self, kind: &str, key: &Key) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(kind.to_string(), key.clone()));
    }

    /// A client acting as `system:serviceaccount:<namespace>:<sa>`; cached per identity.
    pub fn tenant_client(&self, namespace: &str, sa: &str) -> anyhow::Result<Client> {
        let key = (namespace.to_string(), sa.to_string());
        let mut clients = self
            .tenant_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{sa}"));
        config.auth_info.impersonate_groups = Some(vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_string(),
        ]);
        config.default_namespace = namespace.to_string();
        config.read_timeout = Some(ENGINE_READ_TIMEOUT);
        let client = counted_client(config, self.metrics.clone()).map_err(|err| {
            anyhow::anyhow!("cannot build a client impersonating {namespace}/{sa}: {err}")
        })?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// Queue every Release that uses the GitSource `source` (namespace, name).
    pub fn trigger_releases_of_source(&self, source: &Key) {
        let Some(store) = self.releases.get() else {
            return;
        };
        for release in store.state() {
            let ns = release.metadata.namespace.clone().unwrap_or_default();
            let src_ns = release
                .spec
                .source_ref
                .namespace
                .clone()
                .unwrap_or_else(|| ns.clone());
            if src_ns == source.0 && release.spec.source_ref.name == source.1 {
                let _ = self.release_trigger.send(ObjectRef::from_obj(&*release));
            }
        }
    }

    /// Queue every Release that depends on `release` (namespace, name).
    pub fn trigger_dependents(&self, release: &Key) {
        let Some(store) = self.releases.get() else {
            return;
        };
        for other in store.state() {
            let ns = other.metadata.namespace.clone().unwrap_or_default();
            let depends =
                other.spec.depends_on.iter().any(|d| {
                    d.name == release.1 && d.namespace.as_deref().unwrap_or(&ns) == release.0
                });
            if depends {
                let _ = self.release_trigger.send(ObjectRef::from_obj(&*other));
            }
        }
    }
}

/// A client whose every request is counted in `ferry_api_requests_total` (benchmark and
/// steady-state checks rely on it).
pub fn counted_client(config: Config, metrics: Arc<Metrics>) -> Result<Client, kube::Error> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        metrics.count_request(req.method());
        req
    });
    Ok(builder.with_layer(&layer).build())
}

/// (namespace, name) of any namespaced resource.
pub fn key_of<K: kube::Resource>(obj: &K) -> Key {
    (
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}
