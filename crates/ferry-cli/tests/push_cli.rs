//! The push commands end to end through the `ferry` binary against the real testenv: exit codes
//! (diff 0/1/2, apply refusals), JSON output, render without a cluster, status and delete.

use std::path::Path;
use std::process::{Command, Output};

use ferry_testsupport::{TestEnv, TestNamespace};

fn ferry(env: Option<&TestEnv>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.env_remove("CI").env("NO_COLOR", "1");
    match env {
        Some(env) => cmd.env("KUBECONFIG", env.kubeconfig()),
        None => cmd.env("KUBECONFIG", "/nonexistent/kubeconfig"),
    };
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run ferry");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write manifest");
}

const CM: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: blue\n";
const SECRET: &str =
    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: token\nstringData:\n  token: s3cr3t-value\n";

#[tokio::test]
async fn apply_diff_status_delete_through_the_cli() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "cli-push").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app_dir = dir.path().join("shop");
    std::fs::create_dir(&app_dir).expect("mkdir");
    write(&app_dir, "cm.yaml", CM);
    write(&app_dir, "secret.yaml", SECRET);

    // Nothing applied yet: diff says "changes" (exit 1).
    let (code, out, err) = run(ferry(Some(&env))
        .args(["diff", "-n", &ns.name])
        .arg(&app_dir));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("create ConfigMap"), "{out}");

    // App name defaults to the directory name; -o json has one result per object.
    let (code, out, err) = run(ferry(Some(&env))
        .args(["apply", "-n", &ns.name, "-o", "json"])
        .arg(&app_dir));
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["app"], "shop");
    assert_eq!(report["objects"].as_array().map(Vec::len), Some(2));
    assert!(
        !out.contains("s3cr3t") && !err.contains("s3cr3t"),
        "secret leaked: {out}{err}"
    );

    let (code, out, err) = run(ferry(Some(&env))
        .args(["diff", "-n", &ns.name])
        .arg(&app_dir));
    assert_eq!(code, 0, "no changes expected: {out}{err}");

    write(&app_dir, "cm.yaml", &CM.replace("blue", "green"));
    let (code, out, err) = run(ferry(Some(&env))
        .args(["diff", "-n", &ns.name])
        .arg(&app_dir));
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("-  color: blue") && out.contains("+  color: green"),
        "{out}"
    );
    let (code, md, _) = run(ferry(Some(&env))
        .args(["diff", "-n", &ns.name, "-o", "markdown"])
        .arg(&app_dir));
    assert_eq!(code, 1);
    assert!(md.contains("```diff") && md.contains("change"), "{md}");

    let (code, out, err) =
        run(ferry(Some(&env)).args(["status", "--app", "shop", "-n", &ns.name, "-o", "json"]));
    assert_eq!(code, 0, "{out}{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(status["objects"].as_array().map(Vec::len), Some(2));

    let (code, out, err) = run(ferry(Some(&env)).args(["delete", "--app", "shop", "-n", &ns.name]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("deleted"), "{out}");
    let (code, _, err) = run(ferry(Some(&env)).args(["status", "--app", "shop", "-n", &ns.name]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no inventory for app shop"), "{err}");
}

/// Without `-n`, the app's ferry.yaml `namespace` is where objects and the inventory go (the
/// testenv kubeconfig's context namespace is `default`, which must stay untouched).
#[tokio::test]
async fn ferry_yaml_namespace_is_the_apply_namespace_without_dash_n() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "cli-ns").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app_dir = dir.path().join("nsapp");
    std::fs::create_dir(&app_dir).expect("mkdir");
    write(&app_dir, "cm.yaml", CM);
    write(
        &app_dir,
        "ferry.yaml",
        &format!("apiVersion: ferry.dev/v1alpha1\nnamespace: {}\n", ns.name),
    );

    let (code, out, err) = run(ferry(Some(&env))
        .args(["apply", "-o", "json"])
        .arg(&app_dir));
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["namespace"], ns.name.as_str(), "{out}");
    let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), &ns.name);
    assert!(
        configmaps
            .get_opt("ferry-inventory-nsapp")
            .await
            .expect("get inventory")
            .is_some(),
        "inventory in the ferry.yaml namespace"
    );
    assert!(configmaps.get_opt("settings").await.expect("get").is_some());

    // status/delete take the namespace explicitly; the inventory is found there.
    let (code, out, err) =
        run(ferry(Some(&env)).args(["delete", "--app", "nsapp", "-n", &ns.name]));
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn empty_directory_with_prune_is_refused_with_exit_2() {
    let env = TestEnv::get();
    let client = env.client().await;
    let ns = TestNamespace::create(&client, "cli-empty").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = run(ferry(Some(&env))
        .args(["apply", "--app", "x", "--prune", "-n", &ns.name])
        .arg(dir.path()));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--allow-empty"), "{err}");
}

#[test]
fn bad_yaml_is_exit_2_naming_file_and_line_for_diff_and_render() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n",
    );
    for args in [vec!["render"], vec!["diff", "--app", "x"]] {
        let sub = args[0];
        let (code, out, err) = run(ferry(None).args(&args).arg(dir.path()));
        assert_eq!(code, 2, "{sub}: {out}{err}");
        assert!(
            err.contains("broken.yaml") && err.contains("line"),
            "{sub}: {err}"
        );
    }
}

#[test]
fn render_needs_no_cluster_and_applies_set_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: 'nginx:1.25'}]\n",
    );
    let (code, out, err) = run(ferry(None)
        .arg("render")
        .arg(dir.path())
        .args(["--set-image", "nginx=mirror.local/nginx:1.27"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("mirror.local/nginx:1.27") && out.contains("# Source: deploy.yaml"),
        "{out}"
    );
    let (code, out, _) = run(ferry(None)
        .arg("render")
        .arg(dir.path())
        .args(["-o", "json"]));
    assert_eq!(code, 0);
    let objects: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(objects[0]["kind"], "Deployment");
}

#[test]
fn every_push_subcommand_has_examples_and_exit_codes_in_help() {
    for sub in ["apply", "diff", "render", "delete", "status"] {
        let (code, out, _) = run(ferry(None).args([sub, "--help"]));
        assert_eq!(code, 0);
        assert!(
            out.contains("Examples:") && out.contains("Exit codes:"),
            "{sub} --help:\n{out}"
        );
    }
}
