//! Image automation end to end against the real testenv (owned by the image-automation work):
//! a tag pushed to the real registry → scan (triggered as a registry webhook would) → policy →
//! commit pushed to the real git server → the agent's GitSource fetches it → the Release applies
//! it → the Deployment rolls out (kwok nodes) and the Release is Ready. One agent runs it all
//! (`--image-automation`), as in a cluster. Prints the latency of each leg.

use std::time::{Duration, Instant};

use ferry_agent::controllers::image_automation::ScanTrigger;
use ferry_agent::{Agent, AgentOptions};
use ferry_api::common::{READY, find_condition};
use ferry_api::images::{ImagePolicy, ImageRepository, ImageUpdate};
use ferry_api::{GitSource, Release};
use ferry_testsupport::git::{Repo, crane, push_empty_image};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

async fn install_crds(client: &Client) {
    // THE CRD list (ferry_api::all_crds) has the image automation kinds too.
    ferry_testsupport::install_crds(client, &ferry_agent::crds::all(), "ferry-images-e2e").await;
}

async fn create<K>(client: &Client, ns: &str, value: serde_json::Value)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let obj: K = serde_json::from_value(value).expect("object");
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
}

fn deployment(ns: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: app}}\n  template:\n    metadata:\n      labels: {{app: app}}\n    spec:\n      tolerations:\n        - {{key: kwok.x-k8s.io/node, operator: Exists}}\n      containers:\n        - name: app\n          image: {image}:1.0.0 # {{\"$imagepolicy\": \"{ns}:app\"}}\n"
    )
}

/// Wait until the Release is Ready having applied `sha`.
async fn release_ready_at(client: &Client, ns: &str, sha: &str, timeout: Duration) {
    let api: Api<Release> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("Release Ready at {sha}"), timeout, || {
        let api = api.clone();
        async move {
            let r = api.get("app").await?;
            let status = r.status.unwrap_or_default();
            let ready = find_condition(&status.conditions, READY)
                .map(|c| (c.status.clone(), c.message.clone()));
            let applied = status
                .last_applied_revision
                .as_deref()
                .is_some_and(|rev| rev.ends_with(sha));
            if applied && ready.as_ref().is_some_and(|(s, _)| s == "True") {
                return Ok(Some(()));
            }
            anyhow::bail!(
                "ready={ready:?} lastApplied={:?}",
                status.last_applied_revision
            )
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_push_to_rollout_ready() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "images-e2e").await;
    let registry = env.var("FERRY_REGISTRY");
    let repo_path = format!("{}/app", ns.name.trim_start_matches("ferry-test-"));
    let image = format!("{registry}/{repo_path}");
    push_empty_image(&env, &format!("{image}:1.0.0"), None);

    // The git repository with a marked Deployment.
    let repo = Repo::create(&env, &ns.name);
    let url = repo.url.clone();
    let first = repo.commit_files(
        &[("deploy/app.yaml", &deployment(&ns.name, &image))],
        "app at 1.0.0",
    );

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let secret: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-auth"}, "stringData": {"username": env.var("FERRY_GIT_USER"), "password": env.var("FERRY_GIT_PASSWORD")}})).expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    create::<GitSource>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource", "metadata": {"name": "repo"}, "spec": {"url": url, "ref": {"branch": "main"}, "interval": "1s", "timeout": "20s", "secretRef": {"name": "git-auth"}}})).await;
    create::<Release>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "Release", "metadata": {"name": "app"}, "spec": {"sourceRef": {"kind": "GitSource", "name": "repo"}, "path": "./deploy", "interval": "1m", "retryInterval": "2s", "prune": true, "wait": true, "timeout": "60s"}})).await;
    create::<ImageRepository>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository", "metadata": {"name": "app"}, "spec": {"image": image, "interval": "10m"}})).await;
    create::<ImagePolicy>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {"name": "app"}, "spec": {"imageRepositoryRef": {"name": "app"}, "policy": {"semver": {"range": "^1.0.0"}}}})).await;
    create::<ImageUpdate>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageUpdate", "metadata": {"name": "app"}, "spec": {
        "sourceRef": {"kind": "GitSource", "name": "repo"},
        "interval": "10m",
        "git": {"commit": {"author": {"name": "ferry-bot", "email": "bot@ferry.invalid"}}},
        "update": {"path": "./deploy"}
    }})).await;

    let cache = tempfile::tempdir().expect("cache");
    // The Release names no service account: it applies (and its GitSource's Secret is read) as
    // the namespace's `default` one, which a cluster admin grants the namespace's admin role.
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(client.clone(), &ns.name);
    let binding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "default-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns.name}],
    }))
    .expect("RoleBinding");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("grant the default service account admin");
    let mut options = AgentOptions::for_kubeconfig(env.kubeconfig(), cache.path().join("agent"));
    options.watch_namespaces = vec![ns.name.clone()];
    options.image_automation = true;
    let agent = Agent::start(options).await.expect("agent starts");
    let trigger = ScanTrigger::new(client.clone());

    release_ready_at(&client, &ns.name, &first, Duration::from_secs(120)).await;

    // The loop: push 1.1.0, announce it (as the webhook receiver does), follow it to Ready.
    crane(
        &env,
        &["tag", "--insecure", &format!("{image}:1.0.0"), "1.1.0"],
    );
    let started = Instant::now();
    trigger.trigger(&ns.name, "app").await.expect("trigger");
    let commit = wait_for("the image commit in git", Duration::from_secs(60), || {
        let head = repo.head();
        let first = first.clone();
        async move { Ok((head != first).then_some(head)) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let to_commit = started.elapsed();
    let sources: Api<GitSource> = Api::namespaced(client.clone(), &ns.name);
    wait_for(
        "the GitSource at the image commit",
        Duration::from_secs(60),
        || {
            let sources = sources.clone();
            let commit = commit.clone();
            async move {
                let gs = sources.get("repo").await?;
                let rev = gs.status.and_then(|s| s.revision).unwrap_or_default();
                Ok(rev.ends_with(&commit).then_some(()))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    let to_fetch = started.elapsed();
    release_ready_at(&client, &ns.name, &commit, Duration::from_secs(120)).await;
    let to_ready = started.elapsed();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let d = deployments.get("app").await.expect("deployment");
    let live_image = d
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(live_image, Some(format!("{image}:1.1.0")));
    let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
    assert!(available >= 1, "rolled out");
    println!(
        "LATENCY tag pushed -> commit in git: {} ms; -> GitSource fetched it: {} ms; -> Release Ready with the rollout: {} ms",
        to_commit.as_millis(),
        to_fetch.as_millis(),
        to_ready.as_millis()
    );
    agent.stop().await.expect("agent stops");
}
