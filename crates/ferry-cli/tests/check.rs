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
        "may bind clusterroles.rbac.authorization.k8s.io/cluster-admin",
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

#[tokio::test]
async fn check_finds_the_agent_available_at_the_cli_version_and_reports_an_older_one() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};
    let env = TestEnv::get();
    let client = env.client().await;
    let home = TestNamespace::create(&client, "check-agent").await;
    let kubeconfig = env.kubeconfig();
    // The kwok nodes run the pod as far as the API server can tell (Ready, an IP, endpoints);
    // the real node is tainted and would need the image.
    let (code, out, err) = ferry(
        &env,
        &kubeconfig,
        &[
            "install",
            "--namespace",
            &home.name,
            "--node-selector",
            "type=kwok",
        ],
    );
    assert_eq!(code, 0, "ferry install: {out}{err}");
    let role_name = format!("ferry-agent-{}", home.name);

    let (code, out, err) = ferry(&env, &kubeconfig, &["check", "--namespace", &home.name]);
    assert_eq!(code, 0, "check after a full install: {out}{err}");
    for needle in [
        format!(
            "✔ agent Deployment {}/ferry-agent: Available, 1 ready, image ghcr.io/ferry-dev/ferry-agent:{v} (CLI {v})",
            home.name,
            v = env!("CARGO_PKG_VERSION")
        ),
        format!(
            "✔ webhook Service {}/ferry-agent: 1 ready endpoint",
            home.name
        ),
    ] {
        assert!(out.contains(&needle), "missing {needle:?} in {out}");
    }

    // An agent of another version (an upgrade not finished, a CLI not upgraded): named.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &home.name);
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "agent", "image": "ghcr.io/ferry-dev/ferry-agent:0.0.1"}
    ]}}}});
    deployments
        .patch(
            "ferry-agent",
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .expect("older image");
    let line = ferry_testsupport::wait_for(
        "check to report the older agent",
        std::time::Duration::from_secs(60),
        || {
            let env = env.clone();
            let kubeconfig = kubeconfig.clone();
            let ns = home.name.clone();
            async move {
                let (code, out, _) = ferry(&env, &kubeconfig, &["check", "--namespace", &ns]);
                let prefix = format!("✗ agent Deployment {ns}/ferry-agent:");
                match out.lines().find(|l| l.starts_with(&prefix)) {
                    Some(line) if code == 1 && line.contains("0.0.1") => Ok(Some(line.to_string())),
                    _ => anyhow::bail!("exit {code}: {out}"),
                }
            }
        },
    )
    .await
    .expect("version mismatch reported");
    assert!(
        line.contains(&format!(
            "not this CLI's version {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{line}"
    );

    // Pinned by digest only: the version cannot be read from the reference; not a failure.
    let digest_only = format!("ghcr.io/ferry-dev/ferry-agent@sha256:{}", "0".repeat(64));
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [
        {"name": "agent", "image": digest_only}
    ]}}}});
    deployments
        .patch(
            "ferry-agent",
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .expect("digest-only image");
    ferry_testsupport::wait_for(
        "check to accept a digest-only image",
        std::time::Duration::from_secs(60),
        || {
            let (env, kubeconfig, ns) = (env.clone(), kubeconfig.clone(), home.name.clone());
            async move {
                let (code, out, _) = ferry(&env, &kubeconfig, &["check", "--namespace", &ns]);
                let prefix = format!("✔ agent Deployment {ns}/ferry-agent:");
                match out.lines().find(|l| l.starts_with(&prefix)) {
                    Some(line) if code == 0 && line.contains("pinned by digest only") => {
                        Ok(Some(()))
                    }
                    _ => anyhow::bail!("exit {code}: {out}"),
                }
            }
        },
    )
    .await
    .expect("a digest-only image passes, saying its version is not compared");

    let (code, out, err) = ferry(
        &env,
        &kubeconfig,
        &[
            "uninstall",
            "--namespace",
            &home.name,
            "--watch-namespace",
            &home.name,
        ],
    );
    assert_eq!(code, 0, "uninstall: {out}{err}");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    assert!(roles.get_opt(&role_name).await.expect("get").is_none());
}

#[test]
fn check_reports_an_unreachable_cluster_as_a_failed_check() {
    let env = TestEnv::get();
    let dir = tempfile::tempdir().expect("tmp");
    // Nothing listens on port 1: the cluster is unreachable.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: gone\n  context:\n    cluster: gone\n    user: u\ncurrent-context: gone\n",
    )
    .expect("write");
    let (code, out, err) = ferry(&env, &kubeconfig, &["check", "-o", "json"]);
    assert_eq!(code, 1, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["ok"], false);
    assert_eq!(report["checks"][0]["name"], "cluster");
    assert!(
        report["checks"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot reach the API server")),
        "{out}"
    );
}
