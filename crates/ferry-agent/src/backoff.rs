//! The one requeue policy every controller of the agent uses: when to look at an object again
//! after a success (its interval, with a little jitter) and after a failure (exponential backoff
//! per object, capped, with jitter, reset by the next success).
//!
//! Why jitter: without it, 1000 Releases created by one `kubectl apply` (or resynced together
//! after a leader takeover) are requeued for the same instant on every interval and hit the git
//! server and the API server in lock-step. Flux spreads its intervals the same way
//! (`--interval-jitter-percentage`, 5% by default); failures are spread too, so objects that
//! failed together (a registry or git outage) do not all retry in the same second.
//!
//! The decisions, written down:
//! - After the n-th consecutive failure of an object the delay is `2s · 2^(n-1)` (2 s, 4 s, 8 s,
//!   …), capped at the caller's `cap` (the object's retry interval or interval), then shortened by
//!   up to [`BackoffPolicy::error_jitter`] (10%): jitter never makes a retry later than the cap.
//! - A success forgets the object's failures ([`Backoff::on_success`]); the next failure starts
//!   at 2 s again.
//! - The normal requeue after a success is the interval ± [`BackoffPolicy::interval_jitter`]
//!   (5%), never below the agent's `--min-interval`.
//! - Short polls (waiting for a dependency, a reconcile slot) are jittered like intervals.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// (controller kind, (namespace, name)): failures are counted per object and per controller, so
/// a GitSource and a Release of the same name never share a counter.
type ObjectKey = (&'static str, (String, String));

/// The numbers of the policy (see the module documentation for what each does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// The delay after the first failure.
    pub first_retry: Duration,
    /// No requeue is ever shorter than this (the agent's `--min-interval`, at least 1 s) unless
    /// the caller's cap is.
    pub floor: Duration,
    /// Fraction (0..1) by which a failure's delay may be shortened.
    pub error_jitter: f64,
    /// Fraction (0..1) by which an interval may be shortened or lengthened.
    pub interval_jitter: f64,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            first_retry: Duration::from_secs(2),
            floor: Duration::from_secs(1),
            error_jitter: 0.10,
            interval_jitter: 0.05,
        }
    }
}

impl BackoffPolicy {
    /// The policy with the agent's `--min-interval` as the floor for interval requeues.
    pub fn with_floor(min_interval: Duration) -> Self {
        Self {
            floor: min_interval.max(Duration::from_secs(1)),
            ..Self::default()
        }
    }

    /// The delay after `failures` consecutive failures (1 = the first), before jitter: doubling
    /// from [`Self::first_retry`], capped at `cap` (itself at least one second).
    pub fn error_delay(&self, failures: u32, cap: Duration) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        let delay = self.first_retry.saturating_mul(1u32 << doublings);
        delay.min(cap.max(Duration::from_secs(1)))
    }
}

/// The policy plus its state: failure counts per object and the random source of the jitter.
pub struct Backoff {
    policy: BackoffPolicy,
    failures: Mutex<HashMap<ObjectKey, u32>>,
    rng: Mutex<StdRng>,
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backoff")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Backoff {
    /// A backoff whose jitter comes from the operating system's randomness.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self::with_rng(policy, StdRng::from_os_rng())
    }

    /// A backoff with a fixed seed: the same seed gives the same delays (tests).
    pub fn seeded(policy: BackoffPolicy, seed: u64) -> Self {
        Self::with_rng(policy, StdRng::seed_from_u64(seed))
    }

    fn with_rng(policy: BackoffPolicy, rng: StdRng) -> Self {
        Self {
            policy,
            failures: Mutex::default(),
            rng: Mutex::new(rng),
        }
    }

    pub fn policy(&self) -> &BackoffPolicy {
        &self.policy
    }

    /// Record one more failure of `kind` `key` and return when to retry it: exponential, capped
    /// at `cap`, shortened by up to the error jitter.
    pub fn on_error(&self, kind: &'static str, key: &(String, String), cap: Duration) -> Duration {
        let failures = {
            let mut counts = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let count = counts.entry((kind, key.clone())).or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        let delay = self.policy.error_delay(failures, cap);
        let shorten = self.fraction(0.0, self.policy.error_jitter);
        delay.mul_f64(1.0 - shorten)
    }

    /// Forget the failures of `kind` `key`: the next failure backs off from the start again.
    pub fn on_success(&self, kind: &'static str, key: &(String, String)) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(kind, key.clone()));
    }

    /// Consecutive failures of `kind` `key` so far.
    pub fn failures(&self, kind: &'static str, key: &(String, String)) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(kind, key.clone()))
            .copied()
            .unwrap_or(0)
    }

    /// The requeue after a success: `interval` ± the interval jitter, never below the floor
    /// (an interval already below the floor is the caller's decision and is kept).
    pub fn interval(&self, interval: Duration) -> Duration {
        let jitter = self.policy.interval_jitter;
        let jittered = interval.mul_f64(1.0 + self.fraction(-jitter, jitter));
        jittered.max(self.policy.floor.min(interval))
    }

    /// A uniformly random fraction in `[low, high)`; no jitter (0) when the range is empty.
    fn fraction(&self, low: f64, high: f64) -> f64 {
        if !low.is_finite() || !high.is_finite() || high <= low {
            return 0.0;
        }
        self.rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .random_range(low..high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> (String, String) {
        ("team-a".to_string(), name.to_string())
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn failures_double_from_two_seconds_up_to_the_cap() {
        let policy = BackoffPolicy::default();
        let delays: Vec<u64> = (1..=8)
            .map(|n| policy.error_delay(n, MINUTE).as_secs())
            .collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60, 60]);
        // A huge count neither overflows nor passes the cap.
        assert_eq!(policy.error_delay(u32::MAX, MINUTE), MINUTE);
        // A cap below a second is raised to one second (never a hot loop).
        assert_eq!(
            policy.error_delay(5, Duration::ZERO),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn jittered_failure_delays_stay_within_ten_percent_below_the_envelope() {
        let backoff = Backoff::seeded(BackoffPolicy::default(), 7);
        for n in 1..=10u32 {
            let envelope = backoff.policy().error_delay(n, MINUTE);
            let delay = backoff.on_error("Release", &key("web"), MINUTE);
            assert!(delay <= envelope, "failure {n}: {delay:?} > {envelope:?}");
            assert!(
                delay >= envelope.mul_f64(0.9),
                "failure {n}: {delay:?} more than 10% below {envelope:?}"
            );
        }
        assert_eq!(backoff.failures("Release", &key("web")), 10);
    }

    #[test]
    fn a_success_resets_only_that_object_of_that_controller() {
        let backoff = Backoff::seeded(BackoffPolicy::default(), 1);
        for _ in 0..5 {
            backoff.on_error("Release", &key("web"), MINUTE);
            backoff.on_error("Release", &key("api"), MINUTE);
            backoff.on_error("GitSource", &key("web"), MINUTE);
        }
        backoff.on_success("Release", &key("web"));
        assert_eq!(backoff.failures("Release", &key("web")), 0);
        assert_eq!(backoff.failures("Release", &key("api")), 5);
        assert_eq!(backoff.failures("GitSource", &key("web")), 5);
        // The next failure starts over at (at most) two seconds.
        let first = backoff.on_error("Release", &key("web"), MINUTE);
        assert!(first <= Duration::from_secs(2) && first >= Duration::from_millis(1800));
    }

    #[test]
    fn intervals_spread_by_at_most_five_percent_and_do_not_fire_in_lock_step() {
        let backoff = Backoff::seeded(BackoffPolicy::default(), 42);
        let interval = Duration::from_secs(600);
        let delays: Vec<Duration> = (0..1000).map(|_| backoff.interval(interval)).collect();
        for d in &delays {
            assert!(
                *d >= interval.mul_f64(0.95) && *d <= interval.mul_f64(1.05),
                "{d:?}"
            );
        }
        // 1000 Releases with the same interval: spread over the window, not one instant.
        let distinct: std::collections::BTreeSet<u128> =
            delays.iter().map(Duration::as_millis).collect();
        assert!(
            distinct.len() > 500,
            "only {} distinct delays",
            distinct.len()
        );
        let earliest = delays.iter().min().copied().unwrap_or_default();
        let latest = delays.iter().max().copied().unwrap_or_default();
        assert!(
            latest - earliest > Duration::from_secs(30),
            "spread {:?}",
            latest - earliest
        );
    }

    #[test]
    fn intervals_never_drop_below_the_agent_floor() {
        let backoff = Backoff::seeded(BackoffPolicy::with_floor(Duration::from_secs(10)), 3);
        for _ in 0..200 {
            let d = backoff.interval(Duration::from_secs(10));
            assert!(d >= Duration::from_secs(10) && d <= Duration::from_millis(10_500));
        }
        // A caller's own shorter poll (a reconcile slot, one second) is not raised to the floor.
        assert!(backoff.interval(Duration::from_secs(1)) >= Duration::from_secs(1));
        assert!(backoff.interval(Duration::from_secs(1)) <= Duration::from_millis(1050));
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let a = Backoff::seeded(BackoffPolicy::default(), 99);
        let b = Backoff::seeded(BackoffPolicy::default(), 99);
        for _ in 0..20 {
            assert_eq!(
                a.interval(Duration::from_secs(60)),
                b.interval(Duration::from_secs(60))
            );
            assert_eq!(
                a.on_error("Receiver", &key("hook"), MINUTE),
                b.on_error("Receiver", &key("hook"), MINUTE)
            );
        }
    }
}
