//! Attack tests for Release identity and garbage collection through the real agent (issue 11,
//! items 6 and 16), against the real testenv:
//!
//! - Releases `web.v1` and `web-v1` in one namespace (the pre-upgrade encoding gave both the app
//!   `web-v1`, one inventory, and each pruned the other's objects) keep their own objects when one
//!   of them drops objects.
//! - A Release whose namespace is deleted after its tenant's RoleBinding went first finishes its
//!   finalizer without trying to delete objects there (a delete would be refused and the
//!   finalizer would hold the namespace in Terminating forever).

mod common;

use std::time::Duration;

use common::*;
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams};

fn owner_of(cm: &ConfigMap) -> Option<String> {
    cm.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("ferry.dev/owner"))
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn releases_web_dot_v1_and_web_dash_v1_keep_their_own_objects() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "idn-agent").await;
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit(
        &[
            ("dot/a.yaml", Some(&configmap_yaml("dot-a", "1"))),
            ("dot/b.yaml", Some(&configmap_yaml("dot-b", "1"))),
            ("dash/a.yaml", Some(&configmap_yaml("dash-a", "1"))),
        ],
        "first",
    );
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1s"),
    )
    .await;
    for (name, path) in [("web.v1", "./dot"), ("web-v1", "./dash")] {
        create::<Release>(
            &client,
            &ns.name,
            release(name, "repo", path, serde_json::json!({})),
        )
        .await;
    }
    for name in ["web.v1", "web-v1"] {
        wait_release_applied(&client, &ns.name, name, &first, Duration::from_secs(90)).await;
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    for name in ["dot-a", "dot-b", "dash-a"] {
        assert!(
            cms.get_opt(name).await.expect("get").is_some(),
            "{name} was pruned by the other Release"
        );
    }
    // Each object names its exact Release.
    let dot = owner_of(&cms.get("dot-a").await.expect("dot-a"));
    let dash = owner_of(&cms.get("dash-a").await.expect("dash-a"));
    assert_eq!(dot, Some(format!("{0}/release/{0}/web.v1", ns.name)));
    assert_eq!(dash, Some(format!("{0}/release/{0}/web-v1", ns.name)));

    // `web.v1` drops an object: only its own object goes, `web-v1`'s stays.
    let second = repo.commit(&[("dot/b.yaml", None)], "drop dot-b");
    for name in ["web.v1", "web-v1"] {
        wait_release_applied(&client, &ns.name, name, &second, Duration::from_secs(90)).await;
    }
    assert!(cms.get_opt("dot-b").await.expect("get").is_none());
    assert!(cms.get_opt("dot-a").await.expect("get").is_some());
    assert!(
        cms.get_opt("dash-a").await.expect("get").is_some(),
        "Release web.v1 pruned web-v1's object"
    );

    // Deleting `web-v1` deletes its objects only.
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    releases
        .delete("web-v1", &DeleteParams::default())
        .await
        .expect("delete Release");
    wait_for("Release web-v1 gone", Duration::from_secs(60), || {
        let releases = releases.clone();
        async move { Ok(releases.get_opt("web-v1").await?.is_none().then_some(())) }
    })
    .await
    .expect("finalizer done");
    assert!(cms.get_opt("dash-a").await.expect("get").is_none());
    assert!(cms.get_opt("dot-a").await.expect("get").is_some());
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_in_a_terminating_namespace_finishes_its_finalizer() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "idn-term").await;
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit(
        &[("app/a.yaml", Some(&configmap_yaml("tenant-cm", "1")))],
        "first",
    );
    // The tenant: a service account with `admin` in its namespace, and nothing else.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    sas.create(
        &Default::default(),
        &serde_json::from_value(serde_json::json!({"metadata": {"name": "tenant"}})).expect("sa"),
    )
    .await
    .expect("create sa");
    grant_admin(&client, &ns.name, "tenant").await;
    // (`start_agent` also grants the namespace's `default` account, which reads the GitSource's
    // credentials.)
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
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
        release(
            "app",
            "repo",
            "./app",
            serde_json::json!({"serviceAccountName": "tenant"}),
        ),
    )
    .await;
    wait_release_applied(&client, &ns.name, "app", &first, Duration::from_secs(90)).await;

    // The namespace goes away, its RoleBinding first: the tenant can no longer read or delete
    // anything there, and the Release's finalizer must not wait for that.
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns.name);
    for binding in ["tenant-admin", "default-admin"] {
        bindings
            .delete(binding, &DeleteParams::default())
            .await
            .expect("delete RoleBinding");
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&ns.name, &DeleteParams::background())
        .await
        .expect("delete namespace");
    let name = ns.name.clone();
    wait_for(
        "namespace deleted (Release finalizer finished)",
        Duration::from_secs(120),
        || {
            let namespaces = namespaces.clone();
            let releases: Api<Release> = Api::namespaced(client.clone(), &name);
            let name = name.clone();
            async move {
                if namespaces.get_opt(&name).await?.is_none() {
                    return Ok(Some(()));
                }
                let finalizers = releases
                    .get_opt("app")
                    .await
                    .ok()
                    .flatten()
                    .map(|r| r.metadata.finalizers.unwrap_or_default());
                anyhow::bail!("namespace still there; Release finalizers: {finalizers:?}")
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    agent.stop().await.expect("agent stops");
}

/// What ferry before injective identities wrote for Release `web.v1` in `ns` (app `web-v1`):
/// objects labelled `ferry.dev/app=web-v1` and annotated `ferry.dev/owner=<ns>/web-v1`, and the
/// inventory `ferry-inventory-web-v1` without a stored owner, its source `<git URL>//<path>`.
async fn write_pre_upgrade_release(client: &kube::Client, ns: &str, url: &str, objects: &[&str]) {
    use kube::api::{Patch, PatchParams};
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    for name in objects {
        let cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "labels": {"ferry.dev/app": "web-v1"},
                "annotations": {"ferry.dev/owner": format!("{ns}/web-v1")},
            },
            "data": {"value": "old"},
        });
        api.patch(
            name,
            &PatchParams::apply("ferry").force(),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap_or_else(|e| panic!("old object {name}: {e}"));
    }
    let entries: Vec<serde_json::Value> = objects
        .iter()
        .map(|name| serde_json::json!({"apiVersion": "v1", "group": "", "kind": "ConfigMap", "namespace": ns, "name": name}))
        .collect();
    let text = serde_json::json!({
        "app": "web-v1", "source": format!("{url}//./app"),
        "appliedAt": "2026-01-01T00:00:00Z", "objects": entries,
    })
    .to_string();
    let inv = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": "ferry-inventory-web-v1",
            "labels": {"ferry.dev/inventory": "web-v1", "app.kubernetes.io/managed-by": "ferry"},
        },
        "data": {"inventory.json": text},
    });
    api.patch(
        "ferry-inventory-web-v1",
        &PatchParams::apply("ferry").force(),
        &Patch::Apply(&inv),
    )
    .await
    .expect("old inventory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_adopts_a_pre_upgrade_release_inventory_and_prunes_correctly() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "idn-upgrade").await;
    let repo = Repo::create(&env, &ns.name);
    // The previous version applied `keep` and `gone`; `gone` has left the source since.
    write_pre_upgrade_release(&client, &ns.name, &repo.url, &["keep", "gone"]).await;
    let first = repo.commit(
        &[("app/keep.yaml", Some(&configmap_yaml("keep", "new")))],
        "first",
    );
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
        release("web.v1", "repo", "./app", serde_json::json!({})),
    )
    .await;
    // The previous version had applied this Release: its status says so (the agent looks for
    // a pre-upgrade inventory only for a Release that had been applied before).
    Api::<Release>::namespaced(client.clone(), &ns.name)
        .patch_status(
            "web.v1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({
                "status": {"lastAppliedRevision": "main@sha1:0000000000000000000000000000000000000000"}
            })),
        )
        .await
        .expect("pre-upgrade status");
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    wait_release_applied(&client, &ns.name, "web.v1", &first, Duration::from_secs(90)).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let keep = cms.get("keep").await.expect("keep");
    assert_eq!(
        owner_of(&keep),
        Some(format!("{0}/release/{0}/web.v1", ns.name)),
        "re-owned under the new identity"
    );
    assert!(
        cms.get_opt("gone").await.expect("get").is_none(),
        "what left the source is pruned"
    );
    assert!(
        cms.get_opt("ferry-inventory-web-v1")
            .await
            .expect("get")
            .is_none(),
        "the pre-upgrade inventory is removed"
    );
    // From now on it prunes under the new identity.
    let second = repo.commit(
        &[
            ("app/keep.yaml", None),
            ("app/next.yaml", Some(&configmap_yaml("next", "1"))),
        ],
        "second",
    );
    wait_release_applied(
        &client,
        &ns.name,
        "web.v1",
        &second,
        Duration::from_secs(90),
    )
    .await;
    assert!(cms.get_opt("keep").await.expect("get").is_none());
    assert!(cms.get_opt("next").await.expect("get").is_some());
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_takes_over_a_push_app_only_when_asked() {
    use ferry_engine::pipeline::{self, ApplyOptions};
    use ferry_engine::progress::NoProgress;
    use ferry_engine::render::{RenderRequest, render};
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "idn-takeover").await;
    // CI deployed push app `web` (`ferry apply --app web -n <ns>`).
    let yaml = format!(
        "{}---\n{}",
        configmap_yaml("shared", "push"),
        configmap_yaml("push-only", "push")
    );
    let manifests =
        render(&RenderRequest::new(".", "-").with_stdin(yaml.into_bytes())).expect("render");
    let push = ApplyOptions {
        app: "web".into(),
        namespace: Some(ns.name.clone()),
        prune: true,
        ..Default::default()
    };
    let report = pipeline::apply(&client, manifests, &push, &NoProgress)
        .await
        .expect("push apply");
    assert!(report.succeeded(), "{:#?}", report);
    let repo = Repo::create(&env, &ns.name);
    let first = repo.commit(
        &[("app/shared.yaml", Some(&configmap_yaml("shared", "git")))],
        "first",
    );
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
    git_secret(&env, &client, &ns.name, "git-auth").await;
    create::<GitSource>(
        &client,
        &ns.name,
        git_source("repo", &repo.url, Some("git-auth"), "1s"),
    )
    .await;
    // Release `web` without the annotation: same name, but not the push app's owner.
    create::<Release>(
        &client,
        &ns.name,
        release("web", "repo", "./app", serde_json::json!({})),
    )
    .await;
    let r = wait_release_reason(
        &client,
        &ns.name,
        "web",
        "ApplyFailed",
        Duration::from_secs(90),
    )
    .await;
    let message = ready_state(&r.status.unwrap_or_default().conditions)
        .map(|(_, _, m)| m)
        .unwrap_or_default();
    assert!(message.contains("already owned"), "{message}");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(cms.get_opt("push-only").await.expect("get").is_some());
    // Asked to take it over, it does: re-owns, prunes the push app's leftovers.
    let releases: Api<Release> = Api::namespaced(client.clone(), &ns.name);
    releases
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {"ferry.dev/adopt-push-app": "web"}}
            })),
        )
        .await
        .expect("annotate");
    wait_release_applied(&client, &ns.name, "web", &first, Duration::from_secs(90)).await;
    let shared = cms.get("shared").await.expect("shared");
    assert_eq!(
        owner_of(&shared),
        Some(format!("{0}/release/{0}/web", ns.name))
    );
    assert!(cms.get_opt("push-only").await.expect("get").is_none());
    assert!(
        cms.get_opt("ferry-inventory-web")
            .await
            .expect("get")
            .is_none()
    );
    agent.stop().await.expect("agent stops");
}
