//! `ferry check` names a CRD that is not the one this CLI ships (as an older install leaves
//! it), and `ferry install` updates it. Its own test binary: it changes a shared CRD (only a
//! schema description, which validates nothing), and the other check tests expect every CRD
//! current; cargo runs test binaries one after another.

use std::process::Command;
use std::time::Duration;

use ferry_testsupport::{TestEnv, TestNamespace, wait_for};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};

const CRD: &str = "imageupdates.ferry.dev";

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
async fn check_names_a_stale_crd_and_install_updates_it() {
    let env = TestEnv::get();
    let client = env.client().await;
    let home = TestNamespace::create(&client, "check-crd").await;
    let (code, out, err) = ferry(
        &env,
        &["install", "--no-deployment", "--namespace", &home.name],
    );
    assert_eq!(code, 0, "ferry install: {out}{err}");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // Another test's `ferry install` may restore the CRD at any moment: change it again on
    // every attempt until check sees it stale.
    let line = wait_for(
        "check to name the stale CRD",
        Duration::from_secs(60),
        || {
            let crds = crds.clone();
            let env = env.clone();
            let ns = home.name.clone();
            async move {
                let mut crd = crds.get(CRD).await?;
                if let Some(schema) = crd
                    .spec
                    .versions
                    .first_mut()
                    .and_then(|v| v.schema.as_mut())
                    .and_then(|s| s.open_api_v3_schema.as_mut())
                {
                    schema.description = Some("an older ferry's ImageUpdate".into());
                }
                crds.replace(CRD, &PostParams::default(), &crd).await?;
                let (code, out, _) = ferry(&env, &["check", "--no-deployment", "--namespace", &ns]);
                match out
                    .lines()
                    .find(|l| l.starts_with(&format!("✗ CRD {CRD}:")))
                {
                    Some(line) if code == 1 => Ok(Some(line.to_string())),
                    _ => anyhow::bail!("exit {code}: {out}"),
                }
            }
        },
    )
    .await
    .expect("stale CRD reported");
    assert!(
        line.contains("differs from the one this CLI") && line.contains("ferry install"),
        "{line}"
    );

    let (code, out, err) = ferry(
        &env,
        &["install", "--no-deployment", "--namespace", &home.name],
    );
    assert_eq!(code, 0, "ferry install: {out}{err}");
    let (code, out, err) = ferry(
        &env,
        &["check", "--no-deployment", "--namespace", &home.name],
    );
    assert_eq!(code, 0, "check after install: {out}{err}");
    assert!(
        out.contains(&format!("✔ CRD {CRD}: current and Established")),
        "{out}"
    );

    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    for name in [
        format!("ferry-agent-{}", home.name),
        format!("ferry-admin-{}", home.name),
    ] {
        let _ = bindings.delete(&name, &DeleteParams::default()).await;
    }
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let _ = roles
        .delete(
            &format!("ferry-agent-{}", home.name),
            &DeleteParams::default(),
        )
        .await;
}
