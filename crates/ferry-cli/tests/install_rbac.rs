//! The shipped install's RBAC (issue 11 item 3): an agent authenticated as the `ferry-agent`
//! service account that `ferry install` creates, with exactly the narrow ClusterRole and Role
//! the install binds (no cluster-admin), does its whole job against the real API server: leader
//! Lease, GitSource fetch with a tenant Secret, a tenant Release applied by impersonation with
//! status, finalizer and Events, drift watches, the unsealer's key and an unsealed Secret; and the
//! same agent cannot do a tenant's cluster-scoped writes with its own rights.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_agent::{Agent, AgentOptions};
use ferry_api::{GitSource, Release};
use ferry_engine::decrypt::sealed::{self, Scope, SealedSecret};
use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};

mod common;
use common::{apply_json, repo_with_configmap};

fn ferry(env: &TestEnv, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("KUBECONFIG", env.kubeconfig())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_does_its_job_with_the_install_rbac_and_nothing_more() {
    ferry_testsupport::init_logging();
    let env = TestEnv::get();
    let client = env.client().await;
    let home = TestNamespace::create(&client, "rbac-agent").await;
    let tenant = TestNamespace::create(&client, "rbac-tenant").await;
    let (code, out) = ferry(
        &env,
        &["install", "--no-deployment", "--namespace", &home.name],
    );
    assert_eq!(code, 0, "ferry install: {out}");
    // A token for the install's `ferry-agent` service account: the agent runs with its rights only.
    let minted =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testenv/mint-kubeconfig"))
            .args([&home.name, "ferry-agent"])
            .env("PATH", env.path_env())
            .output()
            .expect("mint-kubeconfig");
    assert!(
        minted.status.success(),
        "mint-kubeconfig: {}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let kubeconfig = PathBuf::from(String::from_utf8_lossy(&minted.stdout).trim());

    // The tenant: its namespace's default service account administers that namespace.
    apply_json::<RoleBinding>(&client, &tenant.name, serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "default-admin", "namespace": tenant.name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": tenant.name}],
    }))
    .await;
    apply_json::<Secret>(
        &client,
        &tenant.name,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "git-auth", "namespace": tenant.name},
            "stringData": {"username": env.var("FERRY_GIT_USER"), "password": env.var("FERRY_GIT_PASSWORD")},
        }),
    )
    .await;
    let url = repo_with_configmap(&env, &tenant.name);
    apply_json::<GitSource>(
        &client,
        &tenant.name,
        serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "GitSource",
            "metadata": {"name": "repo", "namespace": tenant.name},
            "spec": {"url": url, "ref": {"branch": "main"}, "interval": "1m", "secretRef": {"name": "git-auth"}},
        }),
    )
    .await;
    apply_json::<Release>(
        &client,
        &tenant.name,
        serde_json::json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
            "metadata": {"name": "app", "namespace": tenant.name},
            "spec": {"sourceRef": {"kind": "GitSource", "name": "repo"}, "path": "app", "interval": "1m", "retryInterval": "2s"},
        }),
    )
    .await;

    let cache = tempfile::tempdir().expect("cache");
    let mut options = AgentOptions::for_kubeconfig(kubeconfig, cache.path().to_path_buf());
    options.namespace = home.name.clone();
    options.watch_namespaces = vec![tenant.name.clone()];
    options.leader_elect = true;
    options.sealed_secrets = true;
    let agent = Agent::start(options).await.expect("agent starts");

    // Leader election with the install's Role.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &home.name);
    wait_for("the agent's Lease", Duration::from_secs(60), || {
        let leases = leases.clone();
        async move { Ok(leases.get_opt("ferry-agent").await?) }
    })
    .await
    .expect("lease");
    // The tenant's Release: fetched with the tenant's Secret, applied by impersonation, status
    // written with the agent's own rights.
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

    // The unsealer: its key in the agent's namespace, a Secret in the tenant's.
    let addr = agent.http_addr;
    let cert = wait_for(
        "the sealing certificate",
        Duration::from_secs(120),
        || async move {
            Ok(
                sealed::fetch_certificate(&format!("http://{addr}/v1/cert.pem"))
                    .await
                    .ok(),
            )
        },
    )
    .await
    .expect("certificate");
    let public = sealed::public_key_from_certificate_pem(cert.as_bytes()).expect("cert");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "sealed", "namespace": tenant.name},
        "stringData": {"password": "n4rrow"},
    }))
    .expect("secret");
    let sealed_secret = sealed::seal_secret(&secret, &public, Scope::Strict, None).expect("seal");
    let sealed_api: Api<SealedSecret> = Api::namespaced(client.clone(), &tenant.name);
    sealed_api
        .create(&PostParams::default(), &sealed_secret)
        .await
        .expect("create SealedSecret");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &tenant.name);
    wait_for("the unsealed Secret", Duration::from_secs(60), || {
        let secrets = secrets.clone();
        async move { Ok(secrets.get_opt("sealed").await?) }
    })
    .await
    .expect("unsealed");

    // The agent's own identity is not cluster-admin.
    let agent_client = ferry_testsupport::client_for_kubeconfig(&PathBuf::from(
        String::from_utf8_lossy(&minted.stdout).trim(),
    ))
    .await
    .expect("agent client");
    let bindings: Api<ClusterRoleBinding> = Api::all(agent_client);
    let attempt: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{}-escalate", home.name)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": tenant.name}],
    }))
    .expect("binding");
    let refused = bindings.create(&PostParams::default(), &attempt).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 403),
        "the agent itself may not bind cluster-admin: {refused:?}"
    );

    agent.stop().await.expect("agent stops");
    // Cluster-scoped leftovers of this install.
    let admin_bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    for name in [
        format!("ferry-agent-{}", home.name),
        format!("ferry-admin-{}", home.name),
    ] {
        let _ = admin_bindings.delete(&name, &DeleteParams::default()).await;
    }
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let _ = roles
        .delete(
            &format!("ferry-agent-{}", home.name),
            &DeleteParams::default(),
        )
        .await;
}
