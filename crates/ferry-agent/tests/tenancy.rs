//! Multi-tenancy against the real API server's RBAC: team A's Release applies as team A's
//! service account and cannot create or modify anything in team B's namespace or cluster-scoped
//! objects; without a service account the namespace's default one is used (never the agent's own
//! rights), and the GitSource's Secret is read as that identity; cross-namespace source
//! references are refused. The attacks on the defaults themselves are in attack_tenancy.rs.

mod common;

use std::time::Duration;

use common::*;
use ferry_api::{GitSource, Release};
use ferry_testsupport::{TestEnv, TestNamespace};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, PostParams};

async fn tenant_sa(client: &kube::Client, ns: &str, sa: &str) {
    create::<k8s_openapi::api::core::v1::ServiceAccount>(
        client,
        ns,
        serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}
        }),
    )
    .await;
    create::<k8s_openapi::api::rbac::v1::RoleBinding>(client, ns, serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("{sa}-admin")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
    }))
    .await;
}

/// Let `sa` of `ns` `get` the one Secret `secret` (what a tenant's GitSource needs).
async fn read_secret_role(client: &kube::Client, ns: &str, sa: &str, secret: &str) {
    create::<k8s_openapi::api::rbac::v1::Role>(
        client,
        ns,
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": format!("{sa}-read-{secret}")},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get"]}],
        }),
    )
    .await;
    create::<k8s_openapi::api::rbac::v1::RoleBinding>(
        client,
        ns,
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("{sa}-read-{secret}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{sa}-read-{secret}")},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn team_a_cannot_touch_team_b_or_cluster_scope() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let a = TestNamespace::create(&client, "team-a").await;
    let b = TestNamespace::create(&client, "team-b").await;
    tenant_sa(&client, &a.name, "deployer").await;
    // Something of team B's that team A will try to overwrite.
    let b_cms: Api<ConfigMap> = Api::namespaced(client.clone(), &b.name);
    let victim: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "victim"}, "data": {"value": "b's"}
    }))
    .expect("cm");
    b_cms
        .create(&PostParams::default(), &victim)
        .await
        .expect("victim");
    let cluster_role = format!("{}-evil", a.name);
    let repo = Repo::create(&env, &a.name);
    let sha = repo.commit(
        &[
            ("ok/cm.yaml", Some(&configmap_yaml("mine", "a's"))),
            ("nosa/cm.yaml", Some(&configmap_yaml("nosa", "a's"))),
            (
                "evil/b.yaml",
                Some(&format!(
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: victim\n  namespace: {}\ndata:\n  value: stolen\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: planted\n  namespace: {}\ndata:\n  value: x\n",
                    b.name, b.name
                )),
            ),
            (
                "evil/cr.yaml",
                Some(&format!(
                    "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {cluster_role}\nrules:\n- apiGroups: ['*']\n  resources: ['*']\n  verbs: ['*']\n"
                )),
            ),
        ],
        "tenants",
    );
    let (agent, _cache) = start_agent_bare(&env, &[&a.name, &b.name], |o| {
        o.default_service_account = "ferry-tenant-default".to_string();
    })
    .await;
    git_secret(&env, &client, &a.name, "git-auth").await;
    // The GitSource's Secret is read as team A's default identity (never the agent's): that
    // identity may read exactly that Secret, and nothing else.
    read_secret_role(&client, &a.name, "ferry-tenant-default", "git-auth").await;
    create::<GitSource>(
        &client,
        &a.name,
        git_source("repo", &repo.url, Some("git-auth"), "1m"),
    )
    .await;
    let sa = serde_json::json!({"serviceAccountName": "deployer"});
    create::<Release>(&client, &a.name, release("ok", "repo", "ok", sa.clone())).await;
    create::<Release>(
        &client,
        &a.name,
        release("evil", "repo", "evil", sa.clone()),
    )
    .await;
    create::<Release>(
        &client,
        &a.name,
        release("nosa", "repo", "nosa", serde_json::json!({})),
    )
    .await;
    // A Release in B pointing at A's GitSource: refused by default.
    create::<Release>(
        &client,
        &b.name,
        serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Release", "metadata": {"name": "cross"},
            "spec": {"sourceRef": {"kind": "GitSource", "name": "repo", "namespace": a.name}, "path": "ok"}
        }),
    )
    .await;

    // Team A's own namespace works with its service account.
    wait_release_applied(&client, &a.name, "ok", &sha, Duration::from_secs(60)).await;
    let a_cms: Api<ConfigMap> = Api::namespaced(client.clone(), &a.name);
    assert!(a_cms.get_opt("mine").await.expect("get").is_some());

    // Writing into team B / cluster scope is forbidden by the API server.
    let evil = wait_release_reason(
        &client,
        &a.name,
        "evil",
        "ApplyFailed",
        Duration::from_secs(60),
    )
    .await;
    let message = ready_state(&evil.status.unwrap_or_default().conditions)
        .map(|c| c.2)
        .unwrap_or_default();
    assert!(
        message.contains("forbidden") || message.contains("cannot"),
        "RBAC denial reported: {message}"
    );
    let victim = b_cms.get("victim").await.expect("victim still there");
    assert_eq!(
        victim
            .data
            .unwrap_or_default()
            .get("value")
            .map(String::as_str),
        Some("b's")
    );
    assert!(
        b_cms.get_opt("planted").await.expect("get").is_none(),
        "nothing created in team B"
    );
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(
        roles.get_opt(&cluster_role).await.expect("get").is_none(),
        "no cluster-scoped object"
    );

    // No serviceAccountName: the enforced default SA (which has no rights) is used, not the agent's.
    let nosa = wait_release_reason(
        &client,
        &a.name,
        "nosa",
        "ApplyFailed",
        Duration::from_secs(60),
    )
    .await;
    let message = ready_state(&nosa.status.unwrap_or_default().conditions)
        .map(|c| c.2)
        .unwrap_or_default();
    assert!(
        message.contains("ferry-tenant-default"),
        "names the impersonated identity: {message}"
    );
    assert!(a_cms.get_opt("nosa").await.expect("get").is_none());

    // Cross-namespace source reference refused.
    let cross = wait_release_reason(
        &client,
        &b.name,
        "cross",
        "CrossNamespaceRefDenied",
        Duration::from_secs(30),
    )
    .await;
    let conditions = cross.status.unwrap_or_default().conditions;
    assert!(
        ferry_api::common::find_condition(&conditions, "Stalled")
            .is_some_and(|c| c.status == "True")
    );
    assert!(b_cms.get_opt("mine").await.expect("get").is_none());
    agent.stop().await.expect("agent stops");
}

/// The grant docs/agent.md and scripts/demo recommend for a tenant whose app declares its own
/// Namespace object: `admin` in the namespace, plus get/patch on that one Namespace. A Release
/// without serviceAccountName (the namespace's `default` account) then applies and waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenant_granted_its_namespace_object_applies_it() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    install_crds(&client).await;
    let ns = TestNamespace::create(&client, "own-ns").await;
    let role_name = format!("{}-namespace", ns.name);
    create_cluster_scoped::<ClusterRole>(&client, serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": role_name},
        "rules": [{"apiGroups": [""], "resources": ["namespaces"], "resourceNames": [ns.name], "verbs": ["get", "patch"]}],
    }))
    .await;
    create_cluster_scoped::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(&client, serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": role_name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns.name}],
    }))
    .await;
    let repo = Repo::create(&env, &ns.name);
    let sha = repo.commit(
        &[
            (
                "app/kustomization.yaml",
                Some("resources:\n- namespace.yaml\n- cm.yaml\n"),
            ),
            (
                "app/namespace.yaml",
                Some(&format!(
                    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n  labels:\n    team: own\n",
                    ns.name
                )),
            ),
            ("app/cm.yaml", Some(&configmap_yaml("mine", "ok"))),
        ],
        "app with its namespace",
    );
    // start_agent grants the namespace's default account `admin` there.
    let (agent, _cache) = start_agent(&env, &[&ns.name], |_| {}).await;
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
        release(
            "app",
            "repo",
            "app",
            serde_json::json!({"wait": true, "timeout": "60s"}),
        ),
    )
    .await;
    wait_release_applied(&client, &ns.name, "app", &sha, Duration::from_secs(90)).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let applied = namespaces.get(&ns.name).await.expect("namespace");
    assert_eq!(
        applied
            .metadata
            .labels
            .unwrap_or_default()
            .get("team")
            .map(String::as_str),
        Some("own")
    );
    agent.stop().await.expect("agent stops");
    let _ = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(client.clone())
        .delete(&role_name, &Default::default())
        .await;
    let _ = Api::<ClusterRole>::all(client.clone())
        .delete(&role_name, &Default::default())
        .await;
}

async fn create_cluster_scoped<K>(client: &kube::Client, value: serde_json::Value)
where
    K: kube::Resource<Scope = kube::core::ClusterResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let obj: K = serde_json::from_value(value).expect("object");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("create cluster-scoped object");
}
