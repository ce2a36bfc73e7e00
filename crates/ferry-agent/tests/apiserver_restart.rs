//! The API server goes away and comes back while the agent runs: the agent must survive the
//! outage and apply what was committed meanwhile, with nothing lost or duplicated.
//!
//! This restarts the testenv's shared kube-apiserver (stop it, then `testenv/up` starts it
//! again), so it lives in its own test binary: cargo runs test binaries one after another, so no
//! other test is using the API server at that moment.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};

const OBJECTS: usize = 60;

fn manifests(generation: &str) -> Vec<(String, String)> {
    (0..OBJECTS)
        .map(|i| {
            (
                format!("apps/many/cm-{i:03}.yaml"),
                configmap_yaml(&format!("cm-{i:03}"), generation),
            )
        })
        .collect()
}

async fn stop_apiserver(env: &TestEnv) {
    let pid_file = env.dir.join("pids/kube-apiserver.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", pid_file.display()));
    let pid = pid.trim().to_string();
    let status = Command::new("kill").arg(&pid).status().expect("kill");
    assert!(status.success(), "kill {pid}");
    // `testenv/up` only starts a new apiserver once the old process is gone.
    wait_for("kube-apiserver to exit", Duration::from_secs(120), || {
        let pid = pid.clone();
        async move {
            let alive = Command::new("kill")
                .args(["-0", &pid])
                .stderr(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            Ok((!alive).then_some(()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

fn start_testenv() {
    let up = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testenv/up");
    let out = Command::new(&up).output().expect("run testenv/up");
    assert!(
        out.status.success(),
        "testenv/up failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_survives_an_api_server_restart_and_applies_what_was_committed_meanwhile() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "apiserver-restart").await;
    let repo = Repo::create(&env, &ns.name);
    let first_files = manifests("one");
    let first = repo.commit(
        &first_files
            .iter()
            .map(|(p, c)| (p.as_str(), Some(c.as_str())))
            .collect::<Vec<_>>(),
        "first",
    );
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "2s"),
    )
    .await;
    create::<Release>(
        &client,
        &ns.name,
        release("many", "repo", "./apps/many", serde_json::json!({})),
    )
    .await;
    wait_release_applied(&client, &ns.name, "many", &first, Duration::from_secs(90)).await;

    // The API server goes away; meanwhile a commit changes every object.
    stop_apiserver(&env).await;
    let second_files = manifests("two");
    let second = repo.commit(
        &second_files
            .iter()
            .map(|(p, c)| (p.as_str(), Some(c.as_str())))
            .collect::<Vec<_>>(),
        "second",
    );
    tokio::task::spawn_blocking(start_testenv)
        .await
        .expect("start apiserver");

    // The same agent (never restarted) fetches and applies the new commit.
    let client = env.client().await;
    wait_release_applied(&client, &ns.name, "many", &second, Duration::from_secs(180)).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let items = wait_for(
        "every ConfigMap at the second commit",
        Duration::from_secs(60),
        || {
            let configmaps = configmaps.clone();
            async move {
                let list = configmaps
                    .list(&ListParams::default().labels("ferry.dev/app"))
                    .await?;
                let updated = list
                    .items
                    .iter()
                    .filter(|cm| {
                        cm.data
                            .as_ref()
                            .and_then(|d| d.get("value"))
                            .is_some_and(|v| v == "two")
                    })
                    .count();
                Ok((updated == OBJECTS).then_some(list.items.len()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(items, OBJECTS, "no object lost or duplicated");
    agent.stop().await.expect("agent stops");
    wait_controllers_back(&client, &ns.name).await;
}

/// After a restart the controller-manager, scheduler and kwok reconnect with backoff (and may
/// meet "forbidden" while the new API server's RBAC cache fills). Test binaries run one after
/// another on the shared control plane, so leave it only once a Deployment again becomes
/// Available: that needs the ReplicaSet controller, the scheduler and kwok all working.
async fn wait_controllers_back(client: &kube::Client, ns: &str) {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let canary: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "canary"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "canary"}},
            "template": {
                "metadata": {"labels": {"app": "canary"}},
                "spec": {
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
                    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]
                }
            }
        }
    }))
    .expect("canary deployment");
    deployments
        .patch(
            "canary",
            &PatchParams::apply("ferry-test"),
            &Patch::Apply(&canary),
        )
        .await
        .expect("create canary deployment");
    wait_for(
        "a Deployment Available after the restart (controllers, scheduler and kwok back)",
        Duration::from_secs(240),
        || {
            let deployments = deployments.clone();
            async move {
                let d = deployments.get("canary").await?;
                let available = d
                    .status
                    .and_then(|s| s.available_replicas)
                    .unwrap_or_default();
                Ok((available >= 1).then_some(()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}
