//! A push app's drift policy (ferry.yaml `drift:`, docs/push.md "Drift") through the `ferry`
//! binary against the real testenv, with hand edits made by the real kubectl: ignored fields
//! are left to whoever changed them, `detect` reports a hand edit and keeps it (exit 4) until
//! the source changes the object, `correct` (the default) reverts it, and a bad pointer is
//! refused naming ferry.yaml and the field.

use std::path::Path;
use std::process::Command;

use ferry_testsupport::{TestEnv, TestNamespace};

mod common;
use common::run;

fn ferry(env: &TestEnv, args: &[&str], dir: &Path) -> (i32, String, String) {
    run(Command::new(env!("CARGO_BIN_EXE_ferry"))
        .env_remove("CI")
        .env("NO_COLOR", "1")
        .env("KUBECONFIG", env.kubeconfig())
        .args(args)
        .arg(dir))
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write file");
}

fn app_dir(root: &Path, name: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir(&dir).expect("mkdir");
    dir
}

fn deployment(image_tag: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 0\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: app, image: 'registry.invalid/app:{image_tag}'}}]\n"
    )
}

fn configmap(name: &str, color: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  color: {color}\n")
}

fn live(env: &TestEnv, ns: &str, object: &str, path: &str) -> String {
    env.kubectl(&[
        "-n",
        ns,
        "get",
        object,
        "-o",
        &format!("jsonpath={{{path}}}"),
    ])
}

/// The `-o json` report line of `kind`/`name`.
fn line<'a>(report: &'a serde_json::Value, kind: &str, name: &str) -> &'a serde_json::Value {
    report["objects"]
        .as_array()
        .and_then(|objects| {
            objects
                .iter()
                .find(|o| o["kind"] == kind && o["name"] == name)
        })
        .unwrap_or_else(|| panic!("no {kind}/{name} in {report:#}"))
}

#[tokio::test]
async fn ignored_replicas_stay_as_scaled_by_hand_across_apply_and_diff() {
    let env = TestEnv::get();
    let ns = TestNamespace::create(&env.client().await, "cli-drift-ignore").await;
    let root = tempfile::tempdir().expect("tempdir");
    let dir = app_dir(root.path(), "web");
    write(
        &dir,
        "ferry.yaml",
        "drift:\n  ignore:\n    - target: {group: apps, kind: Deployment, name: web}\n      paths: [/spec/replicas]\n",
    );
    write(&dir, "deploy.yaml", &deployment("1"));
    let (code, out, err) = ferry(&env, &["apply", "-n", &ns.name], &dir);
    assert_eq!(code, 0, "{out}{err}");
    // Created as the source says.
    assert_eq!(
        live(&env, &ns.name, "deployment/web", ".spec.replicas"),
        "0"
    );

    // An HPA, or a person, scales it.
    env.kubectl(&["-n", &ns.name, "scale", "deployment/web", "--replicas=2"]);
    // `ferry diff` does not report the ignored field...
    let (code, out, err) = ferry(&env, &["diff", "-n", &ns.name], &dir);
    assert_eq!(code, 0, "the ignored field is not a change: {out}{err}");
    // ...and `ferry apply` does not send it: the scale stays, twice over.
    for _ in 0..2 {
        let (code, out, err) = ferry(&env, &["apply", "-n", &ns.name, "-o", "json"], &dir);
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(
            live(&env, &ns.name, "deployment/web", ".spec.replicas"),
            "2",
            "{out}"
        );
    }

    // A change of another field in git is applied as usual, the scale still left alone.
    write(&dir, "deploy.yaml", &deployment("2"));
    let (code, out, err) = ferry(&env, &["diff", "-n", &ns.name], &dir);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("registry.invalid/app:2"), "{out}");
    assert!(
        !out.lines()
            .any(|l| (l.starts_with('-') || l.starts_with('+')) && l.contains("replicas")),
        "the ignored field is not shown as a change: {out}"
    );
    let (code, out, err) = ferry(&env, &["apply", "-n", &ns.name, "-o", "json"], &dir);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(line(&report, "Deployment", "web")["action"], "configured");
    assert_eq!(
        live(
            &env,
            &ns.name,
            "deployment/web",
            ".spec.template.spec.containers[0].image"
        ),
        "registry.invalid/app:2"
    );
    assert_eq!(
        live(&env, &ns.name, "deployment/web", ".spec.replicas"),
        "2"
    );
}

#[tokio::test]
async fn detect_reports_a_hand_edit_and_keeps_it_until_git_changes_the_object() {
    let env = TestEnv::get();
    let ns = TestNamespace::create(&env.client().await, "cli-drift-detect").await;
    let root = tempfile::tempdir().expect("tempdir");
    let dir = app_dir(root.path(), "shop");
    write(&dir, "ferry.yaml", "drift:\n  mode: detect\n");
    write(&dir, "settings.yaml", &configmap("settings", "blue"));
    write(&dir, "other.yaml", &configmap("other", "blue"));
    let (code, out, err) = ferry(&env, &["apply", "-n", &ns.name], &dir);
    assert_eq!(code, 0, "{out}{err}");

    env.kubectl(&[
        "-n",
        &ns.name,
        "patch",
        "configmap/settings",
        "--type=merge",
        "-p",
        r#"{"data":{"color":"red"}}"#,
    ]);
    // Reported (action, fields, exit 4) and not overwritten; the same again on the next run:
    // the drift stays visible until it is resolved.
    for _ in 0..2 {
        let (code, out, err) = ferry(&env, &["apply", "-n", &ns.name, "-o", "json"], &dir);
        assert_eq!(code, 4, "drift left in place is exit 4: {out}{err}");
        let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
        let settings = line(&report, "ConfigMap", "settings");
        assert_eq!(settings["action"], "drifted", "{report:#}");
        assert_eq!(settings["drift"], serde_json::json!(["/data/color"]));
        assert!(
            !out.contains("red"),
            "fields are named, values never: {out}"
        );
        assert_eq!(line(&report, "ConfigMap", "other")["action"], "unchanged");
        assert_eq!(
            live(&env, &ns.name, "configmap/settings", ".data.color"),
            "red"
        );
    }
    let (code, out, err) = ferry(&env, &["apply", "-n", &ns.name], &dir);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("drifted    ConfigMap") && out.contains("differs: /data/color"),
        "{out}"
    );
    assert!(out.contains("1 drifted"), "the summary counts it: {out}");

    // Another object changed in git: applied as usual, the edited one still kept.
    write(&dir, "other.yaml", &configmap("other", "green"));
    let (code, out, err) = ferry(&env, &["apply", "-n", &ns.name, "-o", "json"], &dir);
    assert_eq!(code, 4, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(line(&report, "ConfigMap", "other")["action"], "configured");
    assert_eq!(line(&report, "ConfigMap", "settings")["action"], "drifted");
    assert_eq!(
        live(&env, &ns.name, "configmap/other", ".data.color"),
        "green"
    );
    assert_eq!(
        live(&env, &ns.name, "configmap/settings", ".data.color"),
        "red"
    );

    // The edited object changed in git: it is applied as usual, so the field kubectl took is a
    // conflict as for any apply (named, exit 1)...
    write(&dir, "settings.yaml", &configmap("settings", "yellow"));
    let (code, out, err) = ferry(&env, &["apply", "-n", &ns.name, "-o", "json"], &dir);
    assert_eq!(code, 1, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    let settings = line(&report, "ConfigMap", "settings");
    assert_eq!(settings["action"], "failed", "{report:#}");
    assert_eq!(settings["conflicts"][0]["manager"], "kubectl-patch");
    assert_eq!(settings["conflicts"][0]["field"], ".data.color");
    // ...and with --force-conflicts git wins, and nothing is left drifted.
    let (code, out, err) = ferry(
        &env,
        &["apply", "-n", &ns.name, "--force-conflicts", "-o", "json"],
        &dir,
    );
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(
        line(&report, "ConfigMap", "settings")["action"],
        "configured"
    );
    assert_eq!(
        live(&env, &ns.name, "configmap/settings", ".data.color"),
        "yellow"
    );
    let (code, out, err) = ferry(&env, &["apply", "-n", &ns.name], &dir);
    assert_eq!(code, 0, "nothing drifted any more: {out}{err}");
}

#[tokio::test]
async fn correct_is_the_default_and_reverts_hand_edits() {
    let env = TestEnv::get();
    let ns = TestNamespace::create(&env.client().await, "cli-drift-correct").await;
    let root = tempfile::tempdir().expect("tempdir");
    let dir = app_dir(root.path(), "web");
    let labelled = configmap("settings", "blue").replace(
        "  name: settings\n",
        "  name: settings\n  labels: {tier: web}\n",
    );
    write(&dir, "settings.yaml", &labelled);
    let (code, out, err) = ferry(&env, &["apply", "-n", &ns.name], &dir);
    assert_eq!(code, 0, "{out}{err}");

    // A label ferry applies, removed by hand: put back by the next apply.
    env.kubectl(&["-n", &ns.name, "label", "configmap/settings", "tier-"]);
    let (code, out, err) = ferry(&env, &["apply", "-n", &ns.name, "-o", "json"], &dir);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(
        line(&report, "ConfigMap", "settings")["action"],
        "configured"
    );
    assert_eq!(
        live(
            &env,
            &ns.name,
            "configmap/settings",
            ".metadata.labels.tier"
        ),
        "web"
    );

    // A value changed by hand (kubectl now owns the field): as for any other field manager,
    // the apply names the conflict instead of silently taking the field back...
    env.kubectl(&[
        "-n",
        &ns.name,
        "patch",
        "configmap/settings",
        "--type=merge",
        "-p",
        r#"{"data":{"color":"red"}}"#,
    ]);
    let (code, out, err) = ferry(&env, &["apply", "-n", &ns.name], &dir);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("kubectl") && out.contains("--force-conflicts"),
        "{out}"
    );
    // ...and --force-conflicts reverts it.
    let (code, out, err) = ferry(
        &env,
        &["apply", "-n", &ns.name, "--force-conflicts", "-o", "json"],
        &dir,
    );
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(
        line(&report, "ConfigMap", "settings")["action"],
        "configured"
    );
    assert_eq!(
        live(&env, &ns.name, "configmap/settings", ".data.color"),
        "blue"
    );

    // `mode: correct` written out is the same as no drift block.
    write(&dir, "ferry.yaml", "drift:\n  mode: correct\n");
    env.kubectl(&["-n", &ns.name, "label", "configmap/settings", "tier-"]);
    let (code, out, err) = ferry(&env, &["apply", "-n", &ns.name], &dir);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        live(
            &env,
            &ns.name,
            "configmap/settings",
            ".metadata.labels.tier"
        ),
        "web"
    );
}

#[tokio::test]
async fn a_bad_drift_block_is_refused_naming_ferry_yaml_and_the_field() {
    let env = TestEnv::get();
    let ns = TestNamespace::create(&env.client().await, "cli-drift-invalid").await;
    let root = tempfile::tempdir().expect("tempdir");
    let dir = app_dir(root.path(), "web");
    write(&dir, "settings.yaml", &configmap("settings", "blue"));
    let cases = [
        (
            "drift:\n  ignore:\n    - target: {kind: Deployment}\n      paths: [/spec/replicas, spec/template]\n",
            "drift.ignore[0].paths[1]",
        ),
        (
            "drift:\n  ignore:\n    - paths: [/metadata/name]\n",
            "drift.ignore[0].paths[0]",
        ),
        (
            "drift:\n  ignore:\n    - paths: []\n",
            "drift.ignore[0].paths",
        ),
        // A misspelt target field would widen the rule to every object.
        (
            "drift:\n  ignore:\n    - target: {knd: Deployment}\n      paths: [/spec/replicas]\n",
            "knd",
        ),
        // The YAML parser names the place by line and column, and the accepted values.
        (
            "drift:\n  mode: ignore\n",
            "expected one of correct, detect at line 2",
        ),
    ];
    for (config, field) in cases {
        write(&dir, "ferry.yaml", config);
        for command in ["apply", "diff"] {
            let (code, out, err) = ferry(&env, &[command, "-n", &ns.name], &dir);
            assert_eq!(code, 2, "{command} with {config}: {out}{err}");
            assert!(
                err.contains("ferry.yaml") && err.contains(field),
                "{command} with {config}: the error names the file and {field}: {err}"
            );
        }
    }
    // Nothing was applied.
    let listed = env.kubectl(&["-n", &ns.name, "get", "configmaps", "-o", "name"]);
    assert!(!listed.contains("settings"), "{listed}");
}
