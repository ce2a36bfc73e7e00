//! `ferry install` flags against the real testenv: `--dry-run` reports what would change and
//! changes nothing (also into a namespace that does not exist yet); `--sealed-secrets` refuses
//! beside a bitnami sealed-secrets controller Deployment unless `--sealed-secrets-despite-bitnami`
//! (and `ferry bootstrap --sealed-secrets` refuses before pushing).

use std::process::Command;

use ferry_testsupport::{TestEnv, TestNamespace, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, PostParams};

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

#[tokio::test]
async fn install_dry_run_reports_and_changes_nothing() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "install-dry").await;
    let (code, out, err) = ferry(
        &env,
        &[
            "install",
            "--dry-run",
            "--namespace",
            &ns.name,
            "--node-selector",
            "kubernetes.io/os=linux",
            "--toleration",
            "dedicated=ferry:NoSchedule",
        ],
    );
    assert_eq!(code, 0, "dry run: {out}{err}");
    for needle in [
        format!(
            "ClusterRole.rbac.authorization.k8s.io ferry-agent-{} created",
            ns.name
        ),
        format!("Deployment.apps {}/ferry-agent created", ns.name),
        "nothing was changed".to_string(),
    ] {
        assert!(out.contains(&needle), "missing {needle:?} in {out}");
    }
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(
        roles
            .get_opt(&format!("ferry-agent-{}", ns.name))
            .await
            .expect("get")
            .is_none(),
        "dry run created the ClusterRole"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        deployments
            .get_opt("ferry-agent")
            .await
            .expect("get")
            .is_none()
    );

    // A namespace that does not exist: listed, not created.
    let missing = unique_name("install-dry-missing");
    let (code, out, err) = ferry(&env, &["install", "--dry-run", "--namespace", &missing]);
    assert_eq!(code, 0, "dry run into a new namespace: {out}{err}");
    assert!(
        out.contains(&format!(
            "Deployment {missing}/ferry-agent created (not validated"
        )),
        "{out}"
    );
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt(&missing).await.expect("get").is_none());
}

#[tokio::test]
async fn install_sealed_secrets_refuses_beside_a_bitnami_controller() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "install-bitnami").await;
    // A bitnami controller's Deployment as its release manifest labels it; zero replicas, since
    // detection reads the Deployment only. It is visible cluster-wide (agents of concurrent tests
    // would not start their unsealer), so it lives only as long as the two dry runs below.
    let bitnami: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "sealed-secrets-controller", "namespace": ns.name,
            "labels": {"name": "sealed-secrets-controller"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"name": "sealed-secrets-controller"}},
            "template": {
                "metadata": {"labels": {"name": "sealed-secrets-controller"}},
                "spec": {"containers": [{"name": "sealed-secrets-controller", "image": "bitnami/sealed-secrets-controller:0.30.0"}]}
            }
        }
    }))
    .expect("deployment");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &bitnami)
        .await
        .expect("create the bitnami Deployment");
    let refused = ferry(
        &env,
        &[
            "install",
            "--dry-run",
            "--sealed-secrets",
            "--namespace",
            &ns.name,
        ],
    );
    let despite = ferry(
        &env,
        &[
            "install",
            "--dry-run",
            "--sealed-secrets",
            "--sealed-secrets-despite-bitnami",
            "--namespace",
            &ns.name,
        ],
    );
    let without = ferry(&env, &["install", "--dry-run", "--namespace", &ns.name]);
    // bootstrap refuses too, before it commits or pushes anything (nothing listens at this URL:
    // reaching it would be a different error).
    let bootstrap = ferry(
        &env,
        &[
            "bootstrap",
            "--url",
            "http://127.0.0.1:1/nowhere.git",
            "--sealed-secrets",
            "--namespace",
            &ns.name,
        ],
    );
    deployments
        .delete("sealed-secrets-controller", &DeleteParams::default())
        .await
        .expect("delete the bitnami Deployment");

    let (code, out, err) = refused;
    assert_eq!(code, 2, "refused: {out}{err}");
    assert!(
        err.contains(&format!("{}/sealed-secrets-controller", ns.name))
            && err.contains("--sealed-secrets-despite-bitnami"),
        "{err}"
    );
    assert!(out.is_empty(), "nothing applied before refusing: {out}");
    let (code, out, err) = despite;
    assert_eq!(code, 0, "despite: {out}{err}");
    assert!(out.contains("nothing was changed"), "{out}");
    let (code, out, err) = without;
    assert_eq!(code, 0, "without the unsealer: {out}{err}");
    let (code, out, err) = bootstrap;
    assert_eq!(code, 2, "bootstrap refused: {out}{err}");
    assert!(
        err.contains("refusing --sealed-secrets") && !err.contains("nowhere"),
        "{err}"
    );
}
