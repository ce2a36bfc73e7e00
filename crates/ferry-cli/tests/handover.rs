//! One app through both drivers, with the same `ferry.yaml`: deployed by `ferry apply` (the CLI
//! binary, as a CI pipeline runs it), handed over to an agent Release (annotation
//! `ferry.dev/adopt-push-app`), and back to `ferry apply` (`--adopt-release NS/NAME`) — with no
//! object re-created (uids compared), nothing pruned that is still in git, and what left git
//! pruned by whichever driver owns the app at the time. A missing hand-over gives an error
//! saying what to do; `--adopt-release` refuses while the Release is still applying.
//!
//! Real parts: the `ferry` binary, the in-process agent, the testenv git server and API server.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_agent::{Agent, AgentOptions};
use ferry_api::{GitSource, Release};
use ferry_engine::ownership::{ANNOTATION_OWNER, Owner, ReleaseRef};
use ferry_testsupport::git::Repo;
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

const FERRY_YAML: &str = "renderer: plain\nsubstitute:\n  GREETING: hello\n";
const CONFIG: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  greeting: ${GREETING}\n";
const EXTRA: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-extra\ndata:\n  a: b\n";
const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: registry.example/web:1.0
"#;

/// `ferry` as CI runs it: in the checkout, with the cluster's kubeconfig, no $CI wait.
fn ferry(env: &TestEnv, dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(dir)
        .env("KUBECONFIG", env.kubeconfig())
        .env_remove("CI")
        .output()
        .expect("run ferry");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn uid_of_config(client: &Client, ns: &str, name: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    api.get_opt(name).await.expect("get").and_then(|o| o.uid())
}

/// uid and owner annotation of each of the app's objects that exists.
async fn snapshot(client: &Client, ns: &str) -> BTreeMap<String, (String, String)> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let mut out = BTreeMap::new();
    for name in ["web-config", "web-extra"] {
        if let Some(cm) = cms.get_opt(name).await.expect("get") {
            let owner = cm
                .annotations()
                .get(ANNOTATION_OWNER)
                .cloned()
                .unwrap_or_default();
            out.insert(
                format!("ConfigMap/{name}"),
                (cm.uid().unwrap_or_default(), owner),
            );
        }
    }
    if let Some(d) = deployments.get_opt("web").await.expect("get") {
        let owner = d
            .annotations()
            .get(ANNOTATION_OWNER)
            .cloned()
            .unwrap_or_default();
        out.insert(
            "Deployment/web".to_string(),
            (d.uid().unwrap_or_default(), owner),
        );
    }
    out
}

fn uids(snapshot: &BTreeMap<String, (String, String)>) -> BTreeMap<String, String> {
    snapshot
        .iter()
        .map(|(k, (uid, _))| (k.clone(), uid.clone()))
        .collect()
}

async fn wait_release(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Release) -> bool,
) -> Release {
    let api: Api<Release> = Api::namespaced(client.clone(), ns);
    let check = &check;
    wait_for(
        &format!("Release {ns}/{name}: {what}"),
        Duration::from_secs(120),
        || {
            let api = api.clone();
            async move {
                let r = api.get(name).await?;
                if check(&r) {
                    return Ok(Some(r));
                }
                anyhow::bail!("status: {:?}", r.status.map(|s| s.conditions))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn ready_message(r: &Release) -> (String, String, String) {
    ferry_api::common::find_condition(&r.status.clone().unwrap_or_default().conditions, "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_app_moves_from_push_to_pull_and_back_without_recreating_anything() {
    let env = TestEnv::get();
    let client = env.client().await;
    ferry_testsupport::install_crds(&client, &ferry_agent::crds::all(), "ferry-cli-tests").await;
    let ns = TestNamespace::create(&client, "handover").await;
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit(
        &[
            ("app/ferry.yaml", Some(FERRY_YAML)),
            ("app/config.yaml", Some(CONFIG)),
            ("app/extra.yaml", Some(EXTRA)),
            ("app/deployment.yaml", Some(DEPLOYMENT)),
        ],
        "web v1",
    );
    let work = repo.work.path();

    // 1. Push: the pipeline deploys the app.
    let (code, out) = ferry(
        &env,
        work,
        &[
            "apply",
            "app",
            "--app",
            "web",
            "-n",
            &ns.name,
            "--prune",
            "--no-wait",
        ],
    );
    assert_eq!(code, 0, "ferry apply: {out}");
    let pushed = snapshot(&client, &ns.name).await;
    assert_eq!(pushed.len(), 3, "{pushed:?}");
    let push_id = format!("{}/web", ns.name);
    assert!(
        pushed.values().all(|(_, owner)| *owner == push_id),
        "{pushed:?}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let config = cms.get("web-config").await.expect("config");
    assert_eq!(
        config
            .data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("hello"),
        "ferry.yaml's substitution"
    );

    // 2. Pull: a Release for the same path (the same ferry.yaml) in the same namespace.
    let cache = tempfile::tempdir().expect("cache");
    let mut options = AgentOptions::for_kubeconfig(env.kubeconfig(), cache.path().to_path_buf());
    options.watch_namespaces = vec![ns.name.clone()];
    let rb: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(client.clone(), &ns.name);
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "default-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns.name}],
    });
    rb.create(
        &PostParams::default(),
        &serde_json::from_value(binding).expect("binding"),
    )
    .await
    .expect("grant admin");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), &ns.name);
    let git_auth = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-auth"},
        "stringData": {"username": env.var("FERRY_GIT_USER"), "password": env.var("FERRY_GIT_PASSWORD")},
    });
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(git_auth).expect("secret"),
        )
        .await
        .expect("git secret");
    let sources: Api<GitSource> = Api::namespaced(client.clone(), &ns.name);
    let source = serde_json::json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource", "metadata": {"name": "repo"},
        "spec": {"url": repo.url, "ref": {"branch": "main"}, "interval": "1m", "timeout": "20s", "secretRef": {"name": "git-auth"}},
    });
    sources
        .create(
            &PostParams::default(),
            &serde_json::from_value(source).expect("source"),
        )
        .await
        .expect("GitSource");
    let agent = Agent::start(options).await.expect("agent starts");
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    // Without the hand-over annotation the Release is refused, and told how to take over.
    let release = serde_json::json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Release", "metadata": {"name": "web"},
        "spec": {"sourceRef": {"kind": "GitSource", "name": "repo"}, "path": "./app", "prune": true,
                 "interval": "1m", "retryInterval": "2s"},
    });
    releases
        .create(
            &PostParams::default(),
            &serde_json::from_value(release).expect("release"),
        )
        .await
        .expect("Release");
    let refused = wait_release(&client, &ns.name, "web", "refused", |r| {
        ready_message(r).1 == "ApplyFailed"
    })
    .await;
    let (_, _, message) = ready_message(&refused);
    assert!(
        message.contains("ferry.dev/adopt-push-app: web"),
        "says how to hand over: {message}"
    );
    assert_eq!(
        uids(&snapshot(&client, &ns.name).await),
        uids(&pushed),
        "nothing touched while refused"
    );
    let annotate =
        serde_json::json!({"metadata": {"annotations": {"ferry.dev/adopt-push-app": "web"}}});
    releases
        .patch("web", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .expect("annotate");
    let sha = first.clone();
    wait_release(&client, &ns.name, "web", "applied", |r| {
        let s = r.status.clone().unwrap_or_default();
        ready_message(r).0 == "True"
            && s.last_applied_revision
                .is_some_and(|rev| rev.ends_with(&sha))
    })
    .await;
    let pulled = snapshot(&client, &ns.name).await;
    assert_eq!(
        uids(&pulled),
        uids(&pushed),
        "no object re-created by the hand-over"
    );
    let release_owner = Owner::release(
        &ReleaseRef {
            namespace: ns.name.clone(),
            name: "web".into(),
        },
        &ns.name,
    )
    .expect("owner");
    assert!(
        pulled
            .values()
            .all(|(_, owner)| *owner == release_owner.id()),
        "{pulled:?}"
    );
    assert!(
        cms.get_opt("ferry-inventory-web")
            .await
            .expect("get")
            .is_none(),
        "the push app's inventory is gone"
    );
    assert!(
        cms.get_opt(&release_owner.inventory_name())
            .await
            .expect("get")
            .is_some()
    );

    // The Release owns the app now: what leaves git is pruned by it, the rest is untouched.
    let second = repo.commit(&[("app/extra.yaml", None)], "drop web-extra");
    wait_release(&client, &ns.name, "web", "second commit applied", |r| {
        let s = r.status.clone().unwrap_or_default();
        s.last_applied_revision
            .is_some_and(|rev| rev.ends_with(&second))
    })
    .await;
    let after_prune = uids(&snapshot(&client, &ns.name).await);
    let mut expected = uids(&pushed);
    expected.remove("ConfigMap/web-extra");
    assert_eq!(after_prune, expected, "only web-extra pruned");

    // 3. Back to push. Without --adopt-release the pipeline is refused, and told how.
    let (code, out) = ferry(
        &env,
        work,
        &[
            "apply",
            "app",
            "--app",
            "web",
            "-n",
            &ns.name,
            "--prune",
            "--no-wait",
        ],
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&format!("--adopt-release {}/web", ns.name)),
        "says how to take over: {out}"
    );
    // While the Release still applies, --adopt-release refuses before touching anything.
    let adopt = format!("{}/web", ns.name);
    let (code, out) = ferry(
        &env,
        work,
        &[
            "apply",
            "app",
            "--app",
            "web",
            "-n",
            &ns.name,
            "--prune",
            "--no-wait",
            "--adopt-release",
            &adopt,
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("still exists and is not suspended"), "{out}");
    assert!(
        snapshot(&client, &ns.name)
            .await
            .values()
            .all(|(_, owner)| *owner == release_owner.id())
    );
    // The Release lets go: deletionPolicy Orphan, deleted (its finalizer keeps the objects).
    let orphan = serde_json::json!({"spec": {"deletionPolicy": "Orphan"}});
    releases
        .patch("web", &PatchParams::default(), &Patch::Merge(&orphan))
        .await
        .expect("orphan");
    releases
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete Release");
    wait_for("the Release gone", Duration::from_secs(60), || {
        let releases = releases.clone();
        async move { Ok(releases.get_opt("web").await?.is_none().then_some(())) }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    agent.stop().await.expect("agent stops");
    assert_eq!(
        uids(&snapshot(&client, &ns.name).await),
        expected,
        "orphaned, not deleted"
    );
    let (code, out) = ferry(
        &env,
        work,
        &[
            "apply",
            "app",
            "--app",
            "web",
            "-n",
            &ns.name,
            "--prune",
            "--no-wait",
            "--adopt-release",
            &adopt,
        ],
    );
    assert_eq!(code, 0, "ferry apply --adopt-release: {out}");
    let back = snapshot(&client, &ns.name).await;
    assert_eq!(
        uids(&back),
        expected,
        "no object re-created by the hand-back"
    );
    assert!(
        back.values().all(|(_, owner)| *owner == push_id),
        "{back:?}"
    );
    assert!(
        cms.get_opt("ferry-inventory-web")
            .await
            .expect("get")
            .is_some()
    );
    assert!(
        cms.get_opt(&release_owner.inventory_name())
            .await
            .expect("get")
            .is_none(),
        "the Release's inventory is gone"
    );
    // The push app owns it again: its next run (no flag) prunes what left git.
    repo.commit(&[("app/deployment.yaml", None)], "drop the Deployment");
    let (code, out) = ferry(
        &env,
        work,
        &[
            "apply",
            "app",
            "--app",
            "web",
            "-n",
            &ns.name,
            "--prune",
            "--no-wait",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let last = uids(&snapshot(&client, &ns.name).await);
    assert_eq!(
        last.keys().collect::<Vec<_>>(),
        ["ConfigMap/web-config"],
        "{last:?}"
    );
    assert_eq!(
        uid_of_config(&client, &ns.name, "web-config").await,
        expected.get("ConfigMap/web-config").cloned(),
        "the ConfigMap kept its uid through push, pull and push"
    );
}
