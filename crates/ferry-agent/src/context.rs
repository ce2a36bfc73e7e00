//! The one `Context` every controller of the agent runs on (Release, GitSource, Receiver, and
//! the image automation and unsealer controllers): the admin client and per-tenant clients, the
//! tenancy rule ([`resolve_identity`]: which identity a piece of tenant work, an apply or a read of
//! a tenant-named Secret, acts as), metrics, the Kubernetes event recorder, the requeue/backoff
//! policy ([`crate::backoff`]), and the stop token that ends every controller when the agent shuts
//! down or loses the lease. It also holds what the GitSource and Release controllers share: the
//! in-memory artifact index (GitSource → checkout), the trigger channel between them, their
//! caches, and the agent-wide floors and ceilings for tenant-set intervals and timeouts.
//!
//! A controller family with state of its own (the image controllers' scan cache) keeps it in its
//! own struct next to an `Arc<Context>`; everything the controllers share comes from here.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use ferry_api::{GitSource, Release};
use ferry_engine::cluster::discovery::DiscoveryCache;
use ferry_engine::ownership::{Owner, ReleaseRef};
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Config};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, BackoffPolicy};
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

/// Who a piece of tenant work acts as against the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The agent's own credentials: only with `--insecure-agent-identity-for-tenants`.
    Agent,
    /// `system:serviceaccount:<namespace>:<name>`, by impersonation.
    ServiceAccount { namespace: String, name: String },
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Agent => f.write_str("the agent's own identity"),
            Identity::ServiceAccount { namespace, name } => {
                write!(f, "system:serviceaccount:{namespace}:{name}")
            }
        }
    }
}

/// The tenancy rule. Work for an object in `namespace` acts as:
/// 1. the service account the object names (`requested`, e.g. a Release's `serviceAccountName`);
/// 2. else, with `--insecure-agent-identity-for-tenants`, the agent itself (the old behaviour);
/// 3. else, in the agent's own namespace, `--system-service-account` (`ferry-admin`, bound to
///    cluster-admin by `ferry install`: the agent's own Releases, such as bootstrap's);
/// 4. else `--default-service-account` (`default`) of the object's namespace, which has only the
///    rights the cluster admin granted it.
///
/// A service account is always one of the object's own namespace: a tenant cannot name another
/// namespace's.
pub fn resolve_identity(
    options: &AgentOptions,
    namespace: &str,
    requested: Option<&str>,
) -> Identity {
    let sa = |name: &str| Identity::ServiceAccount {
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    match requested.filter(|r| !r.is_empty()) {
        Some(name) => sa(name),
        None if options.insecure_agent_identity_for_tenants => Identity::Agent,
        None if namespace == options.namespace => sa(&options.system_service_account),
        None => sa(&options.default_service_account),
    }
}

pub struct Context {
    /// The agent's own client (reads sources and secrets, writes status and events, watches).
    pub client: Client,
    /// The agent's identity for engine runs (only with `--insecure-agent-identity-for-tenants`):
    /// the same credentials with a short read timeout, so a request lost by an overloaded API server
    /// fails the run (and is retried) instead of blocking it for the watch-sized default.
    pub apply_client: Client,
    /// The agent's config, cloned with an impersonation identity for tenant clients.
    pub config: Config,
    pub options: AgentOptions,
    pub metrics: Arc<Metrics>,
    /// Who publishes the Kubernetes Events on the objects the controllers reconcile (see
    /// [`Context::publish_event`]).
    pub reporter: Reporter,
    /// When to look at an object again, after a success or a failure (see [`crate::backoff`]).
    pub backoff: Backoff,
    /// Cancelled when the controllers must stop: the agent shuts down or this replica loses the
    /// lease. Every controller stops taking new work on it and lets running reconciles finish
    /// (`Controller::graceful_shutdown_on`, see [`crate::controllers::drive`]); the drift
    /// watches end with it. Never an abort.
    pub stop: CancellationToken,
    /// GitSource → last good checkout.
    pub artifacts: RwLock<HashMap<Key, Artifact>>,
    /// Limits parallel git fetches.
    pub fetch_slots: Semaphore,
    /// Asks the Release controller to reconcile one Release now.
    pub release_trigger: mpsc::UnboundedSender<ObjectRef<Release>>,
    /// The other end of `release_trigger`, taken once by the Release controller.
    release_queue: Mutex<Option<mpsc::UnboundedReceiver<ObjectRef<Release>>>>,
    /// The Release controller's cache (set once the controller is built).
    pub releases: OnceLock<Store<Release>>,
    /// The GitSource controller's cache.
    pub sources: OnceLock<Store<GitSource>>,
    /// Every Alert in the watched namespaces (one watch): a Release event finds its Alerts here
    /// instead of listing them per event, one request per event saved (issue 17).
    pub alerts: OnceLock<Store<ferry_api::notification::Alert>>,
    /// Drift watches by (apiVersion, kind): ready once listed.
    pub drift_watches: Mutex<HashMap<(String, String), tokio::sync::watch::Receiver<bool>>>,
    /// What the drift watches know, for the Release controller (see [`crate::drift`]).
    pub drift: crate::drift::DriftState,
    /// Clients for tenant identities (see [`TenantClients`]).
    pub tenants: Arc<TenantClients>,
    /// Per-namespace reconcile slots (`--max-concurrent-per-namespace`).
    namespace_slots: NamespaceSlots,
    /// The shards of Releases this replica owns (all of them without `--shards`).
    pub shards: Arc<crate::shard::Shards>,
    /// API discovery shared by every engine run, whatever identity it applies as: which kinds
    /// exist does not depend on who asks (every authenticated user may read discovery,
    /// `system:discovery`), and RBAC is still enforced on each request that follows.
    pub discovery: Arc<DiscoveryCache>,
}

impl Context {
    /// The context of one leadership term: `stop` is cancelled when the term ends.
    pub fn new(
        client: Client,
        config: Config,
        options: AgentOptions,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Self {
        let (release_trigger, release_queue) = mpsc::unbounded_channel();
        let reporter = Reporter {
            controller: "ferry-agent".to_string(),
            instance: options.identity.clone(),
        };
        let fetch_slots = Semaphore::new(options.fetch_concurrency.max(1) as usize);
        let namespace_slots = NamespaceSlots::new(options.max_concurrent_per_namespace);
        let shards = if options.shards > 1 {
            crate::shard::Shards::new(options.shards)
        } else {
            crate::shard::Shards::single()
        };
        let backoff = Backoff::new(BackoffPolicy::with_floor(options.min_interval));
        let mut apply_config = config.clone();
        apply_config.read_timeout = Some(ENGINE_READ_TIMEOUT);
        let apply_client = counted_client(apply_config, metrics.clone()).unwrap_or_else(|err| {
            tracing::warn!("cannot build the apply client ({err}); using the watch client");
            client.clone()
        });
        let tenants = Arc::new(TenantClients::with_apply_client(
            config.clone(),
            options.clone(),
            metrics.clone(),
            apply_client.clone(),
        ));
        let drift = crate::drift::DriftState::new(&metrics);
        Self {
            client,
            apply_client,
            config,
            options,
            metrics,
            reporter,
            backoff,
            stop,
            artifacts: RwLock::default(),
            fetch_slots,
            release_trigger,
            release_queue: Mutex::new(Some(release_queue)),
            releases: OnceLock::new(),
            sources: OnceLock::new(),
            alerts: OnceLock::new(),
            drift_watches: Mutex::default(),
            drift,
            tenants,
            namespace_slots,
            shards,
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

    /// The Release trigger queue, for the Release controller (`None` after the first call).
    pub fn take_release_queue(&self) -> Option<mpsc::UnboundedReceiver<ObjectRef<Release>>> {
        self.release_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Publish a Kubernetes Event on `obj` (as `kubectl describe` shows them), the way Flux's
    /// controllers report reconcile failures and successes. The note is cut to 1000 characters;
    /// callers never put secret values in it. A failure to publish is logged, never fatal.
    ///
    /// Every call is a new Event. The controllers publish news only (a new revision, a new
    /// failure message), and kube's `Recorder` folds every Event of one object, type and reason
    /// within 6 minutes into a series that keeps the FIRST note: a Release synced twice in five
    /// minutes showed the first revision's note with count 2. So each publish gets a recorder of
    /// its own (cheap: a client clone and an empty cache), never a shared cache.
    pub async fn publish_event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        // The same news in the log, with the object in one field: `ferry logs --for KIND/NAME`
        // filters on it.
        tracing::info!(
            object = %format!(
                "{}/{}/{}",
                K::kind(&()),
                obj.meta().namespace.as_deref().unwrap_or_default(),
                obj.meta().name.as_deref().unwrap_or_default()
            ),
            reason,
            "{}",
            event.note.as_deref().unwrap_or_default()
        );
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(err) = recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::debug!("cannot publish event: {err}");
        }
    }

    /// A client acting as `system:serviceaccount:<namespace>:<sa>`; cached per identity.
    pub fn tenant_client(&self, namespace: &str, sa: &str) -> anyhow::Result<Client> {
        self.tenants.tenant_client(namespace, sa)
    }

    /// The identity tenant work for an object in `namespace` acts as (see [`resolve_identity`]).
    pub fn identity_for(&self, namespace: &str, requested: Option<&str>) -> Identity {
        self.tenants.identity_for(namespace, requested)
    }

    /// A client acting as `identity`, for engine runs (short read timeout).
    pub fn client_as(&self, identity: &Identity) -> anyhow::Result<Client> {
        self.tenants.client_as(identity)
    }

    /// The client that reads a Secret a tenant object in `namespace` refers to (see
    /// [`TenantClients::secret_reader`]).
    pub fn secret_reader(&self, namespace: &str) -> anyhow::Result<(Client, Identity)> {
        self.tenants.secret_reader(namespace)
    }

    /// A tenant-set interval, raised to `--min-interval`.
    pub fn clamp_interval(&self, interval: Duration) -> Duration {
        self.options.clamp_interval(interval)
    }

    /// A tenant-set timeout, lowered to `--max-timeout`.
    pub fn clamp_timeout(&self, timeout: Duration) -> Duration {
        self.options.clamp_timeout(timeout)
    }

    /// A reconcile slot for `namespace` (see [`NamespaceSlots`]).
    pub fn try_namespace_slot(&self, namespace: &str) -> Option<Option<OwnedSemaphorePermit>> {
        self.namespace_slots.try_acquire(namespace)
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

/// Clients for the identities tenant work acts as ([`resolve_identity`]): one impersonating
/// client per service account, cached, and the agent's own for the insecure opt-in. Shared by the
/// controllers and the webhook server (which reads Receivers' Secrets as their namespace).
pub struct TenantClients {
    config: Config,
    options: AgentOptions,
    metrics: Arc<Metrics>,
    /// The agent's own identity with the engine's read timeout.
    apply_client: Client,
    clients: Mutex<HashMap<Key, Client>>,
}

impl TenantClients {
    /// Build from the agent's config (the agent's own client gets the engine read timeout).
    pub fn new(
        config: Config,
        options: AgentOptions,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let mut apply_config = config.clone();
        apply_config.read_timeout = Some(ENGINE_READ_TIMEOUT);
        let apply_client = counted_client(apply_config, metrics.clone())
            .map_err(|err| anyhow::anyhow!("cannot build the agent's client: {err}"))?;
        Ok(Self::with_apply_client(
            config,
            options,
            metrics,
            apply_client,
        ))
    }

    fn with_apply_client(
        config: Config,
        options: AgentOptions,
        metrics: Arc<Metrics>,
        apply_client: Client,
    ) -> Self {
        Self {
            config,
            options,
            metrics,
            apply_client,
            clients: Mutex::default(),
        }
    }

    /// A client acting as `system:serviceaccount:<namespace>:<sa>`; cached per identity.
    pub fn tenant_client(&self, namespace: &str, sa: &str) -> anyhow::Result<Client> {
        let key = (namespace.to_string(), sa.to_string());
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{sa}"));
        // No Impersonate-Group: for a service-account user the API server adds its fixed groups
        // (system:serviceaccounts, system:serviceaccounts:<ns>, system:authenticated) itself, so
        // the agent needs only `impersonate` on `serviceaccounts` (which RBAC can scope to
        // namespaces), not on `groups`.
        config.auth_info.impersonate_groups = None;
        config.default_namespace = namespace.to_string();
        config.read_timeout = Some(ENGINE_READ_TIMEOUT);
        let client = counted_client(config, self.metrics.clone()).map_err(|err| {
            anyhow::anyhow!("cannot build a client impersonating {namespace}/{sa}: {err}")
        })?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// The identity tenant work for an object in `namespace` acts as (see [`resolve_identity`]).
    pub fn identity_for(&self, namespace: &str, requested: Option<&str>) -> Identity {
        resolve_identity(&self.options, namespace, requested)
    }

    /// A client acting as `identity`, for engine runs (short read timeout).
    pub fn client_as(&self, identity: &Identity) -> anyhow::Result<Client> {
        match identity {
            Identity::Agent => Ok(self.apply_client.clone()),
            Identity::ServiceAccount { namespace, name } => self.tenant_client(namespace, name),
        }
    }

    /// The client that reads a Secret a tenant object in `namespace` refers to (a GitSource's or
    /// ImageRepository's `secretRef`, a Receiver's token): the namespace's tenant identity, so a
    /// tenant cannot make the agent read (and use, or send to a host of the tenant's choosing) a
    /// Secret the tenant itself may not read.
    pub fn secret_reader(&self, namespace: &str) -> anyhow::Result<(Client, Identity)> {
        let identity = self.identity_for(namespace, None);
        Ok((self.client_as(&identity)?, identity))
    }
}

/// Reconcile slots per namespace, so one tenant with many slow Releases cannot take every worker
/// of the controller (`--max-concurrent-per-namespace`; 0: no limit).
pub struct NamespaceSlots {
    limit: u16,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl NamespaceSlots {
    pub fn new(limit: u16) -> Self {
        Self {
            limit,
            slots: Mutex::default(),
        }
    }

    /// A slot for `namespace`: `Some(None)` without a limit, `Some(Some(permit))` while under it,
    /// `None` when the namespace already runs `limit` reconciles (the caller requeues instead of
    /// holding one of the controller's shared workers while it waits).
    pub fn try_acquire(&self, namespace: &str) -> Option<Option<OwnedSemaphorePermit>> {
        if self.limit == 0 {
            return Some(None);
        }
        let slots = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(namespace.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit as usize)))
            .clone();
        slots.try_acquire_owned().ok().map(Some)
    }
}

/// A client whose every request is counted in `ferry_api_requests_total` (benchmark and
/// steady-state checks rely on it).
pub fn counted_client(config: Config, metrics: Arc<Metrics>) -> Result<Client, kube::Error> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    let layer = crate::metrics::CountApiRequestsLayer::new(metrics);
    Ok(builder.with_layer(&layer).build())
}

/// A Release's identity for the engine: its own namespace and name. The engine keeps it apart
/// from every other Release and every push app (`ferry_engine::ownership`): owner id
/// `<target>/release/<namespace>/<name>`, inventory `ferry-release-<name>-<hash>`.
pub fn release_ref(release: &Release) -> ReleaseRef {
    let (namespace, name) = key_of(release);
    ReleaseRef { namespace, name }
}

/// Where a Release deploys (and keeps its inventory).
pub fn target_namespace(release: &Release) -> String {
    let (ns, _) = key_of(release);
    release.spec.target_namespace.clone().unwrap_or(ns)
}

/// The exact owner id the engine stamps on a Release's objects (`ferry.dev/owner`): how drift
/// detection finds the Release of a changed object.
pub fn owner_id(release: &Release) -> Option<String> {
    Owner::release(&release_ref(release), &target_namespace(release))
        .ok()
        .map(|o| o.id())
}

/// (namespace, name) of any namespaced resource.
pub fn key_of<K: kube::Resource>(obj: &K) -> Key {
    (
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> AgentOptions {
        AgentOptions::for_kubeconfig("/dev/null".into(), "/tmp/x".into())
    }

    fn sa(ns: &str, name: &str) -> Identity {
        Identity::ServiceAccount {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn tenants_never_get_the_agent_identity_by_default() {
        let o = options();
        assert_eq!(
            resolve_identity(&o, "team-a", None),
            sa("team-a", "default")
        );
        assert_eq!(
            resolve_identity(&o, "team-a", Some("")),
            sa("team-a", "default")
        );
        assert_eq!(
            resolve_identity(&o, "team-a", Some("deployer")),
            sa("team-a", "deployer")
        );
        // The agent's own namespace: the explicit admin service account, not the agent.
        assert_eq!(
            resolve_identity(&o, "ferry-system", None),
            sa("ferry-system", "ferry-admin")
        );
    }

    #[test]
    fn one_namespace_cannot_take_every_slot() {
        let slots = NamespaceSlots::new(2);
        let a1 = slots.try_acquire("team-a").expect("first");
        let a2 = slots.try_acquire("team-a").expect("second");
        assert!(
            slots.try_acquire("team-a").is_none(),
            "team-a is at its limit"
        );
        assert!(
            slots.try_acquire("team-b").is_some(),
            "team-b still gets a slot"
        );
        drop(a1);
        assert!(
            slots.try_acquire("team-a").is_some(),
            "freed when one finishes"
        );
        drop(a2);
        let unlimited = NamespaceSlots::new(0);
        for _ in 0..100 {
            assert!(matches!(unlimited.try_acquire("x"), Some(None)));
        }
    }

    #[test]
    fn tenant_intervals_and_timeouts_are_held_to_the_agent_bounds() {
        let mut o = options();
        o.min_interval = Duration::from_secs(10);
        o.max_timeout = Duration::from_secs(900);
        assert_eq!(
            o.clamp_interval(Duration::from_secs(1)),
            Duration::from_secs(10)
        );
        assert_eq!(o.clamp_interval(Duration::ZERO), Duration::from_secs(10));
        assert_eq!(
            o.clamp_interval(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        assert_eq!(
            o.clamp_timeout(Duration::from_secs(86_400)),
            Duration::from_secs(900)
        );
        assert_eq!(
            o.clamp_timeout(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        o.min_interval = Duration::ZERO;
        assert_eq!(o.clamp_interval(Duration::ZERO), Duration::from_secs(1));
    }

    #[test]
    fn the_insecure_flag_restores_the_agent_identity_only_where_none_is_named() {
        let mut o = options();
        o.insecure_agent_identity_for_tenants = true;
        assert_eq!(resolve_identity(&o, "team-a", None), Identity::Agent);
        assert_eq!(
            resolve_identity(&o, "team-a", Some("deployer")),
            sa("team-a", "deployer")
        );
        assert_eq!(
            Identity::Agent.to_string(),
            "the agent's own identity".to_string()
        );
        assert_eq!(
            sa("a", "b").to_string(),
            "system:serviceaccount:a:b".to_string()
        );
    }
}
