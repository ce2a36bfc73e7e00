//! The image automation controllers against the real testenv: real registry, real git server
//! (smart HTTP), real API server, the controllers started as users start them (an in-process
//! agent with `--image-automation`). Loop: tag pushed → scan (triggered as a webhook would) →
//! policy → commit pushed to git, plus the faults: bad credentials, no matching tag, malformed
//! markers, a manual rollback, and a push refused by the server.

mod common;
// The registry and git fixtures the image tests share with ferry-images' own tests.
#[path = "../../ferry-images/tests/common/mod.rs"]
mod images_common;

use std::process::Command;
use std::time::{Duration, Instant};

use ferry_agent::Agent;
use ferry_agent::controllers::image_automation::ScanTrigger;
use ferry_api::GitSource;
use ferry_api::common::{READY, find_condition};
use ferry_api::images::{ImagePolicy, ImageRepository, ImageUpdate};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use images_common::*;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::json;

async fn install_crds(client: &Client) {
    common::install_crds(client).await;
}

async fn create<K>(client: &Client, ns: &str, value: serde_json::Value) -> K
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let obj: K = serde_json::from_value(value).expect("object JSON");
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create: {e}"))
}

async fn secret(client: &Client, ns: &str, name: &str, data: serde_json::Value) {
    create::<Secret>(client, ns, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data})).await;
}

/// Wait until `check` on the object's conditions/status holds; the error shows the last status.
async fn wait_status<K, F>(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    check: F,
) -> K
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    F: Fn(&serde_json::Value) -> bool,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let result = wait_for(what, timeout, || {
        let api = api.clone();
        let check = &check;
        async move {
            let obj = api.get(name).await?;
            let value = serde_json::to_value(&obj)?;
            if check(&value) {
                Ok(Some(obj))
            } else {
                anyhow::bail!("status: {}", value["status"])
            }
        }
    })
    .await;
    result.unwrap_or_else(|e| panic!("{e:#}"))
}

fn condition<'a>(value: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    value["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn ready_is(value: &serde_json::Value, status: &str, reason: &str) -> bool {
    condition(value, READY).is_some_and(|c| c["status"] == status && c["reason"] == reason)
}

async fn wait_for_head_change(repo: &Repo, from: &str, timeout: Duration) -> String {
    let from = from.to_string();
    wait_for("a new commit on main", timeout, || {
        let head = repo.head();
        let from = from.clone();
        async move { Ok((head != from).then_some(head)) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

async fn request_reconcile<K>(client: &Client, ns: &str, name: &str)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"ferry.dev/reconcile-requested-at": now}}}),
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("annotate: {e}"));
}

/// An agent with `--image-automation` watching only `ns`, whose `default` service account (the
/// identity that reads the namespace's Secrets) a cluster admin granted its namespace, and the
/// trigger a registry webhook uses.
async fn start(env: &TestEnv, ns: &str) -> (ScanTrigger, Agent, tempfile::TempDir) {
    let (agent, cache) = common::start_agent(env, &[ns], |o| o.image_automation = true).await;
    (ScanTrigger::new(env.client().await), agent, cache)
}

/// Wait for an Event about `name` with `reason` whose note satisfies `check`; returns the notes.
async fn wait_for_event(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    check: impl Fn(&str) -> bool,
) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let check = &check;
    wait_for(
        &format!("a {reason} event for {name}"),
        Duration::from_secs(30),
        || {
            let events = events.clone();
            async move {
                let notes: Vec<String> = events
                    .list(&kube::api::ListParams::default())
                    .await?
                    .items
                    .into_iter()
                    .filter(|e| {
                        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                            && e.reason.as_deref() == Some(reason)
                    })
                    .filter_map(|e| e.note)
                    .collect();
                Ok(notes.iter().any(|n| check(n)).then_some(notes))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn deploy_yaml(ns: &str, image: &str) -> String {
    format!(
        "# the app, managed by ferry image automation\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app   # keep me\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: {image}:1.0.0 # {{\"$imagepolicy\": \"{ns}:app\"}}\n          env:\n            - name: BROKEN\n              value: \"x\" # {{\"$imagepolicy\": \"{ns}:app:bogus\"}}\n"
    )
}

fn values_yaml(ns: &str) -> String {
    format!(
        "image:\n  repository: somewhere/else # not managed\n  tag: '1.0.0' # {{\"$imagepolicy\": \"{ns}:app:tag\"}}\n  pullPolicy: IfNotPresent\n"
    )
}

const KUSTOMIZATION: &str = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - app.yaml\nimages:\n  - name: app\n    newTag: 1.0.0   # pinned\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_to_commit_loop_with_markers_kustomize_and_manual_rollback() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "images-loop").await;
    let registry = env.var("FERRY_REGISTRY");
    let image = format!("{registry}/{}/app", unique("loop"));
    crane_push(&env, &format!("{image}:1.0.0"), None);
    put_tags(
        &registry,
        image.split_once('/').map(|x| x.1).unwrap_or_default(),
        "1.0.0",
        &[
            "1.1.0".into(),
            "2.0.0-rc.1".into(),
            "main-5-abc1234".into(),
            "1.1.0.sig".into(),
        ],
        None,
    )
    .await;

    let repo = Repo::create(&env, &ns.name);
    let app0 = deploy_yaml(&ns.name, &image);
    let values0 = values_yaml(&ns.name);
    let first = repo.commit(
        &[
            ("deploy/app.yaml", app0.as_str()),
            ("deploy/values.yaml", values0.as_str()),
            ("deploy/kustomization.yaml", KUSTOMIZATION),
            ("README.md", "not yaml\n"),
        ],
        "initial",
    );
    secret(
        &client,
        &ns.name,
        "git-auth",
        json!({"username": env.var("FERRY_GIT_USER"), "password": env.var("FERRY_GIT_PASSWORD")}),
    )
    .await;
    create::<GitSource>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource", "metadata": {"name": "repo"}, "spec": {"url": repo.url, "secretRef": {"name": "git-auth"}}})).await;
    create::<ImageRepository>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository", "metadata": {"name": "app"}, "spec": {"image": image, "interval": "10m"}})).await;
    create::<ImagePolicy>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {"name": "app"}, "spec": {"imageRepositoryRef": {"name": "app"}, "policy": {"semver": {"range": ">=1.0.0 <2.0.0"}}}})).await;
    create::<ImageUpdate>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageUpdate", "metadata": {"name": "auto"}, "spec": {
        "sourceRef": {"kind": "GitSource", "name": "repo"},
        "interval": "10m",
        "git": {"commit": {"author": {"name": "ferry-bot", "email": "bot@ferry.invalid"}}},
        "update": {"path": "./deploy", "kustomizeImages": [{"name": "app", "policy": {"name": "app"}}]}
    }})).await;
    let (trigger, agent, _cache) = start(&env, &ns.name).await;

    // First run: 1.1.0 (the .sig tag is excluded by default, the pre-release is outside the range).
    let repo_obj: ImageRepository = wait_status(
        &client,
        &ns.name,
        "app",
        "ImageRepository scanned",
        Duration::from_secs(60),
        |v| ready_is(v, "True", "Succeeded"),
    )
    .await;
    assert_eq!(
        repo_obj
            .status
            .and_then(|s| s.last_scan_result)
            .map(|r| r.tag_count),
        Some(4)
    );
    let second = wait_for_head_change(&repo, &first, Duration::from_secs(90)).await;
    let app1 = repo.file("deploy/app.yaml");
    assert_eq!(
        app1,
        app0.replace(":1.0.0 #", ":1.1.0 #"),
        "only the marked value changes"
    );
    assert_eq!(
        repo.file("deploy/values.yaml"),
        values0.replace("'1.0.0'", "'1.1.0'")
    );
    // The entry gets the tag and, since the image is not called `app` in the registry, newName.
    assert_eq!(
        repo.file("deploy/kustomization.yaml"),
        KUSTOMIZATION.replace(
            "newTag: 1.0.0   # pinned\n",
            &format!("newTag: 1.1.0   # pinned\n    newName: {image}\n")
        )
    );
    let message = repo.log_message(&second);
    assert!(
        message.starts_with("ferry-bot <bot@ferry.invalid>"),
        "{message}"
    );
    assert!(
        message.contains(&format!("{image}:1.0.0 -> {image}:1.1.0")),
        "{message}"
    );
    let diff = repo.diff(&second);
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert_eq!(
        changed.len(),
        7,
        "three values changed (one line each) and newName added: {diff}"
    );

    // The malformed marker is reported with file and line; the others were still processed.
    let update: ImageUpdate = wait_status(
        &client,
        &ns.name,
        "auto",
        "ImageUpdate reports the malformed marker and the pushed commit",
        Duration::from_secs(30),
        // Both in one status: the first pass (before the policy had an image) already
        // reports the malformed marker, so waiting on the marker alone races the push.
        |v| {
            condition(v, "MarkersValid").is_some_and(|c| c["status"] == "False")
                && v["status"]["lastPushCommit"].as_str() == Some(second.as_str())
        },
    )
    .await;
    let status = update.status.unwrap_or_default();
    let markers = find_condition(&status.conditions, "MarkersValid")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        markers.contains("deploy/app.yaml:14") && markers.contains("bogus"),
        "{markers}"
    );
    assert_eq!(status.last_push_commit.as_deref(), Some(second.as_str()));
    let policy: ImagePolicy = Api::namespaced(client.clone(), &ns.name)
        .get("app")
        .await
        .expect("policy");
    assert_eq!(
        policy.status.and_then(|s| s.latest_image),
        Some(format!("{image}:1.1.0"))
    );

    // A new tag, announced as a registry webhook would (immediate scan): measure tag → commit.
    put_tags(
        &registry,
        image.split_once('/').map(|x| x.1).unwrap_or_default(),
        "1.0.0",
        &["1.2.0".into()],
        None,
    )
    .await;
    let pushed_at = Instant::now();
    trigger
        .trigger(&ns.name, "app")
        .await
        .expect("trigger scan");
    let third = wait_for_head_change(&repo, &second, Duration::from_secs(60)).await;
    let latency = pushed_at.elapsed();
    println!(
        "LATENCY tag pushed -> commit in git: {} ms",
        latency.as_millis()
    );
    assert!(
        repo.file("deploy/app.yaml")
            .contains(&format!("{image}:1.2.0 #"))
    );
    let policy: ImagePolicy = Api::namespaced(client.clone(), &ns.name)
        .get("app")
        .await
        .expect("policy");
    let pstatus = policy.status.unwrap_or_default();
    assert_eq!(pstatus.previous_image, Some(format!("{image}:1.1.0")));
    assert!(pstatus.last_change_time.is_some());

    // A human rolls app.yaml back to 1.1.0: the automation leaves it (and says so).
    let rollback = repo.commit(&[("deploy/app.yaml", &app1)], "roll back app to 1.1.0");
    request_reconcile::<ImageUpdate>(&client, &ns.name, "auto").await;
    let update: ImageUpdate = wait_status(
        &client,
        &ns.name,
        "auto",
        "ImageUpdate keeps the manual change",
        Duration::from_secs(60),
        |v| {
            condition(v, READY)
                .and_then(|c| c["message"].as_str())
                .is_some_and(|m| m.contains("kept 1 manual change"))
        },
    )
    .await;
    assert_eq!(repo.head(), rollback, "no commit undoes the rollback");
    assert!(update.status.is_some());

    // When the policy moves on (1.3.0), the new image is written again.
    put_tags(
        &registry,
        image.split_once('/').map(|x| x.1).unwrap_or_default(),
        "1.0.0",
        &["1.3.0".into()],
        None,
    )
    .await;
    // This time through the webhook path: a signed generic registry webhook is verified,
    // parsed, and routed to the ImageRepositories of that image.
    let body = serde_json::to_vec(&json!({"image": format!("{image}:1.3.0")})).expect("body");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"hook-secret");
    let signature = format!(
        "sha256={}",
        hex::encode(aws_lc_rs::hmac::sign(&key, &body).as_ref())
    );
    ferry_images::webhook::verify_hmac(b"hook-secret", &body, Some(&signature)).expect("signature");
    let events = ferry_images::webhook::parse_generic(&body).expect("payload");
    let asked = trigger
        .trigger_images(Some(&ns.name), &events)
        .await
        .expect("route webhook");
    assert_eq!(asked, vec![format!("{}/app", ns.name)]);
    let _fourth = wait_for_head_change(&repo, &rollback, Duration::from_secs(60)).await;
    assert!(
        repo.file("deploy/app.yaml")
            .contains(&format!("{image}:1.3.0 #"))
    );
    let _ = third;

    // The image controllers report like the agent's other controllers: their reconciles in the
    // agent's metrics, an Event when Ready changes (here: the push).
    let metrics = agent.metrics.encode();
    for kind in ["ImageRepository", "ImagePolicy", "ImageUpdate"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("ferry_reconcile_total{")
                    && l.contains(&format!("kind=\"{kind}\""))
                    && l.contains(&format!("namespace=\"{}\"", ns.name))
                    && l.contains("result=\"success\"")),
            "{kind}: {metrics}"
        );
    }
    let pushes = wait_for_event(&client, &ns.name, "auto", "Pushed", |n| {
        n.starts_with("pushed ")
    })
    .await;
    assert!(
        pushes
            .iter()
            .all(|n| !n.contains(&env.var("FERRY_GIT_PASSWORD")))
    );
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faults_are_reported_and_nothing_is_committed() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "images-faults").await;
    let registry = env.var("FERRY_REGISTRY");
    let auth_registry = env.var("FERRY_REGISTRY_AUTH");
    let image = format!("{registry}/{}/app", unique("faults"));
    let digest = crane_push(&env, &format!("{image}:1.0.0"), None);

    // A repository whose server refuses our pushes (a pre-receive hook, as a protected branch).
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit(
        &[(
            "app.yaml",
            &format!(
                "image: {image}:0.9.0 # {{\"$imagepolicy\": \"{}:app\"}}\n",
                ns.name
            ),
        )],
        "initial",
    );
    let hook = repo.bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'permission denied: ferry-bot may not push to main' >&2\nexit 1\n",
    )
    .expect("hook");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    secret(
        &client,
        &ns.name,
        "git-auth",
        json!({"username": env.var("FERRY_GIT_USER"), "password": env.var("FERRY_GIT_PASSWORD")}),
    )
    .await;
    create::<GitSource>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource", "metadata": {"name": "repo"}, "spec": {"url": repo.url, "secretRef": {"name": "git-auth"}}})).await;
    create::<ImageRepository>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository", "metadata": {"name": "app"}, "spec": {"image": image, "interval": "10m"}})).await;
    // Credentials missing for the htpasswd registry.
    create::<ImageRepository>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository", "metadata": {"name": "private"}, "spec": {"image": format!("{auth_registry}/secret/app"), "interval": "10m"}})).await;
    create::<ImagePolicy>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {"name": "app"}, "spec": {"imageRepositoryRef": {"name": "app"}, "policy": {"semver": {"range": "^1.0"}}}})).await;
    create::<ImagePolicy>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {"name": "future"}, "spec": {"imageRepositoryRef": {"name": "app"}, "policy": {"semver": {"range": ">=5.0"}}}})).await;
    create::<ImagePolicy>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {"name": "pinned"}, "spec": {"imageRepositoryRef": {"name": "app"}, "policy": {"semver": {"range": "^1.0"}}, "digestReflectionPolicy": "Always"}})).await;
    create::<ImagePolicy>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {"name": "badregex"}, "spec": {"imageRepositoryRef": {"name": "app"}, "policy": {"numerical": {}}, "filterTags": {"pattern": "main-(", "extract": "$ts"}}})).await;
    create::<ImageUpdate>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageUpdate", "metadata": {"name": "auto"}, "spec": {
        "sourceRef": {"kind": "GitSource", "name": "repo"},
        "git": {"commit": {"author": {"name": "ferry-bot", "email": "bot@ferry.invalid"}}}
    }})).await;
    let (_trigger, agent, cache) = start(&env, &ns.name).await;

    let private: ImageRepository = wait_status(
        &client,
        &ns.name,
        "private",
        "401 reported",
        Duration::from_secs(60),
        |v| ready_is(v, "False", "Unauthorized"),
    )
    .await;
    let message = private
        .status
        .and_then(|s| find_condition(&s.conditions, READY).map(|c| c.message.clone()))
        .unwrap_or_default();
    assert!(
        message.contains("spec.secretRef") && message.contains(&auth_registry),
        "{message}"
    );
    // The same message as a Warning Event, as the agent's other controllers publish failures.
    wait_for_event(&client, &ns.name, "private", "Unauthorized", |n| {
        n == message
    })
    .await;

    // Digest pinning: the HEAD on the manifest gives the digest crane pushed.
    let pinned: ImagePolicy = wait_status(
        &client,
        &ns.name,
        "pinned",
        "pinned digest",
        Duration::from_secs(60),
        |v| ready_is(v, "True", "Succeeded"),
    )
    .await;
    assert_eq!(
        pinned.status.and_then(|s| s.latest_image),
        Some(format!("{image}:1.0.0@{digest}"))
    );
    let future: ImagePolicy = wait_status(
        &client,
        &ns.name,
        "future",
        "no matching tag",
        Duration::from_secs(60),
        |v| ready_is(v, "False", "NoMatchingTag"),
    )
    .await;
    assert!(future.status.and_then(|s| s.latest_image).is_none());
    let bad: ImagePolicy = wait_status(
        &client,
        &ns.name,
        "badregex",
        "invalid filter",
        Duration::from_secs(60),
        |v| ready_is(v, "False", "InvalidPolicy"),
    )
    .await;
    let message = bad
        .status
        .and_then(|s| find_condition(&s.conditions, READY).map(|c| c.message.clone()))
        .unwrap_or_default();
    assert!(
        message.contains("spec.filterTags") && message.contains("main-("),
        "{message}"
    );

    // The push is refused: clear condition, upstream untouched, the commit kept locally.
    let update: ImageUpdate = wait_status(
        &client,
        &ns.name,
        "auto",
        "push refused",
        Duration::from_secs(90),
        |v| ready_is(v, "False", "PushRefused"),
    )
    .await;
    let message = update
        .status
        .and_then(|s| find_condition(&s.conditions, READY).map(|c| c.message.clone()))
        .unwrap_or_default();
    assert!(
        message.contains("ferry-pending") && message.contains("permission denied"),
        "{message}"
    );
    assert!(
        !message.contains(&env.var("FERRY_GIT_PASSWORD")),
        "no credentials in status"
    );
    assert_eq!(repo.head(), first, "nothing reached the server");
    let clone = cache.path().join("images").join(&ns.name).join("auto");
    let pending = git(&clone, &["show", "ferry-pending:app.yaml"]);
    assert!(pending.contains(&format!("{image}:1.0.0")), "{pending}");

    // Permission granted: the next run pushes; a run after that has nothing to commit.
    std::fs::remove_file(&hook).expect("remove hook");
    request_reconcile::<ImageUpdate>(&client, &ns.name, "auto").await;
    let pushed = wait_for_head_change(&repo, &first, Duration::from_secs(60)).await;
    assert!(repo.file("app.yaml").contains(&format!("{image}:1.0.0 #")));
    wait_status::<ImageUpdate, _>(
        &client,
        &ns.name,
        "auto",
        "pushed status",
        Duration::from_secs(30),
        |v| ready_is(v, "True", "Succeeded"),
    )
    .await;
    request_reconcile::<ImageUpdate>(&client, &ns.name, "auto").await;
    wait_status::<ImageUpdate, _>(
        &client,
        &ns.name,
        "auto",
        "no-change run",
        Duration::from_secs(60),
        |v| {
            condition(v, READY)
                .and_then(|c| c["message"].as_str())
                .is_some_and(|m| m.starts_with("no changes"))
        },
    )
    .await;
    assert_eq!(repo.head(), pushed, "no commit when nothing changed");
    agent.stop().await.expect("agent stops");
}

/// Two agents (separate clones; both lead, as without leader election) and three ImageUpdates
/// on one repository all react to the same new tag at once: every update lands, none is lost to
/// a concurrent push (non-fast-forward pushes are re-applied on the new upstream).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_automations_on_one_repository_do_not_clobber() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "images-race").await;
    let registry = env.var("FERRY_REGISTRY");
    let image = format!("{registry}/{}/app", unique("race"));
    let path = image
        .split_once('/')
        .map(|x| x.1)
        .unwrap_or_default()
        .to_string();
    crane_push(&env, &format!("{image}:1.0.0"), None);
    let repo = Repo::create(&env, &ns.name);
    let file = |team: &str| {
        format!(
            "# team {team}\nimage: {image}:1.0.0 # {{\"$imagepolicy\": \"{}:{team}\"}}\n",
            ns.name
        )
    };
    let teams = ["a", "b", "c"];
    let files: Vec<(String, String)> = teams
        .iter()
        .map(|t| (format!("{t}/app.yaml"), file(t)))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    repo.commit(&refs, "initial");
    secret(
        &client,
        &ns.name,
        "git-auth",
        json!({"username": env.var("FERRY_GIT_USER"), "password": env.var("FERRY_GIT_PASSWORD")}),
    )
    .await;
    create::<GitSource>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource", "metadata": {"name": "repo"}, "spec": {"url": repo.url, "secretRef": {"name": "git-auth"}}})).await;
    create::<ImageRepository>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageRepository", "metadata": {"name": "app"}, "spec": {"image": image, "interval": "10m"}})).await;
    for team in teams {
        create::<ImagePolicy>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImagePolicy", "metadata": {"name": team}, "spec": {"imageRepositoryRef": {"name": "app"}, "policy": {"semver": {"range": "^1"}}}})).await;
        create::<ImageUpdate>(&client, &ns.name, json!({"apiVersion": "ferry.dev/v1alpha1", "kind": "ImageUpdate", "metadata": {"name": format!("team-{team}")}, "spec": {
            "sourceRef": {"kind": "GitSource", "name": "repo"},
            "interval": "10m",
            "git": {"commit": {"author": {"name": format!("bot-{team}"), "email": "bot@ferry.invalid"}}},
            "update": {"path": team}
        }})).await;
    }
    let (trigger, first_agent, _c1) = start(&env, &ns.name).await;
    let (_t2, second_agent, _c2) = start(&env, &ns.name).await;
    // Everyone is at 1.0.0 (no commits needed); then 1.1.0 appears.
    for team in teams {
        wait_status::<ImageUpdate, _>(
            &client,
            &ns.name,
            &format!("team-{team}"),
            "initial run",
            Duration::from_secs(60),
            |v| ready_is(v, "True", "Succeeded"),
        )
        .await;
    }
    put_tags(&registry, &path, "1.0.0", &["1.1.0".into()], None).await;
    trigger.trigger(&ns.name, "app").await.expect("trigger");
    wait_for("all three files at 1.1.0", Duration::from_secs(90), || {
        let done = teams.iter().all(|t| {
            let out = Command::new("git")
                .args(["show", &format!("main:{t}/app.yaml")])
                .current_dir(&repo.bare)
                .output();
            out.map(|o| String::from_utf8_lossy(&o.stdout).contains(":1.1.0 #"))
                .unwrap_or(false)
        });
        async move { Ok(done.then_some(())) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    // Each file changed exactly once, each by a linear commit (no merge, nothing reverted).
    let log = git(&repo.bare, &["log", "--format=%H %P", "main"]);
    assert!(
        log.lines().all(|l| l.split_whitespace().count() <= 2),
        "linear history: {log}"
    );
    for team in teams {
        let touched = git(
            &repo.bare,
            &[
                "log",
                "--format=%H",
                "main",
                "--",
                &format!("{team}/app.yaml"),
            ],
        );
        assert_eq!(
            touched.lines().count(),
            2,
            "{team}: initial + one update\n{touched}"
        );
        assert_eq!(
            repo.file(&format!("{team}/app.yaml")),
            file(team).replace(":1.0.0 #", ":1.1.0 #")
        );
    }
    first_agent.stop().await.expect("first agent stops");
    second_agent.stop().await.expect("second agent stops");
}
