//! Attack test for app identity through the `ferry` binary against the real testenv (issue 11,
//! item 6): a directory named like an agent Release (`./web.v1` → push app `web-v1`, the app the
//! pre-upgrade encoding gave Release `web.v1`) cannot prune or delete the Release's objects, and
//! `ferry status/delete --release` address the Release's own app.

use std::process::Command;

use ferry_engine::ownership::ReleaseRef;
use ferry_engine::pipeline::{self, ApplyOptions};
use ferry_engine::progress::NoProgress;
use ferry_engine::render::{RenderRequest, render};
use ferry_testsupport::{TestEnv, TestNamespace};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;

fn ferry(env: &TestEnv, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .env_remove("CI")
        .env("NO_COLOR", "1")
        .env("KUBECONFIG", env.kubeconfig())
        .output()
        .expect("run ferry");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn configmap(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  v: \"1\"\n")
}

#[tokio::test]
async fn directory_named_like_a_release_cannot_prune_or_delete_it() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "idn-cli").await;
    // What the agent applies for Release `<ns>/web.v1`.
    let manifests =
        render(&RenderRequest::new(".", "-").with_stdin(configmap("rel-cm").into_bytes()))
            .expect("render");
    let options = ApplyOptions {
        release: Some(ReleaseRef {
            namespace: ns.name.clone(),
            name: "web.v1".into(),
        }),
        namespace: Some(ns.name.clone()),
        prune: true,
        ..Default::default()
    };
    let report = pipeline::apply(&client, manifests, &options, &NoProgress)
        .await
        .expect("apply as the Release");
    assert!(report.succeeded(), "{:#?}", report);

    // CI: `ferry apply ./web.v1 --prune` (app `web-v1`), twice, dropping an object.
    let dir = tempfile::tempdir().expect("tempdir");
    let app_dir = dir.path().join("web.v1");
    std::fs::create_dir(&app_dir).expect("mkdir");
    std::fs::write(app_dir.join("a.yaml"), configmap("push-a")).expect("write");
    let path = app_dir.to_string_lossy().into_owned();
    let (code, out, err) = ferry(&env, &["apply", &path, "-n", &ns.name, "--prune"]);
    assert_eq!(code, 0, "{out}{err}");
    std::fs::write(app_dir.join("a.yaml"), configmap("push-b")).expect("write");
    let (code, out, err) = ferry(&env, &["apply", &path, "-n", &ns.name, "--prune"]);
    assert_eq!(code, 0, "{out}{err}");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    assert!(cms.get_opt("push-a").await.expect("get").is_none());
    assert!(
        cms.get_opt("rel-cm").await.expect("get").is_some(),
        "the push app pruned the Release's object: {out}"
    );

    // `ferry delete --app web-v1` deletes the push app only.
    let (code, out, err) = ferry(&env, &["delete", "--app", "web-v1", "-n", &ns.name]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(cms.get_opt("push-b").await.expect("get").is_none());
    assert!(cms.get_opt("rel-cm").await.expect("get").is_some());

    // The Release's app is addressed by the Release.
    let release = format!("{}/web.v1", ns.name);
    let (code, out, err) = ferry(&env, &["status", "--release", &release, "-o", "json"]);
    assert!(code == 0 || code == 1, "{out}{err}");
    assert!(out.contains("rel-cm"), "{out}");
    let (code, out, err) = ferry(&env, &["delete", "--release", &release]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(cms.get_opt("rel-cm").await.expect("get").is_none());
    let (code, _, err) = ferry(&env, &["delete", "--release", "not-a-release"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("NAMESPACE/NAME"), "{err}");
}
