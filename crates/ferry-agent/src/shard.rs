//! Sharding over several agent replicas: which replicas are alive (one membership Lease each),
//! which replica should own each of a fixed number of shards (rendezvous hashing over the live
//! members, so a replica that joins or leaves moves only its own share), one Lease per shard held
//! by its owner (so no object is reconciled by two replicas at once), and the ownership check a
//! reconcile makes before it starts ([`Shards::enter`]).
//!
//! A shard changes hands only through its Lease: the old owner stops starting reconciles for it,
//! waits for the ones running to finish, then clears the Lease's holder; the new owner takes the
//! Lease only when it is free or expired. A replica that dies stops renewing, and its shards are
//! taken over when their Leases expire (one lease duration plus one tick).
//!
//! Ownership is checked against a deadline, not only a flag: each successful renewal makes the
//! shard ours until 0.8 lease durations after the renewal was sent, and [`Shards::enter`] refuses
//! past that, even if the coordinating task is late (a stalled process, an unreachable API
//! server). So a replica stops starting reconciles before any other replica may take its shard.
//! One reconcile that already runs when its replica stalls for a whole lease duration can still
//! overlap its successor's: Leases fence new work, not work in flight.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Label on every Lease of the sharding protocol; its value is the agent's lease name, so two
/// agent installs in one namespace do not see each other.
pub const LEASE_GROUP_LABEL: &str = "ferry.dev/shard-group";
/// Label telling a membership Lease from a shard Lease.
pub const LEASE_ROLE_LABEL: &str = "ferry.dev/shard-role";

/// The shard of an object, stable across replicas, versions and restarts (SHA-256, not the
/// standard library's randomly seeded hasher).
pub fn shard_of(namespace: &str, name: &str, total: u32) -> u32 {
    if total <= 1 {
        return 0;
    }
    let d = digest::digest(&digest::SHA256, format!("{namespace}/{name}").as_bytes());
    (prefix_u64(d.as_ref()) % u64::from(total)) as u32
}

/// The member that should own `shard`: the highest score of hash(member, shard) (rendezvous or
/// highest-random-weight hashing). Adding a member moves only the shards it now wins; removing
/// one moves only the shards it owned.
pub fn preferred_owner(shard: u32, members: &BTreeSet<String>) -> Option<&str> {
    members
        .iter()
        .map(|m| {
            let d = digest::digest(&digest::SHA256, format!("{m}\n{shard}").as_bytes());
            (prefix_u64(d.as_ref()), m.as_str())
        })
        .max()
        .map(|(_, m)| m)
}

fn prefix_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(b)
}

#[derive(Debug, Default)]
struct State {
    /// Shards whose Lease this replica holds, each until when (None: for good, unsharded).
    owned: BTreeMap<u32, Option<Instant>>,
    /// Owned shards being handed over: no new reconcile starts for them.
    draining: BTreeSet<u32>,
    /// Reconciles running per shard.
    running: HashMap<u32, usize>,
}

/// The shards this replica owns, shared by every controller of the replica.
#[derive(Debug)]
pub struct Shards {
    total: u32,
    state: Mutex<State>,
    /// Bumped each time a shard is acquired: the controllers re-run every object they cache, so
    /// objects of the new shard are reconciled at once (the others return at the guard).
    acquired: watch::Sender<u64>,
}

/// Held while one reconcile of a sharded object runs; dropping it lets a draining shard go.
#[derive(Debug)]
pub struct ShardGuard {
    shards: Arc<Shards>,
    shard: u32,
    /// `namespace/name` of the object reconciled (None: a pinned shard, see `enter_shard`).
    object: Option<String>,
}

impl Drop for ShardGuard {
    fn drop(&mut self) {
        if let Some(object) = &self.object {
            // With the "started" line: the window in which this replica may write for the
            // object (tests/sharding_e2e.rs checks no two replicas' windows overlap).
            tracing::debug!(object = %object, shard = self.shard, "sharding: reconcile ended");
        }
        let mut s = self.shards.lock();
        if let Some(n) = s.running.get_mut(&self.shard) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.running.remove(&self.shard);
            }
        }
    }
}

impl Shards {
    /// One shard, always owned: the unsharded agent (one replica, or leader election).
    pub fn single() -> Arc<Self> {
        let shards = Self::new(1);
        shards.lock().owned.insert(0, None);
        shards
    }

    /// `total` shards, none owned yet ([`run`] acquires them).
    pub fn new(total: u32) -> Arc<Self> {
        Arc::new(Self {
            total: total.max(1),
            state: Mutex::new(State::default()),
            acquired: watch::channel(0).0,
        })
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain sets behind; keep going with them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this replica owns the shard of `namespace/name` now.
    pub fn owns(&self, namespace: &str, name: &str) -> bool {
        let shard = shard_of(namespace, name, self.total);
        !self.leaving(shard)
    }

    /// Start a reconcile of `namespace/name` if this replica owns its shard and is not handing it
    /// over; `None` means "not ours: do nothing".
    pub fn enter(self: &Arc<Self>, namespace: &str, name: &str) -> Option<ShardGuard> {
        let shard = shard_of(namespace, name, self.total);
        let mut guard = self.enter_shard(shard)?;
        let object = format!("{namespace}/{name}");
        tracing::debug!(object = %object, shard, "sharding: reconcile started");
        guard.object = Some(object);
        Some(guard)
    }

    /// Pin `shard` (owned, not draining) for work that is not one object's reconcile: while the
    /// guard lives, the shard is not handed over.
    pub fn enter_shard(self: &Arc<Self>, shard: u32) -> Option<ShardGuard> {
        let mut s = self.lock();
        if !usable(&s, shard, Instant::now()) {
            return None;
        }
        *s.running.entry(shard).or_default() += 1;
        Some(ShardGuard {
            shards: self.clone(),
            shard,
            object: None,
        })
    }

    /// Whether `shard` is no longer ours (or our hold on it ran out) or is being handed over.
    pub fn leaving(&self, shard: u32) -> bool {
        !usable(&self.lock(), shard, Instant::now())
    }

    /// One item each time this replica takes a shard (for `Controller::reconcile_all_on`).
    pub fn acquisitions(&self) -> impl futures::Stream<Item = ()> + Send + Sync + 'static {
        futures::stream::unfold(self.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }

    /// The shards owned now, holds that ran out excluded (for status, metrics and tests).
    pub fn owned(&self) -> Vec<u32> {
        let now = Instant::now();
        self.lock()
            .owned
            .iter()
            .filter(|(_, until)| until.is_none_or(|t| t > now))
            .map(|(shard, _)| *shard)
            .collect()
    }

    /// A receiver that changes each time this replica acquires a shard.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.acquired.subscribe()
    }

    /// Record a successful write of the shard's Lease: ours until `until`. Taking a shard that
    /// was not ours (or whose hold had run out, so reconciles were refused) wakes the controllers.
    fn acquire(&self, shard: u32, until: Instant) {
        let mut s = self.lock();
        s.draining.remove(&shard);
        let was_usable = usable(&s, shard, Instant::now());
        s.owned.insert(shard, Some(until));
        drop(s);
        if !was_usable {
            self.acquired.send_modify(|n| *n += 1);
        }
    }

    /// Forget shards whose hold ran out (their Lease was not renewed in time); returns them.
    fn expire(&self) -> Vec<u32> {
        let now = Instant::now();
        let mut s = self.lock();
        let gone: Vec<u32> = s
            .owned
            .iter()
            .filter(|(_, until)| until.is_some_and(|t| t <= now))
            .map(|(shard, _)| *shard)
            .collect();
        for shard in &gone {
            s.owned.remove(shard);
            s.draining.remove(shard);
        }
        gone
    }

    /// Stop starting reconciles for `shard`; true once none is running (the Lease may go).
    fn drain(&self, shard: u32) -> bool {
        let mut s = self.lock();
        s.draining.insert(shard);
        !s.running.contains_key(&shard)
    }

    /// Renewed while draining: keep the hold (and the draining mark) a little longer.
    fn extend(&self, shard: u32, until: Instant) {
        if let Some(held) = self.lock().owned.get_mut(&shard) {
            *held = Some(until);
        }
    }

    fn forget(&self, shard: u32) {
        let mut s = self.lock();
        s.owned.remove(&shard);
        s.draining.remove(&shard);
    }

    fn is_owned(&self, shard: u32) -> bool {
        self.lock().owned.contains_key(&shard)
    }
}

/// Owned, the hold not run out, and not being handed over.
fn usable(s: &State, shard: u32, now: Instant) -> bool {
    let held = s
        .owned
        .get(&shard)
        .is_some_and(|until| until.is_none_or(|t| t > now));
    held && !s.draining.contains(&shard)
}

/// How the replicas coordinate.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Namespace of the Leases (the agent's own).
    pub namespace: String,
    /// The agent's lease name: prefix of every Lease name and the group label's value.
    pub group: String,
    /// This replica, unique among the live ones.
    pub identity: String,
    /// How long a Lease stays valid without renewal: the takeover time after a crash.
    pub lease_duration: Duration,
}

impl ShardConfig {
    fn tick(&self) -> Duration {
        (self.lease_duration / 4).max(Duration::from_millis(250))
    }
    /// How long a renewal keeps a shard ours, counted from before the write was sent: less than
    /// the lease duration, so this replica stops before another may take the shard (the margin
    /// absorbs clock skew between replicas).
    fn hold(&self) -> Duration {
        self.lease_duration.mul_f64(0.8)
    }
    fn member_lease(&self) -> String {
        format!("{}-member-{}", self.group, lease_safe(&self.identity))
    }
    fn shard_lease(&self, shard: u32) -> String {
        format!("{}-shard-{shard}", self.group)
    }
}

/// Lease names are DNS subdomains; identities are pod names plus a suffix, but keep them safe.
fn lease_safe(identity: &str) -> String {
    let s: String = identity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').chars().take(200).collect()
}

/// Errors of one coordination step (logged; the next tick retries).
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("Lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Keep this replica's membership Lease fresh and its share of shards held, until `stop`; then
/// hand every shard back (after running reconciles finish) and delete the membership Lease, so
/// the others take over at once instead of after the lease duration.
pub async fn run(
    client: Client,
    config: ShardConfig,
    shards: Arc<Shards>,
    stop: CancellationToken,
) {
    let leases: Api<Lease> = Api::namespaced(client, &config.namespace);
    loop {
        if let Err(err) = step(&leases, &config, &shards).await {
            tracing::warn!("sharding: {err}");
        }
        // A shard whose Lease was not renewed in time may already be another replica's:
        // `enter` refuses it already; say so once and forget it.
        for shard in shards.expire() {
            tracing::warn!(shard, "sharding: lost the Lease of shard {shard}");
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(config.tick()) => {}
        }
    }
    hand_back(&leases, &config, &shards).await;
}

async fn step(
    leases: &Api<Lease>,
    config: &ShardConfig,
    shards: &Arc<Shards>,
) -> Result<(), ShardError> {
    let now = Timestamp::now();
    // Every write of this step says "renewed at `now`", so our hold counts from here.
    let until = Instant::now() + config.hold();
    let member = config.member_lease();
    renew_member(leases, config, &member, now).await?;
    let selector = format!("{LEASE_GROUP_LABEL}={}", config.group);
    let all = leases
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| ShardError::Lease {
            namespace: config.namespace.clone(),
            name: format!("(list {selector})"),
            source,
        })?;
    let mut members = BTreeSet::new();
    let mut shard_leases: HashMap<String, Lease> = HashMap::new();
    for lease in all.items {
        let role = lease
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LEASE_ROLE_LABEL))
            .cloned();
        let name = lease.metadata.name.clone().unwrap_or_default();
        match role.as_deref() {
            Some("member") => {
                if let Some(holder) = live_holder(&lease, now) {
                    members.insert(holder);
                }
            }
            Some("shard") => {
                shard_leases.insert(name, lease);
            }
            _ => {}
        }
    }
    members.insert(config.identity.clone());

    for shard in 0..shards.total() {
        let name = config.shard_lease(shard);
        let preferred = preferred_owner(shard, &members) == Some(config.identity.as_str());
        let existing = shard_leases.remove(&name);
        let held_by_us = existing
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.as_deref())
            == Some(config.identity.as_str());
        if preferred {
            if held_by_us
                || existing
                    .as_ref()
                    .is_none_or(|l| live_holder(l, now).is_none())
            {
                if write_shard_lease(leases, config, &name, existing, Some(now), now).await? {
                    if !shards.is_owned(shard) {
                        tracing::info!(shard, "sharding: took shard {shard}");
                    }
                    shards.acquire(shard, until);
                } else {
                    shards.forget(shard);
                }
            }
        } else if held_by_us {
            if shards.drain(shard) {
                // Nothing of this shard runs any more: let its new owner have it.
                write_shard_lease(leases, config, &name, existing, None, now).await?;
                shards.forget(shard);
                tracing::info!(shard, "sharding: handed shard {shard} over");
            } else if write_shard_lease(leases, config, &name, existing, Some(now), now).await? {
                // Still finishing: keep the Lease until the running reconciles end.
                shards.extend(shard, until);
            }
        } else if shards.is_owned(shard) {
            // Someone else holds it (we lost it): never reconcile it again until re-acquired.
            shards.forget(shard);
        }
    }
    Ok(())
}

fn live_holder(lease: &Lease, now: Timestamp) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    // A Lease whose times overflow counts as expired.
    let expires = renewed.checked_add(duration).ok()?;
    (expires > now).then_some(holder)
}

fn lease_object(config: &ShardConfig, name: &str, role: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(config.namespace.clone()),
            labels: Some(
                [
                    (LEASE_GROUP_LABEL.to_string(), config.group.clone()),
                    (LEASE_ROLE_LABEL.to_string(), role.to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: None,
    }
}

fn lease_spec(config: &ShardConfig, holder: Option<&str>, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: holder.map(str::to_string),
        lease_duration_seconds: Some(config.lease_duration.as_secs().max(1) as i32),
        renew_time: holder.map(|_| MicroTime(now)),
        acquire_time: holder.map(|_| MicroTime(now)),
        ..Default::default()
    }
}

async fn renew_member(
    leases: &Api<Lease>,
    config: &ShardConfig,
    name: &str,
    now: Timestamp,
) -> Result<(), ShardError> {
    let err = |source| ShardError::Lease {
        namespace: config.namespace.clone(),
        name: name.to_string(),
        source,
    };
    let existing = leases.get_opt(name).await.map_err(err)?;
    let mut lease = existing.unwrap_or_else(|| lease_object(config, name, "member"));
    lease.spec = Some(lease_spec(config, Some(&config.identity), now));
    let result = if lease.metadata.resource_version.is_some() {
        leases.replace(name, &PostParams::default(), &lease).await
    } else {
        leases.create(&PostParams::default(), &lease).await
    };
    match result {
        Ok(_) => Ok(()),
        // Another write raced ours (our own previous one): the next tick renews.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(source) => Err(err(source)),
    }
}

/// Write a shard Lease with `holder` (None: release it), guarded by the resourceVersion read in
/// this tick, so two replicas can never both win it. Ok(false): another replica won the race.
async fn write_shard_lease(
    leases: &Api<Lease>,
    config: &ShardConfig,
    name: &str,
    existing: Option<Lease>,
    holder: Option<Timestamp>,
    now: Timestamp,
) -> Result<bool, ShardError> {
    let mut lease = existing.unwrap_or_else(|| lease_object(config, name, "shard"));
    let previous_acquire = lease.spec.as_ref().and_then(|s| {
        (s.holder_identity.as_deref() == Some(config.identity.as_str()))
            .then(|| s.acquire_time.clone())
            .flatten()
    });
    let mut spec = lease_spec(config, holder.map(|_| config.identity.as_str()), now);
    if holder.is_some() && previous_acquire.is_some() {
        spec.acquire_time = previous_acquire;
    }
    lease.spec = Some(spec);
    let result = if lease.metadata.resource_version.is_some() {
        leases.replace(name, &PostParams::default(), &lease).await
    } else {
        leases.create(&PostParams::default(), &lease).await
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(source) => Err(ShardError::Lease {
            namespace: config.namespace.clone(),
            name: name.to_string(),
            source,
        }),
    }
}

/// On a graceful stop: finish what runs, release every shard, delete the membership Lease.
async fn hand_back(leases: &Api<Lease>, config: &ShardConfig, shards: &Arc<Shards>) {
    let deadline = tokio::time::Instant::now() + config.lease_duration;
    for shard in shards.owned() {
        while !shards.drain(shard) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let name = config.shard_lease(shard);
        if let Ok(Some(existing)) = leases.get_opt(&name).await {
            let ours = existing
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(config.identity.as_str());
            if ours {
                let _ = write_shard_lease(
                    leases,
                    config,
                    &name,
                    Some(existing),
                    None,
                    Timestamp::now(),
                )
                .await;
            }
        }
        shards.forget(shard);
    }
    let _ = leases
        .delete(&config.member_lease(), &Default::default())
        .await;
}

/// Run the agent's one-per-cluster work (the unsealer, image automation) on the replica that
/// owns shard 0, and only there: started when shard 0 is taken, stopped gracefully (running
/// reconciles finish) before shard 0 is handed over, so two replicas never run it at once.
pub async fn run_on_shard_zero<F, Fut>(shards: Arc<Shards>, stop: CancellationToken, mut start: F)
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let poll = Duration::from_millis(250);
    loop {
        let pinned = loop {
            if stop.is_cancelled() {
                return;
            }
            if let Some(guard) = shards.enter_shard(0) {
                break guard;
            }
            tokio::time::sleep(poll).await;
        };
        tracing::info!(
            "sharding: this replica owns shard 0 and runs the unsealer and image automation"
        );
        let term = stop.child_token();
        let work = start(term.clone());
        tokio::pin!(work);
        loop {
            tokio::select! {
                _ = &mut work => break,
                _ = tokio::time::sleep(poll) => {
                    if shards.leaving(0) || stop.is_cancelled() {
                        term.cancel();
                    }
                }
            }
        }
        drop(pinned);
        // Work that ended by itself (none configured, or it gave up) is not restarted while
        // shard 0 stays here: restarting at once would spin, and an endless spin in the task
        // that also renews the Leases let them all expire.
        while !term.is_cancelled() && !shards.leaving(0) && !stop.is_cancelled() {
            tokio::time::sleep(poll).await;
        }
        if stop.is_cancelled() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn shard_of_is_stable_and_spread() {
        assert_eq!(shard_of("team-a", "web", 1), 0);
        assert_eq!(shard_of("team-a", "web", 16), shard_of("team-a", "web", 16));
        let mut counts = [0usize; 8];
        for i in 0..8000 {
            counts[shard_of("ns", &format!("app-{i}"), 8) as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn adding_a_member_moves_only_its_share() {
        let three = members(&["a", "b", "c"]);
        let four = members(&["a", "b", "c", "d"]);
        let mut moved = 0;
        for shard in 0..256 {
            let before = preferred_owner(shard, &three).unwrap();
            let after = preferred_owner(shard, &four).unwrap();
            if before != after {
                assert_eq!(after, "d", "shard {shard} moved between old members");
                moved += 1;
            }
        }
        assert!((30..100).contains(&moved), "moved {moved} of 256");
    }

    #[test]
    fn removing_a_member_moves_only_its_shards() {
        let three = members(&["a", "b", "c"]);
        let two = members(&["a", "c"]);
        for shard in 0..256 {
            let before = preferred_owner(shard, &three).unwrap();
            let after = preferred_owner(shard, &two).unwrap();
            if before != "b" {
                assert_eq!(before, after);
            }
        }
    }

    fn for_a_minute() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn guards_block_a_draining_shard_until_reconciles_end() {
        let shards = Shards::new(1);
        assert!(shards.enter("ns", "x").is_none(), "nothing owned yet");
        shards.acquire(0, for_a_minute());
        let guard = shards.enter("ns", "x").expect("owned");
        assert!(!shards.drain(0), "a reconcile still runs");
        assert!(
            shards.enter("ns", "y").is_none(),
            "draining: no new reconcile"
        );
        drop(guard);
        assert!(shards.drain(0), "drained");
        shards.forget(0);
        assert!(!shards.owns("ns", "x"));
    }

    #[test]
    fn a_hold_that_runs_out_refuses_new_reconciles_without_the_coordinator() {
        let shards = Shards::new(1);
        shards.acquire(0, Instant::now() + Duration::from_millis(50));
        assert!(shards.enter("ns", "x").is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(shards.enter("ns", "x").is_none(), "hold ran out");
        assert!(shards.owned().is_empty());
        assert_eq!(shards.expire(), vec![0]);
        // Renewed after running out: usable again, and the controllers are woken.
        let woken = shards.subscribe();
        shards.acquire(0, for_a_minute());
        assert!(woken.has_changed().unwrap_or(false));
        assert!(shards.enter("ns", "x").is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shard_zero_work_that_ends_by_itself_is_not_restarted() {
        let shards = Shards::new(1);
        shards.acquire(0, for_a_minute());
        let stop = CancellationToken::new();
        let starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = starts.clone();
        let runner = tokio::spawn(run_on_shard_zero(shards.clone(), stop.clone(), move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {}
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 1);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), runner)
            .await
            .expect("stops")
            .expect("no panic");
    }

    #[test]
    fn single_owns_everything() {
        let shards = Shards::single();
        assert!(shards.owns("any", "thing"));
        assert!(shards.enter("any", "thing").is_some());
    }

    #[test]
    fn lease_names_are_safe() {
        assert_eq!(lease_safe("Pod_1.x"), "pod-1-x");
        assert_eq!(lease_safe("-a-"), "a");
    }
}
