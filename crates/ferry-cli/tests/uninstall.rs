//! `ferry uninstall` against the real testenv with an in-process agent: it refuses while the
//! agent's Releases exist; `--releases delete` lets the agent delete what they applied before the
//! agent goes; `--releases orphan` keeps the objects even with the agent stopped, leaves no
//! namespace stuck Terminating on a Release finalizer, and `--crds` keeps the CRDs while ferry
//! objects are left. `--dry-run` prints what each of these would remove and removes nothing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_agent::{Agent, AgentOptions};
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};

mod common;
use common::{apply_json, repo_with_configmap};

fn ferry(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("KUBECONFIG", env.kubeconfig())
        .output()
        .expect("run ferry");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The agent installed (`--no-deployment`) in `home`, running in-process with the admin
/// kubeconfig and watching `tenant`, whose Release has applied the ConfigMap `narrow`.
async fn installed_agent_with_a_ready_release(
    env: &TestEnv,
    client: &kube::Client,
    home: &TestNamespace,
    tenant: &TestNamespace,
    cache: &Path,
) -> Agent {
    let (code, out, err) = ferry(
        env,
        &["install", "--no-deployment", "--namespace", &home.name],
    );
    assert_eq!(code, 0, "ferry install: {out}{err}");
    apply_json::<RoleBinding>(client, &tenant.name, serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "default-admin", "namespace": tenant.name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": tenant.name}],
    }))
    .await;
    apply_json::<Secret>(
        client,
        &tenant.name,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "git-auth", "namespace": tenant.name},
            "stringData": {"username": env.var("FERRY_GIT_USER"), "password": env.var("FERRY_GIT_PASSWORD")},
        }),
    )
    .await;
    let url = repo_with_configmap(env, &tenant.name);
    apply_json::<GitSource>(
        client,
        &tenant.name,
        serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource",
            "metadata": {"name": "repo", "namespace": tenant.name},
            "spec": {"url": url, "ref": {"branch": "main"}, "interval": "1m", "secretRef": {"name": "git-auth"}},
        }),
    )
    .await;
    apply_json::<Release>(
        client,
        &tenant.name,
        serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "app", "namespace": tenant.name},
            "spec": {"sourceRef": {"kind": "GitSource", "name": "repo"}, "path": "app", "interval": "1m", "retryInterval": "2s"},
        }),
    )
    .await;
    let mut options = AgentOptions::for_kubeconfig(env.kubeconfig(), cache.to_path_buf());
    options.namespace = home.name.clone();
    options.watch_namespaces = vec![tenant.name.clone()];
    let agent = Agent::start(options).await.expect("agent starts");
    let releases: Api<Release> = Api::namespaced(client.clone(), &tenant.name);
    wait_for(
        "the tenant's Release Ready",
        Duration::from_secs(120),
        || {
            let releases = releases.clone();
            async move {
                let r = releases.get("app").await?;
                let status = r.status.clone().unwrap_or_default();
                if ferry_api::common::is_ready(&status.conditions) {
                    return Ok(Some(r));
                }
                anyhow::bail!("{:?}", status.conditions)
            }
        },
    )
    .await
    .expect("Release applied");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &tenant.name);
    assert!(cms.get_opt("narrow").await.expect("get").is_some());
    agent
}

/// The cluster-scoped and namespaced objects of the install are gone; the namespace is kept.
async fn assert_agent_removed(client: &kube::Client, home: &str) {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(
        roles
            .get_opt(&format!("ferry-agent-{home}"))
            .await
            .expect("get")
            .is_none()
    );
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    for name in [format!("ferry-agent-{home}"), format!("ferry-admin-{home}")] {
        assert!(
            bindings.get_opt(&name).await.expect("get").is_none(),
            "{name} left"
        );
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), home);
    for name in ["ferry-agent", "ferry-admin"] {
        assert!(
            accounts.get_opt(name).await.expect("get").is_none(),
            "{name} left"
        );
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt(home).await.expect("get").is_some());
}

/// A dry run's output names the install's objects (RBAC, service accounts) and says that nothing
/// was changed.
fn assert_dry_run_names_the_install(out: &str, home: &str) {
    for line in [
        format!("ClusterRole ferry-agent-{home} would be deleted"),
        format!("ClusterRoleBinding ferry-agent-{home} would be deleted"),
        format!("ClusterRoleBinding ferry-admin-{home} would be deleted"),
        format!("ServiceAccount {home}/ferry-agent would be deleted"),
        format!("ServiceAccount {home}/ferry-admin would be deleted"),
        "nothing was changed (dry run)".to_string(),
    ] {
        assert!(out.contains(&line), "no {line:?} in:\n{out}");
        assert_eq!(out.matches(&line).count(), 1, "{line:?} twice in:\n{out}");
    }
}

/// After a dry run: the install, the tenant's Release (with the agent's finalizer) and the
/// ConfigMap it applied are all still there.
async fn assert_nothing_removed(client: &kube::Client, home: &str, tenant: &str) {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(
        roles
            .get_opt(&format!("ferry-agent-{home}"))
            .await
            .expect("get")
            .is_some(),
        "the dry run deleted the ClusterRole"
    );
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    for name in [format!("ferry-agent-{home}"), format!("ferry-admin-{home}")] {
        assert!(
            bindings.get_opt(&name).await.expect("get").is_some(),
            "the dry run deleted {name}"
        );
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), home);
    for name in ["ferry-agent", "ferry-admin"] {
        assert!(
            accounts.get_opt(name).await.expect("get").is_some(),
            "the dry run deleted {name}"
        );
    }
    let release = Api::<Release>::namespaced(client.clone(), tenant)
        .get("app")
        .await
        .expect("the dry run deleted the Release");
    assert!(release.metadata.deletion_timestamp.is_none());
    assert_eq!(
        release.spec.deletion_policy, None,
        "the dry run changed the Release"
    );
    assert!(
        release
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == "ferry.dev/finalizer")),
        "{:?}",
        release.metadata.finalizers
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), tenant);
    assert!(
        cms.get_opt("narrow").await.expect("get").is_some(),
        "the dry run deleted the Release's ConfigMap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uninstall_refuses_while_releases_exist_then_deletes_them_through_the_agent() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    let home = TestNamespace::create(&client, "uninstall-home").await;
    let tenant = TestNamespace::create(&client, "uninstall-tenant").await;
    let cache = tempfile::tempdir().expect("cache");
    let agent =
        installed_agent_with_a_ready_release(&env, &client, &home, &tenant, cache.path()).await;

    // No Deployment (the agent runs outside the cluster) and no --watch-namespace: which
    // Releases are its cannot be told, so even --releases delete refuses rather than guess.
    let (code, out, err) = ferry(
        &env,
        &[
            "uninstall",
            "--namespace",
            &home.name,
            "--releases",
            "delete",
        ],
    );
    assert_eq!(code, 2, "refused without a scope: {out}{err}");
    assert!(
        err.contains(&format!("{}/app", tenant.name)) && err.contains("--all-namespaces"),
        "{err}"
    );
    let (code, out, err) = ferry(
        &env,
        &[
            "uninstall",
            "--namespace",
            &home.name,
            "--watch-namespace",
            &tenant.name,
        ],
    );
    assert_eq!(code, 2, "refused: {out}{err}");
    assert!(
        err.contains(&format!("{}/app", tenant.name)) && err.contains("--releases orphan"),
        "{err}"
    );
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(
        roles
            .get_opt(&format!("ferry-agent-{}", home.name))
            .await
            .expect("get")
            .is_some(),
        "a refused uninstall removes nothing"
    );

    // --dry-run: refused the same way without --releases; with it, every object that would go
    // is named, and nothing goes (the agent is running: it would prune the ConfigMap at once).
    let (code, out, err) = ferry(
        &env,
        &[
            "uninstall",
            "--namespace",
            &home.name,
            "--watch-namespace",
            &tenant.name,
            "--dry-run",
        ],
    );
    assert_eq!(code, 2, "a dry run refuses as the run would: {out}{err}");
    assert!(err.contains(&format!("{}/app", tenant.name)), "{err}");
    let (code, out, err) = ferry(
        &env,
        &[
            "uninstall",
            "--namespace",
            &home.name,
            "--watch-namespace",
            &tenant.name,
            "--releases",
            "delete",
            "--dry-run",
        ],
    );
    assert_eq!(code, 0, "uninstall --dry-run: {out}{err}");
    assert_dry_run_names_the_install(&out, &home.name);
    assert!(
        out.contains(&format!(
            "Release {}/app would be deleted, and the agent would delete the objects it applied",
            tenant.name
        )),
        "{out}"
    );
    assert_nothing_removed(&client, &home.name, &tenant.name).await;

    // `ferry bootstrap`'s Release, which applies the agent itself: orphaned, not pruned (the
    // agent would delete itself in the middle of its own finalizer).
    apply_json::<Release>(
        &client,
        &home.name,
        serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": home.name, "namespace": home.name},
            "spec": {"sourceRef": {"kind": "GitSource", "name": "ferry-system"}, "path": "clusters/x", "interval": "1m", "suspend": true},
        }),
    )
    .await;
    let (code, out, err) = ferry(
        &env,
        &[
            "uninstall",
            "--namespace",
            &home.name,
            "--watch-namespace",
            &tenant.name,
            "--releases",
            "delete",
            "--timeout",
            "2m",
        ],
    );
    assert_eq!(code, 0, "uninstall --releases delete: {out}{err}");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &tenant.name);
    assert!(
        cms.get_opt("narrow").await.expect("get").is_none(),
        "the agent deleted the Release's ConfigMap"
    );
    let releases: Api<Release> = Api::namespaced(client.clone(), &tenant.name);
    assert!(releases.get_opt("app").await.expect("get").is_none());
    let own: Api<Release> = Api::namespaced(client.clone(), &home.name);
    assert!(own.get_opt(&home.name).await.expect("get").is_none());
    assert!(
        out.contains(&format!(
            "Release {0}/{0} deleted; its objects were kept",
            home.name
        )),
        "{out}"
    );
    assert_agent_removed(&client, &home.name).await;
    agent.stop().await.expect("agent stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uninstall_orphan_keeps_objects_leaves_no_namespace_stuck_and_keeps_crds_in_use() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    let home = TestNamespace::create(&client, "orphan-home").await;
    let tenant = TestNamespace::create(&client, "orphan-tenant").await;
    let cache = tempfile::tempdir().expect("cache");
    let agent =
        installed_agent_with_a_ready_release(&env, &client, &home, &tenant, cache.path()).await;
    // The agent is gone before the uninstall (crashed, scaled down): nothing but the
    // uninstall can remove the Release's finalizer now.
    agent.stop().await.expect("agent stops");

    // --dry-run of the uninstall below: the same outcome announced, nothing removed (the
    // Release keeps its finalizer, the RBAC stays).
    let (code, out, err) = ferry(
        &env,
        &[
            "uninstall",
            "--namespace",
            &home.name,
            "--watch-namespace",
            &tenant.name,
            "--releases",
            "orphan",
            "--crds",
            "--dry-run",
        ],
    );
    assert_eq!(code, 2, "the CRDs would be kept: {out}{err}");
    assert_dry_run_names_the_install(&out, &home.name);
    assert!(
        out.contains(&format!(
            "Release {}/app would be deleted; its objects would be kept",
            tenant.name
        )) && out.contains("the CRDs would be kept")
            && out.contains("GitSource"),
        "{out}"
    );
    assert!(
        !out.contains("CustomResourceDefinition"),
        "no CRD would be deleted: {out}"
    );
    assert_nothing_removed(&client, &home.name, &tenant.name).await;

    // The tenant's GitSource stays: a ferry object is left, so --crds must keep the CRDs.
    let (code, out, err) = ferry(
        &env,
        &[
            "uninstall",
            "--namespace",
            &home.name,
            "--watch-namespace",
            &tenant.name,
            "--releases",
            "orphan",
            "--crds",
        ],
    );
    assert_eq!(
        code, 2,
        "CRDs kept while ferry objects are left: {out}{err}"
    );
    assert!(
        err.contains("CRDs were kept") && err.contains("GitSource"),
        "{err}"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert!(
        crds.get_opt("releases.ferry.dev")
            .await
            .expect("get")
            .is_some()
    );
    assert_agent_removed(&client, &home.name).await;

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &tenant.name);
    assert!(
        cms.get_opt("narrow").await.expect("get").is_some(),
        "orphaned: the Release's ConfigMap stays"
    );
    let releases: Api<Release> = Api::namespaced(client.clone(), &tenant.name);
    assert!(releases.get_opt("app").await.expect("get").is_none());

    // No finalizer left behind: the tenant's namespace can be deleted and goes away.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(&tenant.name, &DeleteParams::background())
        .await
        .expect("delete the tenant namespace");
    wait_for(
        "the tenant namespace gone",
        Duration::from_secs(120),
        || {
            let namespaces = namespaces.clone();
            let name = tenant.name.clone();
            async move {
                match namespaces.get_opt(&name).await? {
                    None => Ok(Some(())),
                    Some(ns) => anyhow::bail!("still there: {:?}", ns.status),
                }
            }
        },
    )
    .await
    .expect("namespace not stuck");
}
