//! Sharding end to end: real `ferry-agent` processes with `--shards 8 --lease-duration-secs 3`
//! split 12 Releases of a repository on the testenv git server. All become Ready; one replica
//! is killed with SIGKILL and its share is reconciled by the others within a bound while every
//! Release stays Ready; a fourth replica joins and only the shards it wins move (to it).
//!
//! How "no Release is applied by two replicas at once" is checked: each replica logs (JSON,
//! `ferry_agent::shard=debug`) a "reconcile started" line when a Release reconcile passes the
//! shard guard and a "reconcile ended" line when the guard is dropped at the end of that
//! reconcile. Every write a Release reconcile makes (apply, prune, status) happens between the
//! two, so these windows contain the applies. All replicas run on this machine and stamp their
//! lines from the same clock, so the test reads every replica's windows per Release and asserts
//! that no two windows of different replicas overlap. A window left open by the killed replica
//! ends at the kill. Separately, a watch on the applied ConfigMaps counts their writes: each must
//! be written exactly once per commit (created, then changed twice), so no replica re-applied an
//! older revision over a newer one and nothing was rewritten at rest. (Counting writes alone
//! could not show concurrency: a second server-side apply of the same content is not a write.)

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ferry_agent::shard::{preferred_owner, shard_of};
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;

const SHARDS: u32 = 8;
/// The agents' `--lease-duration-secs`: 3, or `FERRY_SHARDS_LEASE_SECS` (bench/sharding measures
/// the failover with the default 15 s lease that way).
fn lease() -> Duration {
    let secs = std::env::var("FERRY_SHARDS_LEASE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3u64);
    Duration::from_secs(secs.max(2))
}
const APPS: usize = 12;
const GROUP: &str = "ferry-agent-shards";
/// Kill → every Release of the dead replica reconciled by a survivor: the Leases expire after
/// one lease duration, the survivors notice within a tick (a quarter of it) and reconcile; the
/// rest is slack for a loaded 2-core machine.
fn failover_bound() -> Duration {
    lease() * 4
}

/// Settling after a start or a join: a few renewal ticks (a quarter lease each) and handovers.
fn settle_bound() -> Duration {
    (lease() * 5).max(Duration::from_secs(20))
}

/// One agent process; killed (SIGKILL) when dropped, so a failing test leaves none behind.
struct Replica {
    id: String,
    child: Child,
    log: PathBuf,
    /// When it was killed (its open audit window, if any, ends there).
    killed_at: Option<Timestamp>,
}

impl Replica {
    fn spawn(env: &TestEnv, ns: &str, id: &str, dir: &Path) -> Self {
        let log = dir.join(format!("{id}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
            .args(["--kubeconfig", &env.kubeconfig().display().to_string()])
            .args(["--namespace", ns, "--watch-namespace", ns])
            .args(["--identity", id])
            .args(["--shards", &SHARDS.to_string()])
            .args(["--lease-duration-secs", &lease().as_secs().to_string()])
            .args(["--lease-name", GROUP])
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(["--log-format", "json"])
            .arg("--cache-dir")
            .arg(dir.join(id))
            .env(
                "RUST_LOG",
                "info,kube_lease_manager=warn,ferry_agent::shard=debug",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn ferry-agent");
        Self {
            id: id.to_string(),
            child,
            log,
            killed_at: None,
        }
    }

    /// SIGKILL: no hand-back, no graceful anything.
    fn kill(&mut self) {
        if self.killed_at.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.killed_at = Some(Timestamp::now());
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The replicas' logs stay on disk when the test fails (their path is printed).
struct Logs(Option<tempfile::TempDir>);

impl Logs {
    fn path(&self) -> &Path {
        self.0.as_ref().map(|d| d.path()).unwrap_or(Path::new("."))
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!("agent logs kept in {}", dir.keep().display());
        }
    }
}

/// One reconcile of one Release by one replica, from the guard's log lines.
#[derive(Debug, Clone)]
struct Window {
    replica: String,
    start: Timestamp,
    end: Timestamp,
    /// Closed by the replica's "ended" line (false: cut off by the kill, or still running).
    closed: bool,
}

/// Every reconcile window in a replica's log, per `namespace/name`. Windows still open end at
/// the replica's kill, or now if it runs.
fn windows(replica: &Replica) -> BTreeMap<String, Vec<Window>> {
    let text = std::fs::read_to_string(&replica.log).unwrap_or_default();
    let mut open: HashMap<String, Timestamp> = HashMap::new();
    let mut out: BTreeMap<String, Vec<Window>> = BTreeMap::new();
    // A partly written last line fails to parse and is skipped (read again on the next poll).
    for line in text.lines() {
        let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(message), Some(object), Some(at)) = (
            record["message"].as_str(),
            record["object"].as_str(),
            record["timestamp"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok()),
        ) else {
            continue;
        };
        match message {
            "sharding: reconcile started" => {
                let earlier = open.insert(object.to_string(), at);
                assert!(
                    earlier.is_none(),
                    "{}: two reconciles of {object} at once in one replica",
                    replica.id
                );
            }
            "sharding: reconcile ended" => {
                if let Some(start) = open.remove(object) {
                    out.entry(object.to_string()).or_default().push(Window {
                        replica: replica.id.clone(),
                        start,
                        end: at,
                        closed: true,
                    });
                }
            }
            _ => {}
        }
    }
    let cut = replica.killed_at.unwrap_or_else(Timestamp::now);
    for (object, start) in open {
        out.entry(object).or_default().push(Window {
            replica: replica.id.clone(),
            start,
            end: cut,
            closed: false,
        });
    }
    out
}

fn all_windows(replicas: &[&Replica]) -> BTreeMap<String, Vec<Window>> {
    let mut all: BTreeMap<String, Vec<Window>> = BTreeMap::new();
    for r in replicas {
        for (object, w) in windows(r) {
            all.entry(object).or_default().extend(w);
        }
    }
    all
}

/// Shard number → live holder, from the shard Leases in the cluster.
async fn shard_holders(client: &kube::Client, ns: &str) -> BTreeMap<u32, String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let list = leases
        .list(&ListParams::default().labels("ferry.dev/shard-role=shard"))
        .await
        .expect("list shard Leases");
    let prefix = format!("{GROUP}-shard-");
    let now = Timestamp::now();
    list.items
        .into_iter()
        .filter_map(|l| {
            let shard = l.metadata.name?.strip_prefix(&prefix)?.parse().ok()?;
            let spec = l.spec?;
            let holder = spec.holder_identity.filter(|h| !h.is_empty())?;
            let renewed = spec.renew_time?.0;
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(0));
            let live = renewed
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(duration))
                .is_ok_and(|expires| expires > now);
            live.then_some((shard, holder))
        })
        .collect()
}

/// What rendezvous hashing gives each shard among `members`.
fn expected(members: &[&str]) -> BTreeMap<u32, String> {
    let members: BTreeSet<String> = members.iter().map(|s| s.to_string()).collect();
    (0..SHARDS)
        .filter_map(|s| Some((s, preferred_owner(s, &members)?.to_string())))
        .collect()
}

async fn wait_holders(
    client: &kube::Client,
    ns: &str,
    want: &BTreeMap<u32, String>,
    within: Duration,
) -> Duration {
    let t0 = Instant::now();
    wait_for("shard Leases held as expected", within, || {
        let client = client.clone();
        async move {
            let have = shard_holders(&client, ns).await;
            if &have == want {
                return Ok(Some(()));
            }
            anyhow::bail!("have {have:?}, want {want:?}")
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    t0.elapsed()
}

/// Release names for namespace `ns` (shards hash namespace and name, and the namespace is
/// random): every shard gets one before any gets two, so each replica has Releases to lose or
/// win whatever shards it holds.
fn app_names(ns: &str) -> Vec<String> {
    let mut per_shard = vec![0usize; SHARDS as usize];
    let mut names = Vec::new();
    for i in 0.. {
        let name = format!("app-{i}");
        let shard = shard_of(ns, &name, SHARDS) as usize;
        let cap = if per_shard.iter().all(|n| *n > 0) {
            2
        } else {
            1
        };
        if per_shard[shard] < cap {
            per_shard[shard] += 1;
            names.push(name);
        }
        if names.len() == APPS {
            break;
        }
    }
    names
}

async fn wait_all_applied(client: &kube::Client, ns: &str, names: &[String], sha: &str) {
    for name in names {
        wait_release_applied(client, ns, name, sha, Duration::from_secs(90)).await;
    }
}

/// Every Release's Ready condition, by name.
async fn readiness(client: &kube::Client, ns: &str) -> BTreeMap<String, Option<String>> {
    let api: Api<Release> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .expect("list Releases")
        .items
        .into_iter()
        .map(|r| {
            let ready = ready_state(&r.status.clone().unwrap_or_default().conditions)
                .map(|(status, _, _)| status);
            (r.metadata.name.unwrap_or_default(), ready)
        })
        .collect()
}

/// Every resourceVersion each ConfigMap of the test was seen with, from a watch started before
/// any Release exists.
fn count_writes(client: &kube::Client, ns: &str) -> Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> {
    let seen: Arc<Mutex<BTreeMap<String, BTreeSet<String>>>> = Arc::default();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            let (watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) = (match event {
                Ok(e) => e,
                Err(_) => continue,
            }) else {
                continue;
            };
            let (Some(name), Some(version)) = (cm.metadata.name, cm.metadata.resource_version)
            else {
                continue;
            };
            if name.starts_with("cm-") {
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(name)
                    .or_default()
                    .insert(version);
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_split_releases_survive_a_kill_and_a_scale_up_never_applying_twice_at_once() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "agent-shards").await;
    let ns_name = ns.name.clone();
    let repo = Repo::create(&env, &ns_name);
    let names = app_names(&ns_name);
    let files = |v: &str| -> Vec<(String, String)> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    format!("{name}/cm.yaml"),
                    configmap_yaml(&format!("cm-{i}"), v),
                )
            })
            .collect()
    };
    let commit = |v: &str, msg: &str| {
        let f = files(v);
        let changes: Vec<(&str, Option<&str>)> = f
            .iter()
            .map(|(p, c)| (p.as_str(), Some(c.as_str())))
            .collect();
        repo.commit(&changes, msg)
    };
    let first = commit("one", "first");
    grant_admin(&client, &ns_name, "ferry-admin").await;
    git_secret(&env, &client, &ns_name, "git-auth").await;
    let writes = count_writes(&client, &ns_name);
    let logs = Logs(Some(
        tempfile::Builder::new()
            .prefix("ferry-shard-e2e")
            .tempdir()
            .expect("log dir"),
    ));
    let mut a = Replica::spawn(&env, &ns_name, "shard-a", logs.path());
    let mut b = Replica::spawn(&env, &ns_name, "shard-b", logs.path());
    let mut c = Replica::spawn(&env, &ns_name, "shard-c", logs.path());
    create::<GitSource>(
        &client,
        &ns_name,
        git_source("repo", &repo.url, Some("git-auth"), "1s"),
    )
    .await;
    for name in &names {
        create::<Release>(
            &client,
            &ns_name,
            release(name, "repo", name, serde_json::json!({})),
        )
        .await;
    }
    wait_all_applied(&client, &ns_name, &names, &first).await;

    // Each shard is held by the replica rendezvous hashing picks, and all three hold some.
    let three = expected(&["shard-a", "shard-b", "shard-c"]);
    wait_holders(&client, &ns_name, &three, settle_bound()).await;
    let holding: BTreeSet<&String> = three.values().collect();
    assert_eq!(holding.len(), 3, "a replica holds no shard: {three:?}");

    // At rest: nothing is written (replicas fighting over an object would rewrite it).
    let before = writes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = writes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(before, after, "ConfigMaps rewritten at rest");

    // kill -9 one replica: its Releases are reconciled by the others within the bound, and no
    // Release leaves Ready meanwhile.
    let share: Vec<String> = names
        .iter()
        .filter(|name| {
            three
                .get(&shard_of(&ns_name, name, SHARDS))
                .map(String::as_str)
                == Some("shard-c")
        })
        .cloned()
        .collect();
    assert!(!share.is_empty(), "shard-c owns no Release: {three:?}");
    c.kill();
    let killed_at = c.killed_at.unwrap_or_else(Timestamp::now);
    let killed = Instant::now();
    let two = expected(&["shard-a", "shard-b"]);
    let leases_moved = wait_holders(&client, &ns_name, &two, failover_bound()).await;
    let taken_over = wait_for(
        "every Release of the killed replica reconciled by a survivor",
        failover_bound(),
        || {
            let (client, ns_name, share) = (client.clone(), ns_name.clone(), share.clone());
            let (a, b) = (&a, &b);
            async move {
                let ready = readiness(&client, &ns_name).await;
                for (name, state) in &ready {
                    assert_eq!(
                        state.as_deref(),
                        Some("True"),
                        "Release {name} left Ready after the kill: {ready:?}"
                    );
                }
                let seen = all_windows(&[a, b]);
                let mut last = killed_at;
                for name in &share {
                    let done = seen
                        .get(&format!("{ns_name}/{name}"))
                        .into_iter()
                        .flatten()
                        .filter(|w| w.closed && w.start > killed_at)
                        .map(|w| w.end)
                        .min();
                    match done {
                        Some(end) => last = last.max(end),
                        None => anyhow::bail!("{name} not reconciled by a survivor yet"),
                    }
                }
                Ok(Some(last))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let failover = killed_at.duration_until(taken_over);
    eprintln!(
        "SIGKILL of shard-c ({} Releases, lease {:?}): shard Leases moved after {leases_moved:?}, \
         its Releases reconciled by the survivors {failover:#} after the kill (checked {:?} after)",
        share.len(),
        lease(),
        killed.elapsed()
    );
    // One line for bench/sharding/run.sh.
    eprintln!(
        "failover: lease {}s, {} Releases, {:.2}s",
        lease().as_secs(),
        share.len(),
        failover.as_secs_f64()
    );
    assert!(
        failover
            < k8s_openapi::jiff::SignedDuration::try_from(failover_bound()).unwrap_or_default(),
        "failover took {failover:#}"
    );

    // The next commit reaches every Release through the two survivors.
    let second = commit("two", "second");
    wait_all_applied(&client, &ns_name, &names, &second).await;

    // Scale up: a fourth replica takes the shards it wins, and only those move.
    let joined = Timestamp::now();
    let mut d = Replica::spawn(&env, &ns_name, "shard-d", logs.path());
    let four = expected(&["shard-a", "shard-b", "shard-d"]);
    let moved_in = wait_holders(&client, &ns_name, &four, settle_bound()).await;
    let moved: Vec<u32> = (0..SHARDS).filter(|s| two.get(s) != four.get(s)).collect();
    assert!(!moved.is_empty(), "shard-d took no shard: {four:?}");
    for s in &moved {
        assert_eq!(
            four.get(s).map(String::as_str),
            Some("shard-d"),
            "shard {s} moved between old replicas"
        );
    }
    eprintln!("shard-d joined: shards {moved:?} moved to it within {moved_in:?}");
    let third = commit("three", "third");
    wait_all_applied(&client, &ns_name, &names, &third).await;
    // At the Release level too: the new replica reconciled exactly the Releases of its shards.
    let by_d: BTreeSet<String> = windows(&d)
        .into_iter()
        .filter(|(_, w)| w.iter().any(|w| w.start > joined))
        .map(|(object, _)| object)
        .collect();
    let share_d: BTreeSet<String> = names
        .iter()
        .filter(|name| moved.contains(&shard_of(&ns_name, name, SHARDS)))
        .map(|name| format!("{ns_name}/{name}"))
        .collect();
    assert!(
        !share_d.is_empty(),
        "no Release in shard-d's shards {moved:?}"
    );
    assert_eq!(by_d, share_d, "Releases shard-d reconciled vs. its share");

    for r in [&mut a, &mut b, &mut d] {
        r.kill();
    }

    // The invariant over the whole run: no two replicas' windows for a Release overlap.
    let all = all_windows(&[&a, &b, &c, &d]);
    let mut replicas_seen = BTreeSet::new();
    let mut total = 0;
    for (object, ws) in &all {
        total += ws.len();
        for (i, x) in ws.iter().enumerate() {
            replicas_seen.insert(x.replica.clone());
            for y in &ws[i + 1..] {
                if x.replica != y.replica {
                    assert!(
                        x.end <= y.start || y.end <= x.start,
                        "{object} reconciled by two replicas at once: {x:?} and {y:?}"
                    );
                }
            }
        }
    }
    assert_eq!(all.len(), APPS, "windows for: {:?}", all.keys());
    assert_eq!(
        replicas_seen.len(),
        4,
        "replicas with windows: {replicas_seen:?}"
    );
    eprintln!(
        "{total} reconcile windows of {APPS} Releases by 4 replicas: none overlap across replicas"
    );

    // Counted writes: each ConfigMap created once and changed once per later commit.
    let seen = writes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(seen.len(), APPS, "ConfigMaps seen: {seen:?}");
    for (name, versions) in &seen {
        assert_eq!(versions.len(), 3, "{name} written {} times", versions.len());
    }
}
