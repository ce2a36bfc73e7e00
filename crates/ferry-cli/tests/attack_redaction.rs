//! Attack (issue 11, item 13): values that came from SOPS decryption must never be shown, in
//! whatever object they end up. A repository author (or reviewer bot) gets `ferry diff`
//! output in a pull-request comment; before this fix only core Secret data was redacted, so a
//! SOPS-encrypted ConfigMap, Deployment env value, custom resource field or helm value landed
//! in the comment in clear.
//!
//! Everything here is real: `age-keygen` and `sops` from the testenv encrypt the files, the
//! `ferry` binary renders (real `helm`), diffs and applies against the real API server, and the
//! API server's own validation errors (which echo the offending value) are the error path.

use std::path::Path;
use std::process::{Command, Output};

use ferry_testsupport::{TestEnv, TestNamespace};
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};

/// The plaintexts. Long enough to be matched anywhere, and unlike anything else in the output.
const DB_PASSWORD: &str = "Pg-Passw0rd-7f3a9c";
const DB_PASSWORD_ROTATED: &str = "Pg-Rotated-2b8e41";
const API_TOKEN: &str = "tok_live_91f0c2d4e6";
const WIDGET_TOKEN: &str = "wdg-s3cret-55aa77";
const HELM_KEY: &str = "helm-api-key-c0ffee42";
const BAD_MODE: &str = "Mode-Secret-0x1d2e";
const BAD_PULL_POLICY: &str = "PullPolicy-Secret-9q8w";
/// A multi-line value (a PEM-like key): each line is secret on its own.
const PEM_LINE_1: &str = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC";
const PEM_LINE_2: &str = "BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj";

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every form of every secret that must never be printed.
fn forbidden() -> Vec<String> {
    let mut out = Vec::new();
    for secret in [
        DB_PASSWORD,
        DB_PASSWORD_ROTATED,
        API_TOKEN,
        WIDGET_TOKEN,
        HELM_KEY,
        BAD_MODE,
        BAD_PULL_POLICY,
        PEM_LINE_1,
        PEM_LINE_2,
    ] {
        out.push(secret.to_string());
        out.push(base64(secret.as_bytes()));
    }
    out
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in forbidden() {
        assert!(
            !text.contains(&secret),
            "{what} shows the decrypted value {secret:?}:\n{text}"
        );
    }
}

struct Sops {
    env: TestEnv,
    key_file: std::path::PathBuf,
    recipient: String,
}

impl Sops {
    fn new(env: &TestEnv, dir: &Path) -> Self {
        let key_file = dir.join("age.key");
        let out = Command::new(env.tool("age-keygen"))
            .arg("-o")
            .arg(&key_file)
            .output()
            .expect("age-keygen");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(env.tool("age-keygen"))
            .arg("-y")
            .arg(&key_file)
            .output()
            .expect("age-keygen -y");
        let recipient = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(recipient.starts_with("age1"), "{recipient}");
        Self {
            env: env.clone(),
            key_file,
            recipient,
        }
    }

    /// Encrypt `plain` with the real `sops`, only the keys matching `regex`, into `path`.
    fn encrypt(&self, path: &Path, plain: &str, regex: &str) {
        let clear = path.with_extension("clear.yaml");
        std::fs::write(&clear, plain).expect("write plaintext");
        let out = Command::new(self.env.tool("sops"))
            .env("SOPS_AGE_KEY_FILE", &self.key_file)
            .env_remove("SOPS_AGE_KEY")
            .args(["--encrypt", "--age", &self.recipient])
            .args(["--encrypted-regex", regex])
            .args(["--input-type", "yaml", "--output-type", "yaml"])
            .arg(&clear)
            .output()
            .expect("sops");
        assert!(
            out.status.success(),
            "sops --encrypt: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_file(&clear).expect("remove plaintext");
        let encrypted = String::from_utf8(out.stdout).expect("utf8");
        for secret in forbidden() {
            assert!(!encrypted.contains(&secret), "sops left {secret} in clear");
        }
        std::fs::write(path, encrypted).expect("write encrypted");
    }
}

fn ferry(env: &TestEnv, sops: &Sops) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    // The key the way a CI job passes it to ferry (and to sops).
    cmd.env_remove("CI")
        .env_remove("SOPS_AGE_KEY")
        .env("SOPS_AGE_KEY_FILE", &sops.key_file)
        .env("NO_COLOR", "1")
        .env("PATH", env.path_env())
        .env("KUBECONFIG", env.kubeconfig())
        // Every log line ferry writes goes to stderr, which the assertions read too.
        .env("RUST_LOG", "debug");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    run_with_stdin(cmd, None)
}

fn run_with_stdin(cmd: &mut Command, stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write as _;
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run ferry");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("ferry output");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

const GROUP: &str = "redact.ferry.test";

/// A namespaced custom resource with a free `token` and an enum `mode` (whose validation error
/// echoes the value).
fn widget_crd() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{GROUP}")},
        "spec": {
            "group": GROUP,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {
                            "token": {"type": "string"},
                            "mode": {"type": "string", "enum": ["fast", "safe"]},
                            "size": {"type": "integer"}
                        }
                    }}
                }}
            }]
        }
    })
}

fn configmap(password: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: db\ndata:\n  url: postgres://app:{password}@db:5432/app\n  password: {password}\n  tls.key: |\n    -----BEGIN PRIVATE KEY-----\n    {PEM_LINE_1}\n    {PEM_LINE_2}\n    -----END PRIVATE KEY-----\n"
    )
}

fn deployment(name: &str, pull_policy: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: main
        image: registry.invalid/web:1.0
        imagePullPolicy: {pull_policy}
        env:
        - name: API_TOKEN
          value: {API_TOKEN}
        - name: LOG_LEVEL
          value: info
"#
    )
}

fn widget(token: &str, mode: &str) -> String {
    format!(
        "apiVersion: {GROUP}/v1\nkind: Widget\nmetadata:\n  name: gadget\nspec:\n  token: {token}\n  mode: {mode}\n  size: 3\n"
    )
}

/// A local chart whose SOPS-encrypted values file feeds a ConfigMap, a Deployment env value
/// and (base64-encoded by the template) a Secret.
fn write_chart(dir: &Path, sops: &Sops) {
    let chart = dir.join("chart");
    std::fs::create_dir_all(chart.join("templates")).expect("mkdir");
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: keyed\nversion: 0.1.0\n",
    )
    .expect("Chart.yaml");
    std::fs::write(
        chart.join("templates/objects.yaml"),
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: helm-settings
data:
  endpoint: "https://api.example/?key={{ .Values.apiKey }}"
---
apiVersion: v1
kind: Secret
metadata:
  name: helm-secret
data:
  key: {{ .Values.apiKey | b64enc }}
---
apiVersion: {{ .Values.group }}/v1
kind: Widget
metadata:
  name: helm-widget
spec:
  token: {{ .Values.apiKey | quote }}
  size: 1
"#,
    )
    .expect("template");
    std::fs::write(
        dir.join("ferry.yaml"),
        format!(
            "helm:\n  chart:\n    path: chart\n  releaseName: keyed\n  valuesFiles: [secrets.enc.yaml]\n  values: {{group: {GROUP}}}\n"
        ),
    )
    .expect("ferry.yaml");
    sops.encrypt(
        &dir.join("secrets.enc.yaml"),
        &format!("apiKey: {HELM_KEY}\n"),
        "^apiKey$",
    );
}

async fn get(
    client: &kube::Client,
    ns: &str,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    name: &str,
) -> serde_json::Value {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let obj = api
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("{kind}/{name}: {e}"));
    serde_json::to_value(obj).expect("json")
}

#[tokio::test]
async fn sops_values_in_any_object_never_reach_diff_apply_or_errors() {
    let env = TestEnv::get();
    let client = env.client().await;
    ferry_testsupport::install_crds(&client, &[widget_crd()], "ferry-redaction-test").await;
    let ns = TestNamespace::create(&client, "redact").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sops = Sops::new(&env, dir.path());

    // The plain app: a SOPS ConfigMap (with a multi-line value), a Deployment with a SOPS env
    // value, a custom resource with a SOPS field.
    let app = dir.path().join("app");
    std::fs::create_dir(&app).expect("mkdir");
    sops.encrypt(&app.join("cm.yaml"), &configmap(DB_PASSWORD), "^data$");
    sops.encrypt(
        &app.join("deploy.yaml"),
        &deployment("web", "IfNotPresent"),
        "^value$",
    );
    sops.encrypt(
        &app.join("widget.yaml"),
        &widget(WIDGET_TOKEN, "fast"),
        "^token$",
    );

    // The helm app: SOPS values rendered into a ConfigMap, a Secret (b64enc) and a CR.
    let chart_app = dir.path().join("charted");
    std::fs::create_dir(&chart_app).expect("mkdir");
    write_chart(&chart_app, &sops);

    // The kustomize app: the SOPS file is a kustomize resource (decrypted after kustomize ran,
    // from the verified source), renamed by a namePrefix.
    let kust_app = dir.path().join("kustomized");
    std::fs::create_dir(&kust_app).expect("mkdir");
    sops.encrypt(
        &kust_app.join("widget.yaml"),
        &widget(WIDGET_TOKEN, "safe"),
        "^token$",
    );
    std::fs::write(
        kust_app.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamePrefix: k-\nresources: [widget.yaml]\n",
    )
    .expect("kustomization");

    // 1. diff, in every output format, before anything exists (every object is a create).
    for app_dir in [&app, &chart_app, &kust_app] {
        for format in [None, Some("markdown"), Some("json")] {
            let mut cmd = ferry(&env, &sops);
            cmd.args(["diff", "-n", &ns.name]);
            if let Some(format) = format {
                cmd.args(["-o", format]);
            }
            let (code, out, err) = run(cmd.arg(app_dir));
            assert_eq!(
                code,
                1,
                "diff {format:?} of {}: {out}{err}",
                app_dir.display()
            );
            assert_no_secret(&format!("ferry diff -o {format:?}"), &format!("{out}{err}"));
            assert!(
                out.contains("[REDACTED]"),
                "diff shows nothing was hidden: {out}"
            );
        }
    }
    // SOPS documents on stdin (`ferry diff -`).
    let piped = std::fs::read_to_string(app.join("cm.yaml")).expect("read");
    for format in ["human", "markdown", "json"] {
        let (code, out, err) = run_with_stdin(
            ferry(&env, &sops).args(["diff", "-n", &ns.name, "--app", "piped", "-o", format, "-"]),
            Some(&piped),
        );
        assert_eq!(code, 1, "diff of stdin: {out}{err}");
        assert_no_secret("ferry diff - (stdin)", &format!("{out}{err}"));
        assert!(out.contains("[REDACTED]"), "{out}");
    }

    // What is not secret stays readable.
    let (_, out, _) = run(ferry(&env, &sops)
        .args(["diff", "-n", &ns.name, "-o", "markdown"])
        .arg(&app));
    assert!(
        out.contains("LOG_LEVEL") && out.contains("registry.invalid/web:1.0"),
        "{out}"
    );
    // A decrypted value inside a longer, rendered string: only the value is hidden.
    let (_, out, _) = run(ferry(&env, &sops)
        .args(["diff", "-n", &ns.name, "-o", "markdown"])
        .arg(&chart_app));
    assert!(out.contains("https://api.example/?key=[REDACTED]"), "{out}");

    // 2. apply: the cluster receives the real values; the output shows none.
    for app_dir in [&app, &chart_app] {
        let (code, out, err) = run(ferry(&env, &sops)
            .args(["apply", "-n", &ns.name, "-o", "json"])
            .arg(app_dir));
        assert_eq!(code, 0, "apply {}: {out}{err}", app_dir.display());
        assert_no_secret("ferry apply", &format!("{out}{err}"));
    }
    let cm = get(&client, &ns.name, "", "v1", "ConfigMap", "configmaps", "db").await;
    assert_eq!(cm["data"]["password"], DB_PASSWORD);
    assert!(
        cm["data"]["tls.key"]
            .as_str()
            .is_some_and(|k| k.contains(PEM_LINE_2))
    );
    let deploy = get(
        &client,
        &ns.name,
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "web",
    )
    .await;
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        API_TOKEN
    );
    let widget_obj = get(
        &client, &ns.name, GROUP, "v1", "Widget", "widgets", "gadget",
    )
    .await;
    assert_eq!(widget_obj["spec"]["token"], WIDGET_TOKEN);
    let helm_cm = get(
        &client,
        &ns.name,
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "helm-settings",
    )
    .await;
    assert!(
        helm_cm["data"]["endpoint"]
            .as_str()
            .is_some_and(|e| e.ends_with(HELM_KEY))
    );
    let helm_widget = get(
        &client,
        &ns.name,
        GROUP,
        "v1",
        "Widget",
        "widgets",
        "helm-widget",
    )
    .await;
    assert_eq!(helm_widget["spec"]["token"], HELM_KEY);

    // 3. Nothing changed: diff is clean (redaction does not invent changes).
    let (code, out, err) = run(ferry(&env, &sops).args(["diff", "-n", &ns.name]).arg(&app));
    assert_eq!(code, 0, "no changes expected: {out}{err}");

    // 4. A rotated password: the diff shows a change, but neither the new value nor the old
    // one (the live object still holds it, and nothing registered it as a secret).
    sops.encrypt(
        &app.join("cm.yaml"),
        &configmap(DB_PASSWORD_ROTATED),
        "^data$",
    );
    for format in ["markdown", "json", "human"] {
        let (code, out, err) = run(ferry(&env, &sops)
            .args(["diff", "-n", &ns.name, "-o", format])
            .arg(&app));
        assert_eq!(code, 1, "rotation is a change: {out}{err}");
        assert_no_secret(
            &format!("ferry diff -o {format} after rotation"),
            &format!("{out}{err}"),
        );
        assert!(
            out.contains("/db") || out.contains("\"name\": \"db\""),
            "{out}"
        );
    }

    // 5. The error path: objects the API server rejects while echoing the decrypted value
    // (an enum field of the CR, a Deployment's imagePullPolicy).
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).expect("mkdir");
    sops.encrypt(
        &bad.join("widget.yaml"),
        &widget(WIDGET_TOKEN, BAD_MODE),
        "^(token|mode)$",
    );
    sops.encrypt(
        &bad.join("deploy.yaml"),
        &deployment("broken", BAD_PULL_POLICY),
        "^(value|imagePullPolicy)$",
    );
    for format in ["human", "json", "markdown"] {
        let (code, out, err) = run(ferry(&env, &sops)
            .args(["diff", "-n", &ns.name, "--app", "bad", "-o", format])
            .arg(&bad));
        assert_eq!(code, 2, "the dry run must fail: {out}{err}");
        assert_no_secret("ferry diff error", &format!("{out}{err}"));
        assert!(
            err.contains("[REDACTED]"),
            "the error names what was hidden: {err}"
        );
    }
    for format in ["human", "json"] {
        let (code, out, err) = run(ferry(&env, &sops)
            .args(["apply", "-n", &ns.name, "--app", "bad", "-o", format])
            .arg(&bad));
        assert_ne!(code, 0, "apply must fail: {out}{err}");
        assert_no_secret("ferry apply error", &format!("{out}{err}"));
        assert!(
            format!("{out}{err}").contains("[REDACTED]"),
            "the API server's message is kept, with the value hidden: {out}{err}"
        );
    }
}
