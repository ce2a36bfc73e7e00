//! The resource manager: everything ferry does to an app's objects in the cluster, through one
//! [`ResourceManager`] holding the client, the owner and the run's settings, one file per verb:
//!
//! - [`apply`]: server-side apply of a staged batch (no write for an unchanged object),
//! - [`diff`]: server-side dry run and a redacted unified diff,
//! - [`delete`]: owned deletes with UID preconditions (prune and `ferry delete`),
//! - [`wait`]: until Current (`health::assess`), with events for the ones that are not,
//! - [`status`]: the health of an inventory's objects,
//! - [`hooks`]: Helm hook phases at apply time,
//!
//! over the metadata-only [`live`] index. Apply, delete and hooks return one [`ChangeSet`]
//! ([`changeset`]). The pipeline decides *what* to do; the manager only does it.

pub mod apply;
pub mod changeset;
pub mod delete;
pub mod diff;
pub mod hooks;
pub mod live;
pub mod recreate;
pub mod status;
pub mod wait;

use std::sync::Arc;
use std::time::Duration;

use kube::Client;

pub use changeset::{Change, ChangeSet};

use crate::health::CustomHealth;
use crate::ownership::Owner;

/// Talks to the cluster for one app's run: who the objects belong to, how many requests may be
/// in flight, and whether writes are real, forced or dry runs.
#[derive(Clone)]
pub struct ResourceManager {
    client: Client,
    owner: Owner,
    concurrency: usize,
    dry_run: bool,
    force_conflicts: bool,
    timeout: Duration,
    /// Custom CEL health rules (`health::cel`); empty: the built-in rules only.
    health_checks: Arc<CustomHealth>,
}

impl ResourceManager {
    /// A manager for `owner`'s objects: 16 requests at a time, real writes, no forced
    /// conflicts, waits of at most five minutes.
    pub fn new(client: Client, owner: Owner) -> Self {
        Self {
            client,
            owner,
            concurrency: 16,
            dry_run: false,
            force_conflicts: false,
            timeout: Duration::from_secs(300),
            health_checks: Arc::default(),
        }
    }

    /// At most `concurrency` requests in flight (at least one).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Server-side dry run: nothing is persisted.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Take over fields another field manager owns (server-side apply `force`).
    pub fn with_force_conflicts(mut self, force: bool) -> Self {
        self.force_conflicts = force;
        self
    }

    /// How long a wait (hooks, health) may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Judge the kinds these rules name by them instead of the built-in rules.
    pub fn with_health_checks(mut self, health_checks: Arc<CustomHealth>) -> Self {
        self.health_checks = health_checks;
        self
    }

    pub fn health_checks(&self) -> &CustomHealth {
        &self.health_checks
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Accept objects carrying the pre-upgrade identity `legacy_app` as this owner's (after the
    /// pipeline verified and adopted its inventory).
    pub fn adopt_legacy(&mut self, legacy_app: &str) {
        self.owner.legacy = Some(legacy_app.to_string());
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}
