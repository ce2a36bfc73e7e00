//! API discovery: fetching which kinds the cluster serves (two requests) and reusing the result
//! across engine runs. It fills `plan::kinds::Resolver`, the pure table the plan resolves with.
//!
//! Every run needs GVK → API resource + scope. Discovery costs two requests (`/api`, `/apis`),
//! which dominated the agent's steady-state traffic when every reconcile ran it afresh. A
//! [`DiscoveryCache`] keeps one result and hands it to every run (`ApplyOptions::discovery`, `DeleteOptions::discovery`, `StatusOptions::discovery`);
//! it is refreshed
//! - when it is older than its maximum age (default [`DEFAULT_MAX_AGE`]),
//! - when the source contains CRDs (the kinds they serve change with the apply),
//! - when a manifest's kind is unknown to it (a CRD installed since), and
//! - when an inventory entry's kind is unknown to it before pruning (a kind served since).
//!
//! Refreshes are single-flight: runs that need one while another is in progress wait for it and
//! use its result. Without a cache (the CLI) each run discovers afresh, as before.
//!
//! Discovery is fetched with whichever client the run uses, and one cache may serve runs of
//! different (impersonated) identities: which kinds exist does not depend on who asks, since
//! every authenticated user may read discovery (`system:discovery`); RBAC is enforced on the
//! requests that follow.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kube::Client;
use kube::discovery::Discovery;

use crate::cluster::kube_error::{describe_kube_error, status_code};
use crate::cluster::requests::{RequestCounter, counted};
use crate::inventory::Entry;
use crate::plan::Resolver;
use crate::{Error, Manifest, Result};

/// Aggregated discovery: `/api` and `/apis`, two requests.
async fn run_discovery(client: &Client) -> Result<Discovery> {
    Discovery::new(client.clone())
        .run_aggregated()
        .await
        .map_err(|err| Error::Discovery {
            message: describe_kube_error(&err),
            code: status_code(&err),
        })
}

/// A fresh resolver: run discovery (two requests) against the cluster.
pub async fn discover(client: &Client) -> Result<Resolver> {
    Ok(Resolver::from_discovery(Arc::new(
        run_discovery(client).await?,
    )))
}

/// The kinds one run resolves with, and the cache they came from (so a kind that is not known
/// yet can trigger a refresh). Dereferences to the [`Resolver`].
pub struct RunResolver {
    resolver: Resolver,
    cached: Option<Cached>,
}

impl std::ops::Deref for RunResolver {
    type Target = Resolver;
    fn deref(&self) -> &Resolver {
        &self.resolver
    }
}

/// How long a cached discovery is used when nothing suggests it is stale.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

/// A discovery result shared by engine runs; see the module docs for when it is refreshed.
pub struct DiscoveryCache {
    max_age: Duration,
    current: RwLock<Option<Snapshot>>,
    /// Held while fetching, so concurrent runs share one refresh.
    refreshing: tokio::sync::Mutex<()>,
    refreshes: std::sync::atomic::AtomicU64,
    /// The server's version (`/version`) for helm's `.Capabilities.KubeVersion`, fetched at
    /// most once per maximum age (see `cluster::capabilities`).
    pub(crate) kube_version: RwLock<Option<(String, Instant)>>,
}

#[derive(Clone)]
struct Snapshot {
    discovery: Arc<Discovery>,
    /// When the fetch started: the result reflects the cluster no earlier than this.
    started: Instant,
}

/// A resolver's link back to the cache it came from.
#[derive(Clone)]
struct Cached {
    cache: Arc<DiscoveryCache>,
    started: Instant,
}

impl std::fmt::Debug for DiscoveryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveryCache")
            .field("max_age", &self.max_age)
            .field("refreshes", &self.refreshes())
            .finish_non_exhaustive()
    }
}

impl Default for DiscoveryCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_AGE)
    }
}

impl DiscoveryCache {
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            current: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            refreshes: std::sync::atomic::AtomicU64::new(0),
            kube_version: RwLock::new(None),
        }
    }

    /// The cached discovery (fetched if missing or older than the maximum age).
    pub async fn discovery(&self, client: &Client) -> Result<Arc<Discovery>> {
        Ok(self.get(client, None).await?.discovery)
    }

    pub(crate) fn max_age(&self) -> Duration {
        self.max_age
    }

    /// How many times discovery was fetched (for tests and metrics).
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fetch discovery now unless a fresh one is cached, so a later run finds it ready (the CLI
    /// discovers while it renders). Returns how many requests it sent.
    pub async fn prefetch(&self, client: &Client) -> Result<u64> {
        let counter = RequestCounter::default();
        self.get(&counted(client, &counter), None).await?;
        Ok(counter.snapshot().reads)
    }

    fn snapshot(&self) -> Option<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A discovery whose fetch started at or after `not_before` (or is younger than the maximum
    /// age when `None`), fetching one if needed.
    async fn get(&self, client: &Client, not_before: Option<Instant>) -> Result<Snapshot> {
        let good = |s: &Snapshot| match not_before {
            Some(t) => s.started >= t,
            None => s.started.elapsed() < self.max_age,
        };
        if let Some(s) = self.snapshot().filter(good) {
            return Ok(s);
        }
        let _guard = self.refreshing.lock().await;
        // Another run may have refreshed while this one waited.
        if let Some(s) = self.snapshot().filter(good) {
            return Ok(s);
        }
        let started = Instant::now();
        let discovery = Arc::new(run_discovery(client).await?);
        self.refreshes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let snapshot = Snapshot { discovery, started };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(snapshot.clone());
        Ok(snapshot)
    }
}

/// The resolver for one run over `manifests`: from `cache` when given (refreshed as the module
/// docs describe), else from a fresh discovery. CRDs in the source are learned either way.
pub async fn resolver_for(
    cache: Option<&Arc<DiscoveryCache>>,
    client: &Client,
    manifests: &[Manifest],
) -> Result<RunResolver> {
    let Some(cache) = cache else {
        let mut resolver = discover(client).await?;
        resolver.learn_crds(manifests);
        return Ok(RunResolver {
            resolver,
            cached: None,
        });
    };
    let asked = Instant::now();
    let has_crds = manifests
        .iter()
        .any(|m| m.group() == "apiextensions.k8s.io" && m.kind() == "CustomResourceDefinition");
    let mut snapshot = cache.get(client, has_crds.then_some(asked)).await?;
    let mut resolver = with_crds(cache, &snapshot, manifests);
    if snapshot.started < asked && !resolver.resolves_all(manifests) {
        // A kind the cache does not know: perhaps its CRD was installed since.
        snapshot = cache.get(client, Some(asked)).await?;
        resolver = with_crds(cache, &snapshot, manifests);
    }
    Ok(resolver)
}

fn with_crds(
    cache: &Arc<DiscoveryCache>,
    snapshot: &Snapshot,
    manifests: &[Manifest],
) -> RunResolver {
    let mut resolver = Resolver::from_discovery(snapshot.discovery.clone());
    resolver.learn_crds(manifests);
    RunResolver {
        resolver,
        cached: Some(Cached {
            cache: cache.clone(),
            started: snapshot.started,
        }),
    }
}

impl RunResolver {
    /// Before resolving inventory entries: if one does not resolve and this resolver's discovery
    /// came from a cache, replace it with one fetched after it, so a kind served since is not
    /// mistaken for a removed one.
    pub async fn refresh_for_entries(&mut self, client: &Client, entries: &[Entry]) -> Result<()> {
        let Some(cached) = self.cached.clone() else {
            return Ok(());
        };
        let unresolved = entries.iter().any(|e| !self.resolver.resolves_entry(e));
        if !unresolved {
            return Ok(());
        }
        let after = cached.started + Duration::from_nanos(1);
        let snapshot = cached.cache.get(client, Some(after)).await?;
        self.resolver.replace_discovery(snapshot.discovery);
        self.cached = Some(Cached {
            cache: cached.cache,
            started: snapshot.started,
        });
        Ok(())
    }
}
