//! The sharding protocol against the real API server: three replicas split the shards with each
//! shard held by exactly one; a replica that dies (its task aborted: no hand-back) has its shards
//! taken over after the lease duration; a fourth replica joining moves only the shards it wins;
//! a graceful stop hands shards over at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_agent::shard::{self, ShardConfig, Shards, preferred_owner};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOTAL: u32 = 12;
const LEASE: Duration = Duration::from_secs(3);

struct Replica {
    id: String,
    shards: Arc<Shards>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

async fn replica(client: &kube::Client, ns: &str, id: &str) -> Replica {
    let shards = Shards::new(TOTAL);
    let stop = CancellationToken::new();
    let config = ShardConfig {
        namespace: ns.to_string(),
        group: "ferry-agent-test".to_string(),
        identity: id.to_string(),
        lease_duration: LEASE,
    };
    let task = tokio::spawn(shard::run(
        client.clone(),
        config,
        shards.clone(),
        stop.clone(),
    ));
    Replica {
        id: id.to_string(),
        shards,
        stop,
        task,
    }
}

/// Shard → holders, from each replica's own view (must never name two replicas).
fn owners(replicas: &[&Replica]) -> BTreeMap<u32, Vec<String>> {
    let mut map: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for r in replicas {
        for s in r.shards.owned() {
            map.entry(s).or_default().push(r.id.clone());
        }
    }
    map
}

fn expected(ids: &[&str]) -> BTreeMap<u32, Vec<String>> {
    let members: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
    (0..TOTAL)
        .map(|s| (s, vec![preferred_owner(s, &members).unwrap().to_string()]))
        .collect()
}

/// Poll every 50 ms until the owners equal `want`, asserting on every poll that no shard has
/// two owners.
async fn settle(
    replicas: &[&Replica],
    want: &BTreeMap<u32, Vec<String>>,
    within: Duration,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let now = owners(replicas);
        for (shard, holders) in &now {
            assert!(
                holders.len() <= 1,
                "shard {shard} owned by two replicas at once: {holders:?}"
            );
        }
        if &now == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < within,
            "shards did not settle within {within:?}: have {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_split_shards_take_over_a_dead_one_and_a_new_one_moves_only_its_share() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "agent-shard").await;

    let a = replica(&client, &ns.name, "replica-a").await;
    let b = replica(&client, &ns.name, "replica-b").await;
    let c = replica(&client, &ns.name, "replica-c").await;
    settle(
        &[&a, &b, &c],
        &expected(&["replica-a", "replica-b", "replica-c"]),
        Duration::from_secs(20),
    )
    .await;
    for r in [&a, &b, &c] {
        assert!(!r.shards.owned().is_empty(), "{} owns no shard", r.id);
    }

    // The Leases in the cluster agree with the replicas' views.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let listed = leases
        .list(&ListParams::default().labels("ferry.dev/shard-role=shard"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), TOTAL as usize);

    // c dies without handing anything back: its shards go to a and b after the lease expires,
    // and the shards a and b held do not move.
    let before = owners(&[&a, &b]);
    c.task.abort();
    let _ = c.task.await;
    let took = settle(
        &[&a, &b],
        &expected(&["replica-a", "replica-b"]),
        Duration::from_secs(20),
    )
    .await;
    eprintln!("takeover after a crash: {took:?} (lease {LEASE:?})");
    let after = owners(&[&a, &b]);
    for (shard, holders) in before {
        assert_eq!(
            after.get(&shard),
            Some(&holders),
            "shard {shard} moved between survivors"
        );
    }

    // d joins: only shards d now wins move, and each moves to d.
    let before = owners(&[&a, &b]);
    let d = replica(&client, &ns.name, "replica-d").await;
    settle(
        &[&a, &b, &d],
        &expected(&["replica-a", "replica-b", "replica-d"]),
        Duration::from_secs(20),
    )
    .await;
    let after = owners(&[&a, &b, &d]);
    for (shard, holders) in &after {
        if holders[0] != "replica-d" {
            assert_eq!(
                before.get(shard),
                Some(holders),
                "shard {shard} moved to an old member"
            );
        }
    }

    // A graceful stop hands d's shards over at once, not after the lease duration... plus the
    // tick the others need to notice its membership Lease is gone.
    d.stop.cancel();
    let _ = d.task.await;
    let took = settle(
        &[&a, &b],
        &expected(&["replica-a", "replica-b"]),
        Duration::from_secs(20),
    )
    .await;
    eprintln!("handover after a graceful stop: {took:?}");
    assert!(took < LEASE * 2, "graceful handover took {took:?}");

    a.stop.cancel();
    b.stop.cancel();
    let _ = a.task.await;
    let _ = b.task.await;
    // Graceful stops delete their membership Lease; the crashed replica's stays (expired).
    let left = wait_for(
        "membership Leases of stopped replicas deleted",
        Duration::from_secs(10),
        || {
            let leases = leases.clone();
            async move {
                let l = leases
                    .list(&ListParams::default().labels("ferry.dev/shard-role=member"))
                    .await?;
                let names: Vec<String> = l
                    .items
                    .into_iter()
                    .filter_map(|l| l.metadata.name)
                    .collect();
                Ok((names == ["ferry-agent-test-member-replica-c"]).then_some(()))
            }
        },
    )
    .await;
    assert!(left.is_ok(), "membership Leases: {left:?}");
}
