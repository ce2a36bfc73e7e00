//! `ferry check` against the real testenv: `--pre` passes for the admin and fails for a service
//! account without rights; after `ferry install` the CRDs are current and the RBAC equal to the
//! install's; a ClusterRole widened by hand (one extra rule) fails the check, naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_testsupport::{TestEnv, TestNamespace};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use kube::api::{Api, DeleteParams, PostParams};

fn ferry(env: &TestEnv, kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("run ferry");
    let _ = env;
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn mint(env: &TestEnv, namespace: &str, account: &str) -> PathBuf {
    let minted =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testenv/mint-kubeconfig"))
            .args([namespace, account])
            .env("PATH", env.path_env())
            .output()
            .expect("mint-kubeconfig");
    assert!(
        minted.status.success(),
        "mint-kubeconfig: {}",
        String::from_utf8_lossy(&minted.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&minted.stdout).trim())
}

#[tokio::test]
async fn check_pre_passes_for_the_admin_and_fails_without_rights() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "check-pre").await;
    let (code, out, err) = ferry(
        &env,
        &env.kubeconfig(),
        &["check", "--pre", "--namespace", &ns.name],
    );
    assert_eq!(code, 0, "admin: {out}{err}");
    assert!(out.contains("✔ cluster: Kubernetes v1."), "{out}");
    assert!(
        out.contains("✔ may create customresourcedefinitions.apiextensions.k8s.io"),
        "{out}"
    );

    // A service account bound to nothing: the cluster is reachable, installing is not allowed.
    let nobody = mint(&env, &ns.name, "nobody");
    let (code, out, err) = ferry(
        &env,
        &nobody,
        &["check", "--pre", "--namespace", &ns.name, "-o", "json"],
    );
    assert_eq!(code, 1, "no rights: {out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["ok"], false);
    let checks = report["checks"].as_array().expect("checks");
    let by_name = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {out}"))
            .clone()
    };
    assert_eq!(by_name("cluster")["ok"], true, "{out}");
    for denied in [
        "may create customresourcedefinitions.apiextensions.k8s.io",
        "may create clusterroles.rbac.authorization.k8s.io",
        "may create clusterrolebindings.rbac.authorization.k8s.io",
        "may create deployments.apps",
    ] {
        let check = by_name(denied);
        assert_eq!(check["ok"], false, "{denied}: {out}");
        assert!(
            check["message"]
                .as_str()
                .is_some_and(|m| m.contains("denied")),
            "{out}"
        );
    }
}

#[tokio::test]
async fn check_after_install_finds_crds_current_and_rbac_equal_and_names_a_widened_rule() {
    let env = TestEnv::get();
    let client = env.client().await;
    let home = TestNamespace::create(&client, "check-home").await;
    let kubeconfig = env.kubeconfig();
    let (code, out, err) = ferry(
        &env,
        &kubeconfig,
        &["install", "--no-deployment", "--namespace", &home.name],
    );
    assert_eq!(code, 0, "ferry install: {out}{err}");
    let role_name = format!("ferry-agent-{}", home.name);

    let (code, out, err) = ferry(
        &env,
        &kubeconfig,
        &["check", "--no-deployment", "--namespace", &home.name],
    );
    assert_eq!(code, 0, "check after install: {out}{err}");
    for needle in [
        "✔ CRD releases.ferry.dev: current and Established",
        "✔ CRD gitsources.ferry.dev: current and Established",
        &format!("✔ ClusterRole {role_name}: rules equal"),
        &format!("✔ Role {}/ferry-agent: rules equal", home.name),
        &format!(
            "✔ ClusterRoleBindings of {}/ferry-agent: bound to {role_name} only",
            home.name
        ),
    ] {
        assert!(out.contains(needle), "missing {needle:?} in {out}");
    }

    // The agent Deployment was not installed: without --no-deployment that is a failure.
    let (code, out, _) = ferry(&env, &kubeconfig, &["check", "--namespace", &home.name]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "✗ agent Deployment {}/ferry-agent: not found",
            home.name
        )),
        "{out}"
    );

    // Someone widens the agent's ClusterRole by hand: check fails and names the extra rule.
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let mut role = roles.get(&role_name).await.expect("ClusterRole");
    role.rules.get_or_insert_with(Vec::new).push(PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["secrets".into()]),
        verbs: vec!["delete".into()],
        ..PolicyRule::default()
    });
    roles
        .replace(&role_name, &PostParams::default(), &role)
        .await
        .expect("widen the ClusterRole");
    let (code, out, err) = ferry(
        &env,
        &kubeconfig,
        &["check", "--no-deployment", "--namespace", &home.name],
    );
    assert_eq!(code, 1, "widened: {out}{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("✗ ClusterRole {role_name}:")))
        .unwrap_or_else(|| panic!("no failed ClusterRole line in {out}"));
    assert!(
        line.contains("broader than this CLI installs")
            && line.contains("secrets")
            && line.contains("delete"),
        "{line}"
    );

    // Cluster-scoped leftovers of this install.
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    for name in [role_name.clone(), format!("ferry-admin-{}", home.name)] {
        let _ = bindings.delete(&name, &DeleteParams::default()).await;
    }
    let _ = roles.delete(&role_name, &DeleteParams::default()).await;
}
