//! Upgrades: `ferry install` over an older install (deploy/install.yaml of commit d089750, the
//! last before the narrow agent RBAC, applied as a user would, with `kubectl apply`) keeps the
//! Releases and leaves exactly the current install: the agent's cluster-admin binding, whose
//! roleRef cannot be changed, is recreated pointing at the narrow ClusterRole, and `ferry check`
//! goes from failing (naming that binding) to passing. Also: an install that drops
//! `--insecure-agent-identity-for-tenants` removes the agent's cluster-admin binding.
//!
//! The old CRDs are not applied here: the CRDs are shared by every test running at once on the
//! testenv. The CRD upgrade (d089750's CRDs, and an older schema, under ferry's field manager,
//! objects kept) is tests/check_stale_crd.rs, the one binary whose tests change shared CRDs.

use std::process::Command;

use ferry_api::Release;
use ferry_testsupport::{TestEnv, TestNamespace};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};

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

async fn release(client: &kube::Client, ns: &str) -> Release {
    let api: Api<Release> = Api::namespaced(client.clone(), ns);
    let value = serde_json::json!({
        "apiVersion": "ferry.dev/v1alpha1", "kind": "Release",
        "metadata": {"name": "app", "namespace": ns},
        "spec": {"sourceRef": {"kind": "GitSource", "name": "repo"}, "path": "app", "interval": "1m", "suspend": true},
    });
    api.patch(
        "app",
        &PatchParams::apply("ferry-tests").force(),
        &Patch::Apply(&value),
    )
    .await
    .unwrap_or_else(|e| panic!("Release {ns}/app: {e}"))
}

#[tokio::test]
async fn install_over_the_pre_rbac_install_keeps_releases_and_narrows_the_agent() {
    let env = TestEnv::get();
    let client = env.client().await;
    let home = TestNamespace::create(&client, "upgrade-home").await;
    let tenant = TestNamespace::create(&client, "upgrade-tenant").await;
    let old = include_str!("fixtures/install-d089750-without-crds.yaml")
        .replace("ferry-system", &home.name);
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("install.yaml");
    std::fs::write(&file, old).expect("write");
    let applied = Command::new(env.tool("kubectl"))
        .args(["apply", "--server-side", "-f"])
        .arg(&file)
        .env("KUBECONFIG", env.kubeconfig())
        .output()
        .expect("kubectl");
    assert!(
        applied.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let before = [
        release(&client, &home.name).await,
        release(&client, &tenant.name).await,
    ];
    let binding = format!("ferry-agent-{}", home.name);

    let (code, out, _) = ferry(&env, &["check", "--namespace", &home.name]);
    assert_eq!(code, 1, "the old install is not the current one: {out}");
    assert!(
        out.contains(&format!(
            "also bound by: {binding} (to ClusterRole cluster-admin)"
        )),
        "{out}"
    );

    let (code, out, err) = ferry(&env, &["install", "--namespace", &home.name]);
    assert_eq!(code, 0, "upgrade: {out}{err}");
    assert!(
        out.contains(&format!(
            "ClusterRoleBinding {binding}: roleRef ClusterRole cluster-admin becomes ClusterRole {binding} (immutable), so it is recreated"
        )),
        "{out}"
    );
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    assert_eq!(
        bindings.get(&binding).await.expect("binding").role_ref.name,
        binding
    );
    let (code, out, err) = ferry(&env, &["check", "--namespace", &home.name]);
    assert_eq!(code, 0, "check after the upgrade: {out}{err}");

    // The Releases are the same objects (not recreated, not lost).
    for r in &before {
        let ns = r.namespace().expect("ns");
        let now = Api::<Release>::namespaced(client.clone(), &ns)
            .get("app")
            .await
            .unwrap_or_else(|e| panic!("Release {ns}/app lost: {e}"));
        assert_eq!(now.uid(), r.uid());
    }

    // The insecure install, then the secure one again: the cluster-admin binding goes.
    let (code, out, err) = ferry(
        &env,
        &[
            "install",
            "--namespace",
            &home.name,
            "--insecure-agent-identity-for-tenants",
        ],
    );
    assert_eq!(code, 0, "insecure install: {out}{err}");
    let insecure = format!("ferry-agent-{}-cluster-admin", home.name);
    assert!(bindings.get_opt(&insecure).await.expect("get").is_some());
    let (code, out, err) = ferry(&env, &["install", "--namespace", &home.name]);
    assert_eq!(code, 0, "secure install again: {out}{err}");
    assert!(
        bindings.get_opt(&insecure).await.expect("get").is_none(),
        "the agent stayed cluster-admin: {out}"
    );
    let (code, out, err) = ferry(&env, &["check", "--namespace", &home.name]);
    assert_eq!(
        code, 0,
        "check after dropping the insecure flag: {out}{err}"
    );

    let (code, out, err) = ferry(
        &env,
        &[
            "uninstall",
            "--namespace",
            &home.name,
            "--watch-namespace",
            &home.name,
            "--releases",
            "orphan",
        ],
    );
    assert_eq!(code, 0, "uninstall: {out}{err}");
}
