//! The pipeline: the stages composed into the four things a driver asks for — [`apply`],
//! [`diff`], [`delete`] and [`status`] — each a short list of named steps (see the step
//! functions in each file). Both drivers (the CLI and the agent) call these.
//!
//! Render first (`render::render`, no cluster needed), then hand the manifests to [`apply`] or
//! [`diff`], or use [`delete`] / [`status_with`] with an app name. Nothing here assumes
//! cluster-admin: the client may impersonate a tenant, the inventory lives in the app's
//! namespace, and every API refusal is reported with the server's message (verb, resource and
//! identity for RBAC denials). Each entry point wraps the caller's client once to count its
//! requests (`cluster::requests`) and hands the cluster work to one `ResourceManager`.

mod apply;
mod delete;
mod diff;
pub mod drift;
pub mod release_diff;
mod status;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;

pub use apply::apply;
pub use delete::{delete, delete_app};
pub use diff::{diff, diff_ignoring};
pub use status::{status, status_of, status_with};

use crate::cluster::discovery::DiscoveryCache;
use crate::cluster::manager::delete::Candidate;
use crate::inventory::{self, Entry};
use crate::ownership::{Owner, ReleaseRef};
use crate::plan::{PlannedObject, Resolver};
use crate::report::redact::Redactor;
use crate::{Error, Manifest, Result};

/// Options for [`apply`] and [`diff`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The push app name: label value and inventory name (`ferry-inventory-<app>`). Ignored
    /// when `release` is set.
    pub app: String,
    /// Apply as this Release's app (the agent, and `ferry install`/`bootstrap` which hand over
    /// to one): an identity apart from every push app, see `ownership`.
    pub release: Option<ReleaseRef>,
    /// The app a pre-upgrade ferry used for this app (`ownership::legacy_release_app`).
    /// If this app has no inventory yet and a verified pre-upgrade inventory exists under that
    /// name (`inventory::read_legacy`), it is adopted (objects, ownership) and removed. The
    /// caller vouches that no other app maps to the same legacy name.
    pub legacy_app: Option<inventory::Legacy>,
    /// Default namespace for namespaced objects without one, and where the inventory lives.
    /// `None`: the client's default namespace (kubeconfig context, or the pod's namespace).
    pub namespace: Option<String>,
    /// Delete objects that were in the previous inventory and are gone from the source.
    pub prune: bool,
    /// Allow an empty source to prune everything (refused otherwise).
    pub allow_empty: bool,
    /// Take over fields another field manager owns (server-side apply `force`).
    pub force_conflicts: bool,
    /// Wait until every object is Current.
    pub wait: bool,
    pub timeout: Duration,
    /// Maximum concurrent API requests.
    pub concurrency: usize,
    /// The git commit being applied; recorded in the inventory and on changed objects.
    pub revision: Option<String>,
    /// Server-side dry run: nothing is persisted, the inventory is not touched.
    pub dry_run: bool,
    /// Where the manifests came from (path or URL), recorded in the inventory.
    pub source: String,
    /// Discovery shared across runs (the agent); `None`: discover afresh for this run.
    pub discovery: Option<Arc<DiscoveryCache>>,
    /// Values that came from decryption (from `render::render_collecting`): taken out of
    /// diffs, report messages and errors, whatever object they ended up in.
    pub redactor: Redactor,
    /// Custom CEL health rules (ferry.yaml / a Release's `healthCheckExprs`), compiled by the
    /// driver so that it can name where a bad one came from.
    pub health_checks: Arc<crate::health::CustomHealth>,
    /// The push app's drift policy (ferry.yaml `drift:`): ignored fields are not sent for
    /// objects that exist, and in `detect` mode hand-edited objects whose intent did not change
    /// are reported and left alone (see [`drift::detect_edited`]). The agent strips a
    /// Release's ignored fields itself and leaves this at its default.
    pub drift: drift::DriftPolicy,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            app: String::new(),
            release: None,
            legacy_app: None,
            namespace: None,
            prune: false,
            allow_empty: false,
            force_conflicts: false,
            wait: false,
            timeout: Duration::from_secs(300),
            concurrency: 16,
            revision: None,
            dry_run: false,
            source: String::new(),
            discovery: None,
            redactor: Redactor::new(),
            health_checks: Arc::default(),
            drift: drift::DriftPolicy::default(),
        }
    }
}

impl ApplyOptions {
    pub fn new(app: impl Into<String>) -> Self {
        Self {
            app: app.into(),
            ..Default::default()
        }
    }

    fn owner(&self, client: &Client) -> Result<Owner> {
        owner_for(
            client,
            &self.app,
            self.release.as_ref(),
            self.namespace.as_deref(),
        )
    }
}

/// The owner of an app: a push app by name, or a Release (`release` wins).
fn owner_for(
    client: &Client,
    app: &str,
    release: Option<&ReleaseRef>,
    namespace: Option<&str>,
) -> Result<Owner> {
    let namespace = namespace
        .filter(|ns| !ns.is_empty())
        .unwrap_or(client.default_namespace());
    match release {
        Some(release) => Owner::release(release, namespace),
        None => Owner::push(app, namespace),
    }
}

/// The app has no inventory under `owner`'s name in its namespace.
fn no_inventory(owner: &Owner, hint: &str) -> Error {
    Error::NoInventory {
        app: owner.app.clone(),
        owner: owner.describe(),
        namespace: owner.namespace.clone(),
        hint: hint.to_string(),
    }
}

fn entry_for(p: &PlannedObject, fingerprint: Option<String>) -> Entry {
    Entry {
        api_version: p.api_version(),
        key: p.key.clone(),
        fingerprint,
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Resolve inventory entries to API resources; entries whose kind is no longer served are
/// returned separately.
fn resolve_entries(resolver: &Resolver, entries: Vec<Entry>) -> (Vec<Candidate>, Vec<Entry>) {
    let (resolved, unresolved) = resolver.resolve_entries(entries);
    let candidates = resolved
        .into_iter()
        .map(|(entry, kind)| Candidate { entry, kind })
        .collect();
    (candidates, unresolved)
}

/// The namespaces candidates live in (for a Namespace candidate: itself).
fn candidate_namespaces(candidates: &[Candidate]) -> BTreeSet<String> {
    candidates
        .iter()
        .filter_map(|c| match &c.entry.key.namespace {
            Some(ns) => Some(ns.clone()),
            None if c.entry.key.group.is_empty() && c.entry.key.kind == "Namespace" => {
                Some(c.entry.key.name.clone())
            }
            None => None,
        })
        .collect()
}

/// Options for [`delete`].
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// The push app (ignored when `release` is set).
    pub app: String,
    /// Delete this Release's app (the agent's finalizer).
    pub release: Option<ReleaseRef>,
    /// Namespace of the inventory (`None`: the client's default namespace).
    pub namespace: Option<String>,
    /// Pre-upgrade app, as in [`ApplyOptions::legacy_app`].
    pub legacy_app: Option<inventory::Legacy>,
    pub dry_run: bool,
    pub concurrency: usize,
    /// Delete Namespaces, CRDs, PVCs and PVs without their `ferry.dev/prune: allow-destructive`
    /// opt-in: `ferry delete --app` (the operator asked for exactly this) but not a Release's
    /// deletion (see `cluster::manager::delete`).
    pub allow_destructive: bool,
    /// Namespaces the caller knows are being deleted (the agent reads them with its own
    /// identity); objects there are left to the namespace.
    pub terminating: BTreeSet<String>,
    /// Discovery shared across runs (the agent); `None`: discover afresh for this run.
    pub discovery: Option<Arc<DiscoveryCache>>,
}

/// Options for [`status_with`].
#[derive(Debug, Clone, Default)]
pub struct StatusOptions {
    /// The push app (ignored when `release` is set).
    pub app: String,
    /// The status of this Release's app.
    pub release: Option<ReleaseRef>,
    /// Namespace of the inventory (`None`: the client's default namespace).
    pub namespace: Option<String>,
    pub concurrency: usize,
    /// Discovery shared across runs (the agent); `None`: discover afresh for this run.
    pub discovery: Option<Arc<DiscoveryCache>>,
}

/// Compile-time proof that the entry points' futures are `Send`, so a driver can `tokio::spawn`
/// them (the agent runs them on its ordinary worker threads). Never called: if a change makes
/// one of them non-`Send` (an `Rc`, a `&dyn` trait object without `Sync`, a lock guard held
/// across an `.await`, a stream closure over borrowed items), the crate stops compiling here.
#[allow(dead_code)]
fn engine_futures_are_send(
    client: &Client,
    manifests: Vec<Manifest>,
    apply_options: &ApplyOptions,
    delete_options: &DeleteOptions,
) {
    use crate::progress::NoProgress;
    fn assert_send<T: Send>(_: T) {}
    assert_send(apply(client, manifests.clone(), apply_options, &NoProgress));
    assert_send(diff(client, manifests, apply_options, &NoProgress));
    assert_send(delete(client, delete_options));
    assert_send(delete_app(client, "app", None, false, 1));
    assert_send(status(client, "app", None, 1));
    assert_send(status_of(client, "app", None, None, 1));
    assert_send(status_with(client, &StatusOptions::default()));
}
