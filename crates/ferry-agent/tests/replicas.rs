//! The agent as a real process: two replicas behind the leader Lease (kill -9 the leader, the
//! standby takes over within the lease time), and an agent killed mid-apply finishes after a
//! restart with no duplicate or lost objects.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};

fn spawn_agent(
    env: &TestEnv,
    ns: &str,
    identity: &str,
    cache: &std::path::Path,
    leader: bool,
) -> Child {
    let log = std::fs::File::create(cache.join(format!("{identity}.log"))).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_ferry-agent"))
        .args(["--kubeconfig", &env.kubeconfig().display().to_string()])
        .args([
            "--namespace",
            ns,
            "--watch-namespace",
            ns,
            "--identity",
            identity,
        ])
        .args([
            "--lease-duration-secs",
            "4",
            "--lease-name",
            "ferry-agent-test",
        ])
        .args(["--leader-elect", if leader { "true" } else { "false" }])
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "text"])
        .arg("--cache-dir")
        .arg(cache.join(identity))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn ferry-agent")
}

async fn lease_holder(client: &kube::Client, ns: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    leases
        .get_opt("ferry-agent-test")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standby_takes_over_when_the_leader_is_killed() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "agent-leader").await;
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "one")))],
        "first",
    );
    // The agent's own namespace: its Releases apply as `ferry-admin` (what `ferry install`
    // creates and binds); here it administers this namespace only.
    grant_admin(&client, &ns.name, "ferry-admin").await;
    let cache = tempfile::tempdir().expect("dir");
    let mut a = spawn_agent(&env, &ns.name, "replica-a", cache.path(), true);
    let mut b = spawn_agent(&env, &ns.name, "replica-b", cache.path(), true);
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1s"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("app", "repo", "app", serde_json::json!({})),
    )
    .await;
    wait_release_applied(&client, &ns.name, "app", &first, Duration::from_secs(60)).await;
    let leader = lease_holder(&client, &ns.name)
        .await
        .expect("a leader holds the lease");
    let (dead, survivor) = if leader == "replica-a" {
        (&mut a, "replica-b")
    } else {
        (&mut b, "replica-a")
    };
    // SIGKILL: no graceful release of the lease.
    dead.kill().expect("kill leader");
    let _ = dead.wait();
    let killed_at = Instant::now();
    let second = repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("a", "two")))],
        "second",
    );
    wait_release_applied(&client, &ns.name, "app", &second, Duration::from_secs(30)).await;
    let takeover = killed_at.elapsed();
    eprintln!("standby applied the next commit {takeover:?} after the leader was killed");
    let survivor_owned = survivor.to_string();
    wait_for(
        "the survivor holds the lease",
        Duration::from_secs(15),
        || {
            let client = client.clone();
            let ns = ns.name.clone();
            let survivor = survivor_owned.clone();
            async move {
                let holder = lease_holder(&client, &ns).await;
                if holder.as_deref() == Some(survivor.as_str()) {
                    return Ok(Some(()));
                }
                anyhow::bail!("holder is {holder:?}")
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    // Lease 4 s + one renew/retry cycle + fetch and apply.
    assert!(
        takeover < Duration::from_secs(15),
        "took over in {takeover:?}"
    );
    for child in [&mut a, &mut b] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_killed_mid_apply_finishes_after_restart() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "agent-kill").await;
    let repo = Repo::create(&env, &ns.name);
    const N: usize = 300;
    let mut yaml = String::new();
    for i in 0..N {
        yaml.push_str(&configmap_yaml(&format!("cm-{i:03}"), "v"));
        yaml.push_str("---\n");
    }
    let sha = repo.commit(&[("app/all.yaml", Some(&yaml))], "many");
    grant_admin(&client, &ns.name, "ferry-admin").await;
    let cache = tempfile::tempdir().expect("dir");
    let mut agent = spawn_agent(&env, &ns.name, "first", cache.path(), false);
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("app", "repo", "app", serde_json::json!({})),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let owned = ListParams::default().labels("ferry.dev/app=app");
    // Kill as soon as the apply is under way but not finished.
    let partial = wait_for("apply under way", Duration::from_secs(60), || {
        let cms = cms.clone();
        let owned = owned.clone();
        async move {
            let n = cms.list_metadata(&owned).await?.items.len();
            Ok((n > 0).then_some(n))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    agent.kill().expect("kill agent");
    let _ = agent.wait();
    let after_kill = cms.list_metadata(&owned).await.expect("list").items.len();
    eprintln!("killed with {after_kill} of {N} objects applied (first seen {partial})");
    assert!(
        after_kill < N,
        "the kill landed mid-apply ({after_kill}/{N})"
    );

    let mut restarted = spawn_agent(&env, &ns.name, "second", cache.path(), false);
    let r = wait_release_applied(&client, &ns.name, "app", &sha, Duration::from_secs(120)).await;
    let items = cms.list_metadata(&owned).await.expect("list").items;
    let mut names: Vec<String> = items
        .iter()
        .filter_map(|m| m.metadata.name.clone())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(items.len(), N, "no lost or extra objects");
    assert_eq!(names.len(), N);
    assert_eq!(r.status.unwrap_or_default().inventory.len(), N);
    let _ = restarted.kill();
    let _ = restarted.wait();
}
