//! `ferry render` with the rendering flags (shared with apply/diff) against the real helm,
//! kustomize, sops and age from the testenv: kustomize and helm output on stdout, values,
//! --set, --var, SOPS values via --age-key-file, and clear errors.

use std::path::Path;
use std::process::{Command, Output};

use ferry_testsupport::TestEnv;

fn ferry(env: &TestEnv, cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(cwd)
        .env("PATH", env.path_env())
        .env_remove("SOPS_AGE_KEY")
        .env_remove("SOPS_AGE_KEY_FILE")
        .env_remove("FERRY_HELM")
        .env_remove("FERRY_KUSTOMIZE")
        .output()
        .expect("run ferry")
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn objects(output: &Output) -> Vec<serde_json::Value> {
    assert!(
        output.status.success(),
        "ferry failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json list")
}

fn named<'a>(objects: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {objects:?}"))
}

#[test]
fn render_prints_kustomize_output_with_vars() {
    let env = TestEnv::get();
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "app/kustomization.yaml",
        "resources: [cm.yaml]\nnameSuffix: -prod\n",
    );
    write(
        dir.path(),
        "app/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {region: \"${REGION}\"}\n",
    );
    let out = ferry(
        &env,
        dir.path(),
        &["render", "app", "--var", "REGION=eu-west-1", "-o", "json"],
    );
    let objects = objects(&out);
    assert_eq!(
        named(&objects, "ConfigMap", "c-prod")["data"]["region"],
        "eu-west-1"
    );

    // YAML output carries the origin as a comment.
    let out = ferry(&env, dir.path(), &["render", "app", "--var", "REGION=x"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kustomize build app"), "{text}");
    assert!(text.contains("name: c-prod"), "{text}");

    // A bad --var is a usage error naming the flag value.
    let out = ferry(&env, dir.path(), &["render", "app", "--var", "1X=y"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1X"));
}

#[test]
fn render_prints_helm_output_with_values_set_and_sops_values() {
    let env = TestEnv::get();
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "chart/Chart.yaml",
        "apiVersion: v2\nname: web\nversion: 1.0.0\n",
    );
    write(
        dir.path(),
        "chart/values.yaml",
        "replicas: 1\ntoken: none\nenv: dev\n",
    );
    write(
        dir.path(),
        "chart/templates/all.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '{{ .Release.Name }}-cfg'}\ndata: {replicas: '{{ .Values.replicas }}', env: '{{ .Values.env }}'}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: '{{ .Release.Name }}-tok'}\nstringData: {token: '{{ .Values.token }}'}\n",
    );
    write(dir.path(), "prod.yaml", "env: prod\n");
    write(dir.path(), "secret.yaml", "token: tok-from-sops-123\n");
    // Real age key and real sops encryption.
    let key = dir.path().join("age.key");
    let status = Command::new(env.tool("age-keygen"))
        .arg("-o")
        .arg(&key)
        .output()
        .expect("age-keygen");
    assert!(status.status.success());
    let recipient = Command::new(env.tool("age-keygen"))
        .arg("-y")
        .arg(&key)
        .output()
        .expect("age-keygen -y");
    let recipient = String::from_utf8_lossy(&recipient.stdout)
        .trim()
        .to_string();
    let enc = Command::new(env.tool("sops"))
        .args([
            "--encrypt",
            "--age",
            &recipient,
            "--in-place",
            "secret.yaml",
        ])
        .current_dir(dir.path())
        .output()
        .expect("sops");
    assert!(
        enc.status.success(),
        "{}",
        String::from_utf8_lossy(&enc.stderr)
    );

    let out = ferry(
        &env,
        dir.path(),
        &[
            "render",
            "chart",
            "--release-name",
            "shop",
            "--values",
            "prod.yaml",
            "--values",
            "secret.yaml",
            "--age-key-file",
            "age.key",
            "--set",
            "replicas=4",
            "-o",
            "json",
        ],
    );
    let objects = objects(&out);
    let cfg = named(&objects, "ConfigMap", "shop-cfg");
    assert_eq!(cfg["data"]["replicas"], "4");
    assert_eq!(cfg["data"]["env"], "prod");
    assert_eq!(
        named(&objects, "Secret", "shop-tok")["stringData"]["token"],
        "tok-from-sops-123"
    );

    // Without the key: an error naming the values file, exit code 2, no plaintext.
    let out = ferry(
        &env,
        dir.path(),
        &["render", "chart", "--values", "secret.yaml"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("secret.yaml"), "{stderr}");
    assert!(!stderr.contains("tok-from-sops-123"), "{stderr}");

    // A missing helm binary is a clear error.
    let out = ferry(
        &env,
        dir.path(),
        &["render", "chart", "--helm", "/nonexistent/helm"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/helm"), "{stderr}");
}
